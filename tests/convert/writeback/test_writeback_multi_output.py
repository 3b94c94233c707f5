"""Write-back of a net with a second, non-loss output beside its classifier: the MTCNN det2
style fixtures (fixtures/writeback/make_mtcnn.py; SoftmaxOutput `prob1` plus the box regression
`conv5_2`). The box stays an output of the deploy files; the MXNet training symbol BlockGrads it
and trains one step in real MXNet 1.9.1; the Caffe training prototxt silences it."""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphfix as gf
from graphfix.convert.caffe._caffemodel import read_caffemodel
from graphfix.convert.writeback import write_back
from tests.conftest import run_cli
from tests.convert.writeback.helpers import (
    MTCNN, MTCNN_SHAPE, caffe_train_net, mxnet_job, require_mxnet, run_mxnet_check,
)

SYMBOL, PARAMS = MTCNN / "mtcnn_det2-symbol.json", MTCNN / "mtcnn_det2-0000.params"
PROTOTXT, CAFFEMODEL = MTCNN / "mtcnn_det2.prototxt", MTCNN / "mtcnn_det2.caffemodel"


def _nodes(path) -> tuple[list[dict], list[list[int]]]:
    doc = json.loads(open(path).read())
    return doc["nodes"], doc["heads"]


def test_fixtures_match_mxnet():
    """The committed fixtures compute MXNet's outputs: box first, probabilities second (the
    2016 port's Group order), the Caffe twin the same function."""
    ref = np.load(MTCNN / "mtcnn_det2-ref.npz")
    mx_model = gf.load(SYMBOL, input_shape=MTCNN_SHAPE)
    caffe_model = gf.load(PROTOTXT, weights=CAFFEMODEL)
    assert mx_model.output_names == ["conv5_2_output", "prob1_output"]
    assert caffe_model.output_names == ["conv5-2", "prob1"]
    for model in (mx_model, caffe_model):
        out = list(model.run({"data": ref["input_b3"]}).values())
        np.testing.assert_allclose(out[0], ref["output0_b3"], atol=1e-5)
        np.testing.assert_allclose(out[1], ref["output1_b3"], atol=1e-5)


def test_mxnet_symbols(tmp_path):
    model = gf.swap_head(gf.load(SYMBOL, input_shape=MTCNN_SHAPE), labels=5, seed=1)
    assert model.output_names == ["conv5_2_output", "logits", "probabilities"]
    summary = write_back(model, tmp_path / "mt", to="mxnet")
    io = summary["io"]
    assert io["blocked_outputs"] == ["conv5_2_blockgrad_output"] and io["fixed_params"] == ["conv5_2_bias", "conv5_2_weight"]
    # graphfix re-read the deploy files: the probabilities and the kept box output both match
    assert summary["parity"]["max_abs_diff"] <= 1e-5 and summary["parity"]["other_outputs"]["conv5_2_output"] <= 1e-5
    nodes, heads = _nodes(tmp_path / "mt-symbol.json")
    assert [nodes[h[0]]["name"] for h in heads] == ["conv5_2", "graphfix_head_sigmoid"]  # places kept
    nodes, heads = _nodes(tmp_path / "mt-train-symbol.json")
    assert [(nodes[h[0]]["op"], nodes[h[0]]["name"]) for h in heads] == [
        ("BlockGrad", "conv5_2_blockgrad"), ("LogisticRegressionOutput", "graphfix_head_loss")]
    block = nodes[heads[0][0]]
    assert nodes[block["inputs"][0][0]]["name"] == "conv5_2"
    assert not any(n["op"] in ("SoftmaxOutput", "MakeLoss") for n in nodes)


def test_mxnet_trains_one_step(tmp_path):
    """`swap-head mtcnn_det2-symbol.json --to mxnet`, then real MXNet 1.9.1: the deploy files give
    graphfix's box and probabilities; the train symbol runs Module.forward_backward + update, the
    head moves by exactly the sigmoid cross-entropy gradient, the trunk moves, the BlockGrad-ed box
    layer does not."""
    require_mxnet()
    prefix = tmp_path / "mt"
    proc = run_cli("swap-head", SYMBOL, "--input-shape", MTCNN_SHAPE, "--labels", "5", "--seed", "1",
                   "--to", "mxnet", "-o", prefix, "--json")
    assert proc.returncode == 0, proc.stderr
    io = json.loads((tmp_path / "mt-graphfix.json").read_text())["io"]
    model = gf.swap_head(gf.load(SYMBOL, input_shape=MTCNN_SHAPE), labels=5, seed=1)
    rng = np.random.default_rng(5)
    x = np.load(MTCNN / "mtcnn_det2-ref.npz")["input_b3"]
    y = (rng.random((3, 5)) > 0.5).astype(np.float32)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    out = run_mxnet_check("step", [mxnet_job("mt", prefix, tmp_path / "xy.npz", io)], tmp_path)
    ours = model.run({"data": x})
    np.testing.assert_allclose(out["mt.deploy0"], ours["conv5_2_output"], atol=1e-5)
    np.testing.assert_allclose(out["mt.deploy1"], ours["probabilities"], atol=1e-5)
    # training forward: the blocked box is the box (BlockGrad is the identity), the loss output sigmoid
    np.testing.assert_allclose(out["mt.train0"], ours["conv5_2_output"], atol=1e-5)
    np.testing.assert_allclose(out["mt.train1"], ours["probabilities"], atol=1e-5)
    # one SGD step, lr 0.1, rescale 1/batch; LogisticRegressionOutput's gradient is (p - y) / L
    p, f = out["mt.train1"].astype(np.float64), out["mt.features"].astype(np.float64)
    want = -0.1 / (3 * 5) * (p - y).T @ f
    np.testing.assert_allclose(out["mt.moved.graphfix_head_weight"], want, atol=1e-6)
    assert np.abs(want).max() > 1e-3
    assert np.abs(out["mt.moved.conv1_weight"]).max() > 0  # the trunk learns through the new head
    for name in io["fixed_params"]:  # nothing reaches the box layer
        assert np.abs(out[f"mt.moved.{name}"]).max() == 0, name


def test_caffe_train_prototxt(tmp_path):
    """The Caffe twin: deploy keeps `conv5-2` as an output (OpenCV runs it), the training net's only
    output is the loss (conv5-2 silenced) and Caffe runs no backward for the box layer."""
    model = gf.swap_head(gf.load(PROTOTXT, weights=CAFFEMODEL), labels=5, seed=1)
    summary = write_back(model, tmp_path / "mt", to="caffe", sources=[PROTOTXT, CAFFEMODEL])
    io = summary["io"]
    assert io["silenced"] == ["conv5-2"]
    assert summary["parity"]["other_outputs"]["conv5-2"] <= 1e-5
    found = caffe_train_net(tmp_path / "mt-train.prototxt", io)
    assert found["outputs"] == [io["train_output"]]
    assert found["no_backward"] == ["conv5-2", "graphfix_head_silence"]
    assert [la.type for la in found["layers"]][-3:] == ["Silence", "Input", "SigmoidCrossEntropyLoss"]
    weights = read_caffemodel(tmp_path / "mt.caffemodel")
    assert "conv5-1" not in weights.blobs and "conv5-2" in weights.blobs
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / "mt-deploy.prototxt"), str(tmp_path / "mt.caffemodel"))
    x = np.load(MTCNN / "mtcnn_det2-ref.npz")["input_b3"]
    net.setInput(x)
    box, probs = net.forward(["conv5-2", io["probabilities"]])
    ours = model.run({"data": x})
    np.testing.assert_allclose(box, ours["conv5-2"], atol=1e-5)
    np.testing.assert_allclose(probs.reshape(3, 5), ours["probabilities"], atol=1e-5)
