"""Weights that are graph inputs (a Gluon block exported with weights passed in, a checkpoint
missing some params): named ONNX inputs of the shape `--input-shape` gives, with one notice;
label inputs named in `--input-shape` are accepted and dropped."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.convert.mxnet import load_mxnet
from graphfix.errors import GraphfixError
from tests.convert.mxnet.mxnet_helpers import SymbolBuilder, run_cli

RNG = np.random.default_rng(3)


def _fc_softmax(tmp_path, with_weight: bool = False):
    b = SymbolBuilder()
    b.var("data")
    b.var("fc_weight", RNG.normal(size=(3, 4)) if with_weight else None)
    b.var("fc_bias", np.arange(3.0))
    b.var("softmax_label")
    b.op("FullyConnected", "fc", ["data", "fc_weight", "fc_bias"], num_hidden=3)
    b.op("SoftmaxOutput", "softmax", ["fc", "softmax_label"])
    return b.save(tmp_path, ["softmax"], name="m")


def test_missing_weight_becomes_a_graph_input(tmp_path, caplog):
    sym = _fc_softmax(tmp_path)
    model = load_mxnet(sym, input_shape={"data": (1, 4), "fc_weight": (3, 4), "softmax_label": (1,)})
    inputs = {v.name: [d if isinstance(d, int) else d.value for d in v.shape] for v in model.ir.graph.inputs}
    assert inputs == {"data": ["batch", 4], "fc_weight": [3, 4]}
    notices = [r.getMessage() for r in caplog.records if "graph input" in r.getMessage()]
    assert notices == [f"{sym}: 1 weight not in params, now graph input: fc_weight [3, 4]"]
    x = RNG.normal(size=(2, 4)).astype(np.float32)
    w = RNG.normal(size=(3, 4)).astype(np.float32)
    got = model.run({"data": x, "fc_weight": w})["softmax_output"]
    logits = x @ w.T + np.arange(3.0)
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_weight_inputs_of_conv_bn_prelu_and_dense(tmp_path):
    """Every converter that reads a weight takes a graph input: Conv, BatchNorm (all four
    statistics), PReLU slopes on the channel axis, FullyConnected flatten=False."""
    b = SymbolBuilder()
    for name in ("data", "c_weight", "c_bias", "bn_gamma", "bn_beta", "bn_moving_mean", "bn_moving_var",
                 "act_gamma", "fc_weight"):
        b.var(name)
    b.op("Convolution", "c", ["data", "c_weight", "c_bias"], kernel=(1, 1), num_filter=2)
    b.op("BatchNorm", "bn", ["c", "bn_gamma", "bn_beta", "bn_moving_mean", "bn_moving_var"], fix_gamma=False)
    b.op("LeakyReLU", "act", ["bn", "act_gamma"], act_type="prelu")
    b.op("FullyConnected", "fc", ["act", "fc_weight"], num_hidden=5, flatten=False, no_bias=True)
    sym = b.save(tmp_path, ["fc"], name="g")
    shapes = {"data": (1, 3, 2, 4), "c_weight": (2, 3, 1, 1), "c_bias": (2,), "bn_gamma": (2,), "bn_beta": (2,),
              "bn_moving_mean": (2,), "bn_moving_var": (2,), "act_gamma": (2,), "fc_weight": (5, 4)}
    model = load_mxnet(sym, input_shape=shapes)
    assert [v.name for v in model.ir.graph.inputs] == list(shapes)
    feeds = {k: RNG.normal(size=(2,) + v[1:] if k == "data" else v).astype(np.float32) for k, v in shapes.items()}
    feeds["bn_moving_var"] = np.abs(feeds["bn_moving_var"]) + 0.5
    f = feeds
    conv = np.einsum("nchw,oc->nohw", f["data"], f["c_weight"][:, :, 0, 0]) + f["c_bias"].reshape(1, 2, 1, 1)
    r = lambda v: v.reshape(1, 2, 1, 1)  # noqa: E731
    bn = (conv - r(f["bn_moving_mean"])) / np.sqrt(r(f["bn_moving_var"]) + 1e-3) * r(f["bn_gamma"]) + r(f["bn_beta"])
    act = np.where(bn > 0, bn, bn * r(f["act_gamma"]))
    np.testing.assert_allclose(model.run(feeds)["fc_output"], act @ f["fc_weight"].T, rtol=1e-4, atol=1e-5)


def test_missing_weight_without_a_shape_names_it(tmp_path):
    sym = _fc_softmax(tmp_path)
    with pytest.raises(GraphfixError) as err:
        load_mxnet(sym, input_shape={"data": (1, 4)})
    assert err.value.one_line() == (
        f"{sym}: node fc (FullyConnected): weight 'fc_weight' is missing from params (the params file holds no "
        "arg:fc_weight or aux:fc_weight, or pass --input-shape fc_weight:dims to make it a graph input)")


def test_weight_input_shape_must_fit_the_graph(tmp_path):
    sym = _fc_softmax(tmp_path)
    with pytest.raises(GraphfixError, match=r"weight 'fc_weight' has shape \(4, 3\) but the graph needs \(3, 4\)"):
        load_mxnet(sym, input_shape={"data": (1, 4), "fc_weight": (4, 3)})


def test_cli_label_inputs_are_accepted_and_dropped(tmp_path):
    sym = _fc_softmax(tmp_path, with_weight=True)
    out = tmp_path / "o.onnx"
    proc = run_cli("convert", sym, "-o", out, "--input-shape", "data:1,4", "--input-shape", "softmax_label:1",
                   "--input-shape", "other_label:1", "-q")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    import onnx

    assert [i.name for i in onnx.load(str(out)).graph.input] == ["data"]


def test_cli_weight_input_one_notice_and_an_unknown_name_refused(tmp_path):
    sym = _fc_softmax(tmp_path)
    out = tmp_path / "o.onnx"
    proc = run_cli("convert", sym, "-o", out, "--input-shape", "data:1,4", "--input-shape", "fc_weight:3,4")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == [f"graphfix: warning: {sym}: 1 weight not in params, now graph input: fc_weight [3, 4]"]
    proc = run_cli("convert", sym, "-o", tmp_path / "p.onnx", "--input-shape", "data:1,4",
                   "--input-shape", "fc_weight:3,4", "--input-shape", "fc_wieght:3,4")
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"graphfix: error: {sym}: --input-shape names fc_wieght, which is not an input of the graph "
        "(data inputs: data)"]
    assert not (tmp_path / "p.onnx").exists()
