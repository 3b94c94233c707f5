"""Caffe write-back: files load and run in OpenCV DNN, graphfix re-reads them with bit-identical
weights, the training net ends in SigmoidCrossEntropyLoss, output is deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest

import graphfix as gf
from graphfix.convert.caffe._caffemodel import read_caffemodel
from graphfix.convert.caffe._prototxt import parse_prototxt
from graphfix.convert.caffe._upgrade import net_layers
from graphfix.convert.writeback import write_back
from tests.convert.writeback.helpers import CAFFE_MODELS, caffe_paths, caffe_train_net


def _swapped(name: str) -> gf.Model:
    proto, weights = caffe_paths(name)
    return gf.swap_head(gf.load(proto, weights=weights), labels=5, seed=1)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("caffe")
    done = {}
    for name in CAFFE_MODELS:
        model = _swapped(name)
        prefix = out / name
        done[name] = (model, write_back(model, prefix, to="caffe", sources=list(caffe_paths(name))), prefix)
    return done


def test_opencv_matches(written):
    cv2 = pytest.importorskip("cv2")
    for name, (model, summary, prefix) in written.items():
        shape = [d for d in model.io_info()["inputs"][0]["shape"][1:]]
        x = np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)
        want = model.run({"data": x})["probabilities"]
        net = cv2.dnn.readNetFromCaffe(f"{prefix}-deploy.prototxt", f"{prefix}.caffemodel")
        net.setInput(x)
        got = net.forward(summary["io"]["probabilities"]).reshape(want.shape)
        diff = float(np.max(np.abs(got - want)))
        assert diff <= 1e-5, f"{name}: OpenCV vs graphfix max abs diff {diff:.3g}"
        assert summary["parity"]["checked"] and summary["parity"]["max_abs_diff"] <= 1e-5, name


def test_weights_bit_identical_and_layers_kept(written):
    for name, (model, summary, prefix) in written.items():
        proto, weights = caffe_paths(name)
        src, new = read_caffemodel(weights), read_caffemodel(f"{prefix}.caffemodel")
        head = summary["io"]["head"]
        w = model.ir.graph.initializers["graphfix_head.weight"].const_value.numpy()
        b = model.ir.graph.initializers["graphfix_head.bias"].const_value.numpy()
        np.testing.assert_array_equal(new.blobs[head][0].reshape(w.shape), w)
        np.testing.assert_array_equal(new.blobs[head][1].reshape(b.shape), b)
        replaced = set(model.metadata["head"]["replaced"])
        for layer, blobs in src.blobs.items():
            if layer in replaced:
                assert layer not in new.blobs, f"{name}: old classifier {layer} kept"
                continue
            assert [a.tobytes() for a in new.blobs[layer]] == [a.tobytes() for a in blobs], f"{name}: {layer}"
        # every source layer block outside the head is in the deploy prototxt as written
        old_layers = [la for la in net_layers(parse_prototxt(proto.read_text()), phase_filter=False) if la.name not in replaced]
        new_layers = net_layers(parse_prototxt(open(f"{prefix}-deploy.prototxt").read()), phase_filter=False)
        assert [(la.name, la.type, la.bottoms, la.tops) for la in old_layers] == [
            (la.name, la.type, la.bottoms, la.tops) for la in new_layers if not la.name.startswith("graphfix_head")
        ], name
        types = [la.type for la in new_layers if la.name.startswith("graphfix_head")]
        assert types[-2:] == ["InnerProduct", "Sigmoid"], types
        # graphfix re-reads the written pair: the head Gemm has the same weights, bit for bit
        back = gf.load(f"{prefix}-deploy.prototxt", weights=f"{prefix}.caffemodel")
        arrays = [v.const_value.numpy() for v in back.ir.graph.initializers.values() if v.const_value is not None]
        assert any(a.shape == w.shape and np.array_equal(a, w) for a in arrays), name


def test_train_prototxt(written):
    for name, (model, summary, prefix) in written.items():
        found = caffe_train_net(f"{prefix}-train.prototxt", summary["io"])  # Caffe's own TRAIN-net rules
        assert summary["io"]["silenced"] == [] and found["no_backward"] == [], name  # one output: nothing else
        layers = found["layers"]
        loss = layers[-1]
        assert loss.type == "SigmoidCrossEntropyLoss" and loss.bottoms == [summary["io"]["head"], summary["io"]["label"]], name
        assert not any(la.type in ("Sigmoid", "Softmax", "SoftmaxWithLoss") and la.name.startswith("graphfix") for la in layers)


def test_deterministic_and_sidecar(tmp_path):
    model = _swapped("squeezenet_v1.1")
    src = list(caffe_paths("squeezenet_v1.1"))
    write_back(model, tmp_path / "a", to="caffe", sources=src)
    write_back(model, tmp_path / "b", to="caffe", sources=src)
    for suffix in ("-deploy.prototxt", ".caffemodel", "-train.prototxt"):
        assert (tmp_path / f"a{suffix}").read_bytes() == (tmp_path / f"b{suffix}").read_bytes(), suffix
    sidecar = json.loads((tmp_path / "a-graphfix.json").read_text())
    assert sidecar["labels"] == model.labels and sidecar["thresholds"] is None
    assert "global_pooling: true" in (tmp_path / "a-deploy.prototxt").read_text()  # conv classifier: pooled head
