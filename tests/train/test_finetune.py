"""train-head --train-from: fine-tuning the layers between a tensor and the head."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from graphfix.data import Dataset, model_scores
from graphfix.train import train_head
from graphfix.train.finetune import segment_nodes
from graphfix.metrics import mean_average_precision
from graphfix.convert._onnx import make_model
from graphfix.errors import GraphfixError
from graphfix.model import Model

torch = pytest.importorskip("torch")


def two_layer_model(seed: int = 0, extra: list | None = None, skip: bool = False) -> Model:
    """data -> Conv 3x3 -> Relu (r1) -> Conv 1x1 -> BN -> Relu -> MaxPool -> GAP -> Flatten -> Gemm -> Sigmoid."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    inits = {
        "c1.w": rng.standard_normal((6, 2, 3, 3)).astype(f32) * 0.5, "c1.b": rng.standard_normal(6).astype(f32) * 0.1,
        "c2.w": rng.standard_normal((8, 6, 1, 1)).astype(f32) * 0.5, "c2.b": np.zeros(8, f32),
        "bn.s": np.ones(8, f32), "bn.b": np.zeros(8, f32), "bn.m": rng.standard_normal(8).astype(f32) * 0.1,
        "bn.v": np.ones(8, f32) * 1.5,
        "graphfix_head.weight": rng.standard_normal((3, 8)).astype(f32) * 0.01, "graphfix_head.bias": np.zeros(3, f32),
    }
    c2_in = "r1"
    nodes = [
        oh.make_node("Conv", ["data", "c1.w", "c1.b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    ]
    if skip:  # a branch that reads the backbone before the cut
        nodes.append(oh.make_node("Add", ["r1", "c1"], ["mix"], name="mix"))
        c2_in = "mix"
    nodes += [
        oh.make_node("Conv", [c2_in, "c2.w", "c2.b"], ["c2"], name="conv2"),
        oh.make_node("BatchNormalization", ["c2", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"], name="bn"),
        oh.make_node("Relu", ["bn"], ["r2"], name="relu2"),
        *(extra or []),
        oh.make_node("MaxPool", ["r2" if not extra else "x2"], ["mp"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        oh.make_node("GlobalAveragePool", ["mp"], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["features"], name="flatten"),
        oh.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"], name="graphfix_head", transB=1),
        oh.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    graph = oh.make_graph(
        nodes, "two", [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", 2, 6, 6])],
        [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 3]),
         oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 3])],
        [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    proto = make_model(graph)
    onnx.helper.set_model_props(proto, {"graphfix.labels": json.dumps(["a", "b", "c"])})
    return Model.from_proto(proto)


def _data(model: Model, n: int, seed: int):
    """Labels from a teacher that shares conv1 but has its own second conv: a head on the frozen
    second conv cannot reach it; fine-tuning the second conv can."""
    from graphfix.data import feature_model

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, 6, 6)).astype(np.float32)
    r1 = feature_model(model, "r1").run(x)["r1"]
    teacher = np.random.default_rng(99)
    w2 = teacher.standard_normal((8, 6)) * 0.7
    h = np.maximum(np.einsum("oc,nchw->nohw", w2, r1), 0.0)
    pooled = h.reshape(n, 8, 3, 2, 3, 2).max(axis=(3, 5)).mean(axis=(2, 3))
    z = (pooled - pooled.mean(0)) @ teacher.standard_normal((8, 3))
    y = (z + 0.2 * rng.standard_normal(z.shape) > np.quantile(z, 0.6, axis=0)).astype(np.uint8)
    return Dataset.from_arrays(x, y, ["a", "b", "c"])


def test_finetune_beats_head_only_and_keeps_the_backbone():
    model = two_layer_model()
    train, test = _data(model, 600, 1), _data(model, 400, 2)
    head_only, _ = train_head(model, train)
    tuned, hist = train_head(model, train, train_from="r1", epochs=15, lr=3e-3)
    assert hist["train_from"] == "r1" and hist["trained_initializers"] == ["bn.b", "bn.s", "c2.b", "c2.w"]
    assert hist["val_mAP"] >= hist["head_only_val_mAP"]
    s_head, y = model_scores(head_only, test)
    s_tuned, _ = model_scores(tuned, test)
    assert mean_average_precision(y, s_tuned) > mean_average_precision(y, s_head) + 0.01
    before = {k: v.const_value.numpy() for k, v in model.ir.graph.initializers.items()}
    after = {k: v.const_value.numpy() for k, v in tuned.ir.graph.initializers.items()}
    for name in ("c1.w", "c1.b", "bn.m", "bn.v"):
        assert after[name].tobytes() == before[name].tobytes()
    assert not np.array_equal(after["c2.w"], before["c2.w"])
    assert tuned.metadata["training"]["train_from"] == "r1"
    again, _ = train_head(model, train, train_from="r1", epochs=15, lr=3e-3)
    assert again.to_bytes() == tuned.to_bytes()


def test_segment_refusals():
    model = two_layer_model()
    with pytest.raises(GraphfixError, match="nothing to fine-tune"):
        segment_nodes(model, "features")
    with pytest.raises(GraphfixError, match="graph input"):
        segment_nodes(model, "data")
    with pytest.raises(GraphfixError, match="not found"):
        segment_nodes(model, "nope")
    odd = two_layer_model(extra=[oh.make_node("Hardmax", ["r2"], ["x2"], name="hard")])
    with pytest.raises(GraphfixError, match=r"unsupported op between 'r1' and the head: hard \(Hardmax\)"):
        segment_nodes(odd, "r1")
    skipped = two_layer_model(skip=True)
    with pytest.raises(GraphfixError, match=r"'r1' is not a cut: the head also reads the backbone through a path "
                       r"that bypasses it \(from 'data'\)"):
        segment_nodes(skipped, "r1")
    assert [n.name for n in segment_nodes(skipped, "c1")] == ["relu1", "mix", "conv2", "bn", "relu2", "pool", "gap", "flatten"]
