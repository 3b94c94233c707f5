"""--train-from on real architectures: cut tensors, -N, the op table against onnxruntime, teacher tasks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import graphfix as gf
from graphfix.data import Dataset, feature_model, model_scores
from graphfix.errors import GraphfixError
from graphfix.metrics import mean_average_precision
from graphfix.train import train_head
from graphfix.train.finetune import resolve_train_from, segment_nodes, train_from_candidates

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "fixtures/mxnet/manifest.json").read_text())
CORPUS = [
    *[f"tests/zoo/{p.name}" for p in sorted((ROOT / "tests/zoo").glob("*.onnx"))],
    *[f"fixtures/mxnet/{name}/{name}-symbol.json" for name in
      ("resnet18_v1", "resnet50_v2", "densenet121", "inceptionv3", "inception_bn_block", "mobilenetv2_0_25", "vgg11_bn")],
    *[f"fixtures/caffe/{name}.prototxt" for name in ("googlenet_block", "resnet_block", "mobilenet_block", "squeezenet_v1.1")],
]


def _load(rel: str) -> tuple[gf.Model, list[int]]:
    path = ROOT / rel
    kw = {"weights": str(path).replace(".prototxt", ".caffemodel")} if rel.endswith(".prototxt") else {}
    model = gf.swap_head(gf.load(str(path), **kw), labels=3, seed=0)
    shape = [d if isinstance(d, int) else 32 for d in list(model.ir.graph.inputs[0].shape)[1:]]
    if rel.startswith("fixtures/mxnet"):
        shape = MANIFEST[rel.split("/")[2]]["input_shape"][1:]
    return model, shape


@pytest.mark.parametrize("rel", CORPUS)
def test_last_two_blocks_rebuild_equals_onnxruntime(rel):
    from graphfix.data.features import find_head_gemm, find_value
    from graphfix.train.finetune import _folded_shapes, _Segment

    model, shape = _load(rel)
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    ref = next(iter(feature_model(model).run(x).values())).reshape(3, -1)
    blocks = sum(1 for c in train_from_candidates(model, limit=None) if c["block"])
    for n in range(1, min(2, blocks) + 1):
        tensor = resolve_train_from(model, f"-{n}")
        nodes = segment_nodes(model, tensor)
        start = find_value(model, tensor)
        seg = _Segment(torch, model, nodes, start, find_head_gemm(model).inputs[0], _folded_shapes(model, nodes, start, x))
        a = torch.from_numpy(next(iter(feature_model(model, tensor).run(x).values())))
        with torch.no_grad():
            ours = seg(a).reshape(3, -1).numpy()
        assert seg.params, (rel, tensor)
        np.testing.assert_allclose(ours, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=0)


def test_cuts_skip_residual_inner_tensors_and_number_the_blocks():
    model, _ = _load("fixtures/mxnet/resnet18_v1/resnet18_v1-symbol.json")
    cands = train_from_candidates(model, limit=None)
    blocks = [c for c in cands if c["block"]]
    assert [c["block"] for c in blocks] == list(range(1, len(blocks) + 1)) and len(blocks) == 8
    last = blocks[0]
    assert resolve_train_from(model, "-1") == last["tensor"]
    assert last["parameters"] == sum(int(np.prod(model.ir.graph.initializers[n].shape)) for n in last["trains"])
    assert last["activation_bytes"] is None  # symbolic spatial input: no static size to report
    caffe, _ = _load("fixtures/caffe/resnet_block.prototxt")
    first = train_from_candidates(caffe, limit=1)[0]
    assert first["activation_bytes"] == 4 * first["activation_values"] > 0
    inner = [n.outputs[0].name for n in segment_nodes(model, last["tensor"]) if n.op_type == "Relu"][0]
    with pytest.raises(GraphfixError, match=f"{inner!r} is not a cut: the head also reads the backbone through a path "
                                            f"that bypasses it"):
        segment_nodes(model, inner)  # inside the last residual block: the skip bypasses it
    with pytest.raises(GraphfixError, match=r"--train-from -9: the model has 8 blocks with trainable weights before the head"):
        resolve_train_from(model, "-9")


def _teacher_labels(model: gf.Model, tensor: str, x: np.ndarray, seed: int = 7) -> np.ndarray:
    """Labels from a random network on the activations at the cut: the same layers after `tensor`
    with re-drawn weights, then a random readout (a head on the frozen layers cannot reach it)."""
    rng = np.random.default_rng(seed)
    teacher = model.copy()
    names = train_from_candidates(model, limit=None)
    trains = next(c["trains"] for c in names if c["tensor"] == tensor)
    for name in trains:
        init = teacher.ir.graph.initializers[name]
        arr = init.const_value.numpy()
        if arr.ndim > 1:
            noise = rng.standard_normal(arr.shape).astype(np.float32) * float(arr.std() or 0.1)
            init.const_value = gf_tensor(arr + noise, name)
    f = next(iter(feature_model(teacher).run(x).values())).reshape(len(x), -1)
    z = (f - f.mean(0)) @ rng.standard_normal((f.shape[1], 3))
    return (z > np.quantile(z, 0.6, axis=0)).astype(np.uint8)


def gf_tensor(arr: np.ndarray, name: str):
    import onnx_ir as ir

    return ir.tensor(arr.astype(np.float32), name=name)


@pytest.mark.slow
@pytest.mark.parametrize("rel", ["tests/zoo/vit_tiny.dyn18.onnx"])
def test_teacher_task_last_block_beats_head_only_and_keeps_the_backbone(rel):
    model, shape = _load(rel)
    tensor = resolve_train_from(model, "-1")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, *shape)).astype(np.float32)
    y = _teacher_labels(model, tensor, x)
    names = ["a", "b", "c"]
    train, val, test = (Dataset.from_arrays(x[s], y[s], names) for s in (slice(0, 400), slice(400, 500), slice(500, 700)))
    head_only, _ = train_head(model, train, val, cache=False)
    tuned, hist = train_head(model, train, val, train_from="-1", epochs=12, lr=3e-3, cache=False)
    assert hist["train_from"] == tensor and hist["val_mAP"] > hist["head_only_val_mAP"]
    s_head, yt = model_scores(head_only, test)
    s_tuned, _ = model_scores(tuned, test)
    assert mean_average_precision(yt, s_tuned) > mean_average_precision(yt, s_head)
    before = {k: v.const_value.numpy().tobytes() for k, v in model.ir.graph.initializers.items()}
    after = {k: v.const_value.numpy().tobytes() for k, v in tuned.ir.graph.initializers.items()}
    cut_inputs = {v.name for n in segment_nodes(model, tensor) for v in n.inputs if v is not None}
    for name, data in before.items():
        if name not in cut_inputs and not name.startswith("graphfix_head"):
            assert after[name] == data, name  # everything before the cut is bit-identical
    assert any(after.get(n) != before[n] for n in hist["trained_initializers"] if n in after) or \
        any(k.endswith(".finetuned") for k in after)


def test_reported_validation_map_is_what_the_written_model_scores():
    """squeezenet_v1.1's random features barely vary (sd ~6e-5), so the head's weights are ~1e5 and
    its logits large: the validation mAP that picks the epoch must be the written model's own
    (float32 probabilities, saturated and tied at 0 and 1 as onnxruntime gives them), not a float64
    figure that no deployed model reproduces."""
    model, shape = _load("fixtures/caffe/squeezenet_v1.1.prototxt")
    tensor = resolve_train_from(model, "-1")
    x = np.random.default_rng(0).standard_normal((700, *shape)).astype(np.float32)
    y = _teacher_labels(model, tensor, x)
    train, val = (Dataset.from_arrays(x[s], y[s], ["a", "b", "c"]) for s in (slice(0, 400), slice(400, 500)))
    tuned, hist = train_head(model, train, val, train_from="-1", cache=False)
    scores, yv = model_scores(tuned, val)
    assert abs(mean_average_precision(yv, scores) - hist["val_mAP"]) < 1e-5, (hist["val_mAP"], hist["epoch_val_mAP"])
