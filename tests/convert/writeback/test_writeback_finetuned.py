"""Write-back of fine-tuned backbones (`train-head --train-from`, `--to mxnet|caffe`): the trained
weights land in the source's params/blobs, the written files equal the ONNX model within 1e-5 in
graphfix, real MXNet 1.9.1 and OpenCV DNN, every param/blob before the cut keeps its bytes, and a
changed initializer with no exact place is refused with one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import graphfix as gf
from graphfix.convert.caffe._caffemodel import read_caffemodel
from graphfix.convert.mxnet._params import read_params, write_params
from graphfix.convert.writeback import write_back
from graphfix.data import Dataset, feature_model
from graphfix.train.finetune import resolve_train_from, segment_nodes, train_from_candidates
from tests.convert.caffe.caffe_helpers import caffe_writer
from tests.convert.writeback.helpers import (
    MX_MODELS, caffe_paths, mx_paths, mx_shape, mxnet_job, require_mxnet, run_mxnet_check,
)


# ----- helpers ----------------------------------------------------------------------------------
def _input_shape(model: gf.Model, name: str | None = None) -> list[int]:
    if name in MX_MODELS:
        return list(MX_MODELS[name]["input_shape"][1:])
    return [int(d) for d in model.io_info()["inputs"][0]["shape"][1:]]


def _set(model: gf.Model, name: str, arr: np.ndarray) -> None:
    model.ir.graph.initializers[name].const_value = ir.tensor(np.array(arr, np.float32, order="C"), name=name)


def _teacher_data(model: gf.Model, n: int, shape: list[int], seed: int = 0) -> Dataset:
    """Labels from the layers after the last cut with re-drawn weights and a random readout (a
    head on the frozen backbone cannot reach them; fine-tuning moves towards them)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    teacher = model.copy()
    cut = resolve_train_from(model, "-1")
    for name in next(c["trains"] for c in train_from_candidates(model, limit=None) if c["tensor"] == cut):
        arr = teacher.ir.graph.initializers[name].const_value.numpy()
        if arr.ndim > 1:
            _set(teacher, name, arr + rng.standard_normal(arr.shape) * float(arr.std() or 0.1))
    f = next(iter(feature_model(teacher).run(x).values())).reshape(n, -1)
    z = (f - f.mean(0)) @ rng.standard_normal((f.shape[1], 3))
    return Dataset.from_arrays(x, (z > np.quantile(z, 0.6, axis=0)).astype(np.uint8), ["a", "b", "c"])


def _perturbed(model: gf.Model, spec: str, stats: bool = True, seed: int = 0) -> tuple[gf.Model, set[str]]:
    """`model` with every initializer fine-tuning trains after cut `spec` changed, as
    `train-head --train-from` leaves it (and, with `stats`, the BatchNorm statistics there too,
    as `--bn-stats update` does); returns the changed names."""
    rng = np.random.default_rng(seed)
    tensor = resolve_train_from(model, spec)
    names = set(next(c["trains"] for c in train_from_candidates(model, limit=None) if c["tensor"] == tensor))
    if stats:
        names |= {v.name for n in segment_nodes(model, tensor) if n.op_type == "BatchNormalization"
                  for v in n.inputs[3:5] if v.name in model.ir.graph.initializers}
    new = model.copy()
    for name in sorted(names):
        arr = model.ir.graph.initializers[name].const_value.numpy()
        if name.endswith(("var", "moving_var")):
            _set(new, name, arr * rng.uniform(0.7, 1.3, arr.shape))
        else:
            _set(new, name, arr * (1 + 0.2 * rng.standard_normal(arr.shape)) + 0.02 * rng.standard_normal(arr.shape))
    new.path = model.path
    return new, names


def _mxnet_forward(written: dict[str, tuple[gf.Model, dict, Path]], tmp_path: Path) -> dict[str, float]:
    """Max abs diff of real MXNet 1.x on the written files vs the ONNX model, per job."""
    require_mxnet()
    jobs, refs = [], {}
    for name, (model, summary, prefix) in written.items():
        x = np.random.default_rng(3).standard_normal((3, *_input_shape(model, name.split(":")[0]))).astype(np.float32)
        np.savez(tmp_path / f"{name}.npz", x=x)
        refs[name] = model.run({"data": x})["probabilities"]
        jobs.append(mxnet_job(name, prefix, tmp_path / f"{name}.npz", summary["io"]))
    fwd = run_mxnet_check("forward", jobs, tmp_path)
    return {name: float(np.max(np.abs(fwd[name] - want))) for name, want in refs.items()}


def _opencv_diff(model: gf.Model, summary: dict, prefix: Path) -> float:
    cv2 = pytest.importorskip("cv2")
    x = np.random.default_rng(3).standard_normal((2, *_input_shape(model))).astype(np.float32)
    want = model.run({"data": x})["probabilities"]
    net = cv2.dnn.readNetFromCaffe(f"{prefix}-deploy.prototxt", f"{prefix}.caffemodel")
    net.setInput(x)
    return float(np.max(np.abs(net.forward(summary["io"]["probabilities"]).reshape(want.shape) - want)))


def _mx_keys_after_cut(model: gf.Model, tensor: str, symbol: Path) -> set[str]:
    """Params (short names) of the MXNet nodes after the cut: only these may change (the ONNX
    nodes of MXNet node N are named N or N_<suffix>)."""
    nodes = json.loads(symbol.read_text())["nodes"]
    seg = [n.name for n in segment_nodes(model, tensor)]
    owners = [m for m in nodes if m["op"] != "null" and any(s == m["name"] or s.startswith(f"{m['name']}_") for s in seg)]
    read = {v.name for n in segment_nodes(model, tensor) for v in n.inputs if v is not None}  # + upgrade-made aux
    return read | {nodes[e[0]]["name"] for m in owners for e in m["inputs"] if nodes[e[0]]["op"] == "null"}


def _caffe_layers_after_cut(model: gf.Model, tensor: str, layers: list[str]) -> set[str]:
    """Caffe layers owning an initializer read after the cut: only their blobs may change."""
    inits = {v.name for n in segment_nodes(model, tensor) for v in n.inputs if v is not None and v.const_value is not None}
    return {la for la in layers if any(i.startswith(f"{la}.") for i in inits)}


# ----- real fine-tuning, end to end -------------------------------------------------------------
def test_mxnet_resnet_last_block_finetuned_and_written_back(tmp_path):
    """resnet18_v1, train_head(train_from="-1"): the trained convs and BatchNorm gamma/beta land
    in their params, nothing else changes, MXNet 1.9.1 gives the ONNX probabilities."""
    pytest.importorskip("torch")
    from graphfix.train import train_head

    symbol, params = mx_paths("resnet18_v1")
    model = gf.swap_head(gf.load(symbol, input_shape=mx_shape("resnet18_v1")), labels=3, seed=0)
    data = _teacher_data(model, 600, _input_shape(model, "resnet18_v1"))
    tuned, hist = train_head(model, data, data, train_from="-1", epochs=2, lr=3e-3, batch_size=8, cache=False)
    assert hist["best_epoch"] >= 1, hist["epoch_val_mAP"]  # the backbone did change
    tuned.path = str(symbol)
    summary = write_back(tuned, tmp_path / "ft", to="mxnet")
    changed = {k for k in hist["trained_initializers"]
               if tuned.ir.graph.initializers[k].const_value.numpy().tobytes()
               != model.ir.graph.initializers[k].const_value.numpy().tobytes()}
    assert changed and sorted(changed) == summary["tuned"]
    assert summary["parity"]["checked"] and summary["parity"]["max_abs_diff"] <= 1e-5, summary["parity"]
    src, new = read_params(params), read_params(tmp_path / "ft-0000.params")
    for key, arr in new.arrays.items():
        short = key.partition(":")[2]
        if short in changed:  # the fine-tuned values, exactly
            assert np.array_equal(arr, tuned.ir.graph.initializers[short].const_value.numpy()), key
        elif not short.startswith("graphfix_head"):
            assert arr.tobytes() == src.arrays[key].tobytes(), key  # before the cut: the same bytes
    assert not changed - _mx_keys_after_cut(model, hist["train_from"], symbol)
    diffs = _mxnet_forward({"resnet18_v1": (tuned, summary, tmp_path / "ft")}, tmp_path)
    assert diffs["resnet18_v1"] <= 1e-5, diffs


def _tiny_caffe_resnet(folder: Path) -> tuple[Path, Path]:
    """conv-BN-Scale-ReLU, one residual block of two of them (Eltwise SUM), global pool, fc, softmax."""
    b = caffe_writer.NetBuilder("TinyRes", {"data": (1, 3, 16, 16)}, seed=5)
    b.conv_bn_relu("c1", "data", 8, 3, p=1)
    b.conv_bn_relu("a", "c1", 8, 3, p=1)
    b.conv_bn_relu("b", "a", 8, 3, p=1, relu=False)
    b.eltwise("sum", ["c1", "b"])
    b.relu("sum/relu", "sum")
    b.pool("pool", "sum", "AVE", global_=True)
    b.ip("fc", "pool", 10)
    b.softmax("prob", "fc")
    proto, weights = folder / "net.prototxt", folder / "net.caffemodel"
    b.save(str(proto), str(weights))
    return proto, weights


def test_caffe_resnet_block_finetuned_cli_to_caffe(tmp_path, capsys):
    """`train-head --train-from -1 --to caffe` on a Caffe ResNet block: Convolution blobs take the
    trained weights, the BatchNorm scale/shift fold into its Scale, OpenCV DNN gives the ONNX
    probabilities, every layer before the cut keeps its bytes."""
    pytest.importorskip("torch")
    proto, weights = _tiny_caffe_resnet(tmp_path)
    swapped = tmp_path / "ml.onnx"
    model = gf.swap_head(gf.load(proto, weights=weights), labels=3, seed=0)
    model.save(swapped)
    data = _teacher_data(model, 120, _input_shape(model))
    np.savez(tmp_path / "d.npz", x=data.x, y=data.y)
    from graphfix.cli import main

    train = ["train-head", str(swapped), "--train", str(tmp_path / "d.npz"), "--val", str(tmp_path / "d.npz"),
             "--train-from", "-1", "--epochs", "2", "--lr", "3e-3", "--train-batch-size", "8", "--no-cache", "--json"]
    capsys.readouterr()
    assert main([*train, "--to", "caffe", "-o", str(tmp_path / "ft")]) == 0
    export = json.loads(capsys.readouterr().out)["export"]
    assert export["parity"]["checked"] and export["parity"]["max_abs_diff"] <= 1e-5, export["parity"]
    assert any(k.startswith(("a.", "b.")) for k in export["tuned"]), export["tuned"]
    assert main([*train, "-o", str(tmp_path / "ft.onnx")]) == 0  # the same training, as ONNX (deterministic)
    tuned = gf.load(tmp_path / "ft.onnx")
    assert sorted(export["tuned"]) == sorted(k for k, v in tuned.ir.graph.initializers.items() if k in model.ir.graph.initializers
                                             and not k.startswith("graphfix_head") and v.const_value.numpy().tobytes()
                                             != model.ir.graph.initializers[k].const_value.numpy().tobytes())
    diff = _opencv_diff(tuned, export, tmp_path / "ft")
    assert diff <= 1e-5, diff
    src, new = read_caffemodel(weights), read_caffemodel(tmp_path / "ft.caffemodel")
    after = _caffe_layers_after_cut(model, resolve_train_from(model, "-1"), list(src.blobs))
    assert after == {"a", "a/bn", "a/scale", "b", "b/bn", "b/scale"}, after
    for layer, blobs in src.blobs.items():
        if layer not in after and layer != "fc":
            assert [x.tobytes() for x in new.blobs[layer]] == [x.tobytes() for x in blobs], layer
    assert new.blobs["a"][0].tobytes() != src.blobs["a"][0].tobytes()
    # the BatchNorm keeps its statistics (frozen); its trained scale/shift went into the Scale layer
    assert [x.tobytes() for x in new.blobs["a/bn"]] == [x.tobytes() for x in src.blobs["a/bn"]]
    assert new.blobs["a/scale"][0].tobytes() != src.blobs["a/scale"][0].tobytes()


# ----- every fixture with trainable blocks: changed weights and statistics round-trip ----------
MX_CASES = [("resnet18_v1", "-1"), ("resnet50_v2", "-1"), ("vgg11_bn", "-2"), ("inception_bn_block", "-1"),
            ("mobilenetv2_0_25", "-1"), ("legacy_0x", "conv1")]  # legacy_0x: BatchNorm fix_gamma True
CAFFE_CASES = [("resnet_block", "-1"), ("resnet_block", "-2"), ("mobilenet_block", "-1"), ("googlenet_block", "-1"),
               ("squeezenet_v1.1", "-1"), ("lenet_v1", "-1")]


def test_mxnet_fixtures_round_trip_changed_weights_and_statistics(tmp_path):
    written = {}
    for name, spec in MX_CASES:
        symbol, params = mx_paths(name)
        model = gf.swap_head(gf.load(symbol, input_shape=mx_shape(name)), labels=3, seed=0)
        tuned, names = _perturbed(model, spec)
        prefix = tmp_path / name
        summary = write_back(tuned, prefix, to="mxnet")
        assert summary["parity"]["checked"] and summary["parity"]["max_abs_diff"] <= 1e-5, (name, summary["parity"])
        assert summary["tuned"] == sorted(names), name
        src, new = read_params(params), read_params(f"{prefix}-0000.params")
        after = _mx_keys_after_cut(model, resolve_train_from(model, spec), symbol)
        for key, arr in new.arrays.items():
            short = key.partition(":")[2]
            if short not in after and not short.startswith("graphfix_head"):
                assert arr.tobytes() == src.arrays[key].tobytes(), f"{name}: {key}"
        written[name] = (tuned, summary, prefix)
        written[f"{name}:swapped"] = (model, write_back(model, tmp_path / f"{name}-swapped", to="mxnet"),
                                      tmp_path / f"{name}-swapped")
    doc = json.loads((tmp_path / "legacy_0x-symbol.json").read_text())
    bn = next(n for n in doc["nodes"] if n["name"] == "bn1")
    assert bn["param"]["fix_gamma"] == "False", bn  # its trained gamma is now read
    assert np.array_equal(read_params(tmp_path / "legacy_0x-0000.params").args["bn1_gamma"],
                          written["legacy_0x"][0].ir.graph.initializers["bn1_gamma_fixed"].const_value.numpy())
    diffs = _mxnet_forward(written, tmp_path)
    report = " ".join(f"{k}={d:.3g}" for k, d in diffs.items())
    # within 1e-5 of the ONNX model in MXNet 1.9.1; mobilenetv2_0_25 differs by ~2e-5 in MXNet
    # before any fine-tuning (its depthwise convolutions): there, no more than the swapped model does
    assert all(diffs[n] <= max(1e-5, 1.5 * diffs[f"{n}:swapped"]) for n, _ in MX_CASES), report
    assert sum(diffs[n] > 1e-5 for n, _ in MX_CASES) <= 1, report


def test_caffe_fixtures_round_trip_changed_weights_and_statistics(tmp_path):
    for name, spec in CAFFE_CASES:
        proto, weights = caffe_paths(name)
        model = gf.swap_head(gf.load(proto, weights=weights), labels=3, seed=0)
        tuned, names = _perturbed(model, spec)
        prefix = tmp_path / f"{name}{spec}"
        summary = write_back(tuned, prefix, to="caffe", sources=[proto, weights])
        assert summary["parity"]["checked"] and summary["parity"]["max_abs_diff"] <= 1e-5, (name, summary["parity"])
        assert summary["tuned"] == sorted(names), name
        diff = _opencv_diff(tuned, summary, prefix)
        assert diff <= 1e-5, (name, spec, diff)
        src, new = read_caffemodel(weights), read_caffemodel(f"{prefix}.caffemodel")
        after = _caffe_layers_after_cut(model, resolve_train_from(model, spec), list(src.blobs))
        assert after, name
        for layer, blobs in src.blobs.items():
            if layer not in after and layer in new.blobs:
                assert [x.tobytes() for x in new.blobs[layer]] == [x.tobytes() for x in blobs], f"{name}: {layer}"
            if layer in after and src.types[layer] == "BatchNorm" and len(blobs) > 2:
                assert float(new.blobs[layer][2].reshape(-1)[0]) == 1.0  # statistics written as converted


# ----- refusals ---------------------------------------------------------------------------------
def _refused(call, tmp_path: Path) -> str:
    with pytest.raises(gf.GraphfixError) as err:
        call()
    assert err.value.kind == "usage"
    assert [p for p in tmp_path.iterdir() if p.name.startswith("out")] == []  # nothing written
    return err.value.message


def _caffe_net(folder: Path, build) -> tuple[gf.Model, Path, Path]:
    """conv c0 + ReLU, then `build(b)` reading blob c0 (the last block), global pool, fc, softmax."""
    b = caffe_writer.NetBuilder("t", {"data": (1, 3, 8, 8)}, seed=2)
    b.conv("c0", "data", 4, 3, p=1)
    b.relu("c0/relu", "c0")
    build(b)
    b.pool("pool", b.layers[-1].tops[0], "AVE", global_=True)
    b.ip("fc", "pool", 5)
    b.softmax("prob", "fc")
    proto, weights = folder / "src.prototxt", folder / "src.caffemodel"
    b.save(str(proto), str(weights))
    return gf.swap_head(gf.load(proto, weights=weights), labels=3, seed=0), proto, weights


def test_caffe_batchnorm_without_scale_layer(tmp_path):
    """A BatchNorm no Scale layer follows: its trained scale/shift go into its statistics (OpenCV
    within 1e-5); a scale that is not positive everywhere is refused."""
    def build(b):
        b.conv("c1", "c0", 4, 3, p=1)
        b.bn("c1/bn", "c1")
        b.relu("c1/relu", "c1")

    model, proto, weights = _caffe_net(tmp_path, build)
    tuned, names = _perturbed(model, "-1")
    assert {"c1/bn.gamma", "c1/bn.beta", "c1/bn.mean", "c1/bn.var"} <= names
    summary = write_back(tuned, tmp_path / "folded", to="caffe", sources=[proto, weights])
    assert summary["parity"]["max_abs_diff"] <= 1e-5 and _opencv_diff(tuned, summary, tmp_path / "folded") <= 1e-5
    new = read_caffemodel(tmp_path / "folded.caffemodel")
    assert float(new.blobs["c1/bn"][2][0]) == 1.0
    gamma = tuned.ir.graph.initializers["c1/bn.gamma"].const_value.numpy().copy()
    gamma[1] = -0.5
    _set(tuned, "c1/bn.gamma", gamma)
    msg = _refused(lambda: write_back(tuned, tmp_path / "out", to="caffe", sources=[proto, weights]), tmp_path)
    assert msg == ("fine-tuning changes initializer 'c1/bn.beta', but BatchNorm 'c1/bn' has no scale/shift blobs, no "
                   "Scale layer alone reads its output, and its trained scale is not positive everywhere (it cannot go "
                   "into the statistics); the caffe files cannot hold it exactly (nothing written)")


def test_refuses_caffe_constant_from_layer_attributes(tmp_path):
    def build(b):
        b.conv("c1", "c0", 4, 3, p=1)
        b.conv("c2", "c0", 4, 3, p=1)
        b.eltwise("sum", ["c1", "c2"], coeff=(1.0, 0.5))

    model, proto, weights = _caffe_net(tmp_path, build)
    tuned, names = _perturbed(model, "-1", stats=False)
    assert "sum.coeff1" in names  # fine-tuning trains the Eltwise coefficient's Mul constant
    msg = _refused(lambda: write_back(tuned, tmp_path / "out", to="caffe", sources=[proto, weights]), tmp_path)
    assert msg == ("fine-tuning changes initializer 'sum.coeff1', but it is a constant the import derived for "
                   "layer 'sum' (Eltwise), not one of its blobs; the caffe files cannot hold it exactly (nothing written)")


def _mx_net(folder: Path, body: list[dict], arrays: dict[str, np.ndarray],
            rng: np.random.Generator) -> tuple[gf.Model, Path]:
    """An MXNet classifier: `body` (data first, a 4-channel map last) + global average Pooling +
    FullyConnected(5) (its weight drawn from `rng`) + SoftmaxOutput, written as symbol + params,
    loaded and swapped to 3 labels."""
    k = len(body)
    nodes = [*body,
             {"op": "Pooling", "name": "pool", "attrs": {"global_pool": "True", "kernel": "(1, 1)", "pool_type": "avg"},
              "inputs": [[k - 1, 0, 0]]},
             _var("fc_weight"), _var("fc_bias"),
             {"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "5"},
              "inputs": [[k, 0, 0], [k + 1, 0, 0], [k + 2, 0, 0]]},
             _var("softmax_label"),
             {"op": "SoftmaxOutput", "name": "softmax", "inputs": [[k + 3, 0, 0], [k + 4, 0, 0]]}]
    arrays = {**arrays, "fc_weight": rng.standard_normal((5, 4)).astype(np.float32), "fc_bias": np.zeros(5, np.float32)}
    heads = [[len(nodes) - 1, 0, 0]]
    doc = {"nodes": nodes, "arg_nodes": [i for i, n in enumerate(nodes) if n["op"] == "null"], "heads": heads,
           "attrs": {"mxnet_version": ["int", 10901]}}
    symbol = folder / "src-symbol.json"
    symbol.write_text(json.dumps(doc))
    write_params(folder / "src-0000.params", {f"arg:{k}": v for k, v in arrays.items()})
    return gf.swap_head(gf.load(symbol, input_shape="data:1,4,6,6"), labels=3, seed=0), symbol


def _var(name: str) -> dict:
    return {"op": "null", "name": name, "inputs": []}


def _shared_weight_net(folder: Path) -> tuple[gf.Model, Path]:
    """Two 3x3 convolutions reading ONE weight variable `w` (an MXNet weight-tied net)."""
    conv = {"kernel": "(3, 3)", "num_filter": "4", "pad": "(1, 1)", "no_bias": "True"}
    nodes = [_var("data"), _var("w"),
             {"op": "Convolution", "name": "conv1", "attrs": conv, "inputs": [[0, 0, 0], [1, 0, 0]]},
             {"op": "Activation", "name": "relu1", "attrs": {"act_type": "relu"}, "inputs": [[2, 0, 0]]},
             {"op": "Convolution", "name": "conv2", "attrs": conv, "inputs": [[3, 0, 0], [1, 0, 0]]}]
    rng = np.random.default_rng(0)
    return _mx_net(folder, nodes, {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.2}, rng)


def test_refuses_mxnet_untied_shared_weight(tmp_path):
    """Fine-tuning from relu1 unties `w` (conv1 before the cut reads it too) as `w.finetuned`: one
    MXNet param cannot hold both values."""
    model, symbol = _shared_weight_net(tmp_path)
    tuned = model.copy()
    tuned.path = model.path
    graph = tuned.ir.graph
    w = graph.initializers["w"]
    arr = w.const_value.numpy() * 1.1
    copy = ir.Value(name="w.finetuned", shape=w.shape, type=w.type, const_value=ir.tensor(arr, name="w.finetuned"))
    graph.register_initializer(copy)
    conv2 = next(n for n in graph if n.name == "conv2")
    conv2.replace_input_with(1, copy)  # as graphfix.train.finetune unties it
    msg = _refused(lambda: write_back(tuned, tmp_path / "out", to="mxnet"), tmp_path)
    assert msg == ("initializer 'w.finetuned': fine-tuning unties 'w', which layers before the cut also read; the mxnet "
                   "source holds one param for both, so the fine-tuned copy cannot be written back")
    # an untied copy that kept its value (best epoch 0) writes the shared param as it is
    copy.const_value = ir.tensor(w.const_value.numpy().copy(), name="w.finetuned")
    summary = write_back(tuned, tmp_path / "kept", to="mxnet")
    assert summary["tuned"] == [] and summary["parity"]["max_abs_diff"] <= 1e-5


def test_refuses_mxnet_constant_from_node_attributes(tmp_path):
    conv = {"kernel": "(3, 3)", "num_filter": "4", "pad": "(1, 1)", "no_bias": "True"}
    nodes = [_var("data"), _var("w"),
             {"op": "Convolution", "name": "conv1", "attrs": conv, "inputs": [[0, 0, 0], [1, 0, 0]]},
             {"op": "_mul_scalar", "name": "scaled", "attrs": {"scalar": "0.5"}, "inputs": [[2, 0, 0]]}]
    rng = np.random.default_rng(0)
    model, _ = _mx_net(tmp_path, nodes, {"w": rng.standard_normal((4, 4, 3, 3)).astype(np.float32)}, rng)
    tuned, names = _perturbed(model, "conv1", stats=False)
    scalar = next(n for n in names if n.startswith("scaled_"))
    msg = _refused(lambda: write_back(tuned, tmp_path / "out", to="mxnet"), tmp_path)
    assert msg == (f"fine-tuning changes initializer {scalar!r}, but it is a constant the import derived for "
                   "node 'scaled' (_mul_scalar), not one of its params; the mxnet files cannot hold it exactly "
                   "(nothing written)")


@pytest.mark.parametrize("to_fail", ["coefficient", "shared"])
def test_train_head_refuses_before_any_model_runs(tmp_path, to_fail, no_model_runs, capsys):
    """`train-head --train-from -1 --to caffe|mxnet`: what the source cannot hold is refused
    before fine-tuning (no model runs), one line, nothing written."""
    from graphfix.cli import main

    if to_fail == "coefficient":
        def build(b):
            b.conv("c1", "c0", 4, 3, p=1)
            b.conv("c2", "c0", 4, 3, p=1)
            b.eltwise("sum", ["c1", "c2"], coeff=(1.0, 0.5))

        model, proto, _ = _caffe_net(tmp_path, build)
        to, spec, shape = "caffe", "-1", (3, 8, 8)
        want = (f"{proto}: fine-tuning changes initializer 'sum.coeff1', but it is a constant the import derived for "
                "layer 'sum' (Eltwise), not one of its blobs; the caffe files cannot hold it exactly (nothing written) "
                "(fine-tune from a later cut (graphfix inspect MODEL --train-from), or write ONNX)")
    else:
        model, _ = _shared_weight_net(tmp_path)
        to, spec, shape = "mxnet", "relu1", (4, 6, 6)
        want = (f"{tmp_path / 's.onnx'}: initializer 'w.finetuned': fine-tuning unties 'w', which layers before the cut "
                "also read; the mxnet source holds one param for both, so the fine-tuned copy cannot be written back "
                "(fine-tune from a cut before every reader of it (graphfix inspect MODEL --train-from), or write ONNX)")
    model.save(tmp_path / "s.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((12, *shape)).astype(np.float32),
             y=(rng.random((12, 3)) > 0.5).astype(np.uint8))
    before = sorted(p.name for p in tmp_path.iterdir())
    rc = main(["train-head", str(tmp_path / "s.onnx"), "--train", str(tmp_path / "d.npz"), "--train-from", spec,
               "--no-cache", "--to", to, "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 2 and not no_model_runs and out == ""
    assert err == f"graphfix: error: {want}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
