"""Graph-level behaviour: input forms, weights discovery, SSA naming, cutting, metadata."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from caffe_helpers import caffe_writer as cw

import graphfix
from graphfix.convert.caffe import load_caffe
from graphfix.errors import GraphfixError

BODY = """layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
"""
INPUT_FORMS = {
    "input_dim": 'input: "data"\ninput_dim: 2\ninput_dim: 3\ninput_dim: 5\ninput_dim: 4\n',
    "input_shape": 'input: "data"\ninput_shape { dim: 2 dim: 3 dim: 5 dim: 4 }\n',
    "Input layer": 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 4 } } }\n',
}


def _weights(path) -> None:
    rng = np.random.RandomState(0)
    cw.write_caffemodel(
        str(path),
        [
            cw.WLayer("conv", "Convolution", [rng.randn(2, 3, 1, 1), rng.randn(2)]),
            cw.WLayer("bn", "BatchNorm", [rng.randn(2) * 5, rng.rand(2) * 5 + 1, np.array([5.0])]),
            cw.WLayer("sc", "Scale", [rng.rand(2) + 0.5, rng.randn(2)]),
        ],
    )


@pytest.fixture
def net(tmp_path):
    def make(head: str = INPUT_FORMS["input_dim"], body: str = BODY, weights: bool = True):
        proto = tmp_path / "deploy.prototxt"
        proto.write_text(head + body)
        if weights:
            _weights(tmp_path / "net.caffemodel")
        return proto

    return make


@pytest.mark.parametrize("form", sorted(INPUT_FORMS))
def test_input_forms(net, form):
    model = load_caffe(net(INPUT_FORMS[form]))  # caffemodel found beside the prototxt
    assert model.io_info()["inputs"] == [{"name": "data", "dtype": "FLOAT", "shape": ["batch", 3, 5, 4]}]
    assert model.run(np.ones((3, 3, 5, 4), np.float32))["prob"].shape == (3, 2, 5, 4)


def test_input_shape_override(net):
    proto = net()
    assert load_caffe(proto, input_shape={"": (1, 3, 8, 9)}).io_info()["inputs"][0]["shape"] == ["batch", 3, 8, 9]
    assert load_caffe(proto, input_shape={"data": (1, 3, 2, 2)}).preprocess["size"] == [2, 2]
    with pytest.raises(GraphfixError, match="unknown input"):
        load_caffe(proto, input_shape={"image": (1, 3, 2, 2)})
    m = graphfix.load(proto, input_shape="data:1,3,6,6")
    assert m.run(np.ones((2, 3, 6, 6), np.float32))["prob"].shape == (2, 2, 6, 6)


def test_training_prototxt_data_layer_needs_a_shape(net):
    head = 'layer { name: "mnist" type: "Data" top: "data" top: "label" transform_param { scale: 0.00390625 mean_value: 33 } }\n'
    body = BODY + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "prob" bottom: "label" top: "loss" }\n'
    proto = net(head, body)
    with pytest.raises(GraphfixError, match="input 'data' has no declared shape"):
        load_caffe(proto)
    model = load_caffe(proto, input_shape={"data": (1, 3, 5, 5)})
    assert model.input_names == ["data"] and model.output_names == ["prob"]
    assert model.preprocess["scale"] == 0.00390625 and model.preprocess["mean"] == [33.0]


def test_no_input_declared(net):
    with pytest.raises(GraphfixError, match="declares no input"):
        load_caffe(net(""))


def test_weights_discovery(net, tmp_path):
    proto = net()
    shutil.copy(tmp_path / "net.caffemodel", tmp_path / "other.caffemodel")
    with pytest.raises(GraphfixError, match="2 .caffemodel files beside") as info:
        load_caffe(proto)
    assert info.value.kind == "usage"
    assert load_caffe(proto, weights=tmp_path / "other.caffemodel").output_names == ["prob"]


def test_weightless_net_needs_no_caffemodel(net):
    model = load_caffe(
        net(
            body='layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n',
            weights=False,
        )
    )
    assert model.output_names == ["p"]
    assert list(model.metadata["source"]["files"]) == ["deploy.prototxt"]


def test_in_place_chain_is_ssa_and_last_writer_keeps_the_blob_name(net):
    model = load_caffe(net(), outputs=["conv", "prob"])
    produced = [o.name for node in model.graph for o in node.outputs]
    assert len(produced) == len(set(produced)), "tensor names must be unique"
    assert {"conv/conv", "conv/bn", "conv/sc", "conv", "prob"} <= set(produced)
    relu = next(n for n in model.graph if n.name == "relu")
    assert relu.outputs[0].name == "conv" and relu.inputs[0].name == "conv/sc"
    out = model.run(np.random.RandomState(0).randn(1, 3, 5, 4).astype(np.float32))
    assert (out["conv"] >= 0).all()


def test_outputs_cut_and_errors(net):
    proto = net()
    model = load_caffe(proto, outputs=["conv"])
    assert model.output_names == ["conv"] and "Softmax" not in model.op_histogram()
    with pytest.raises(GraphfixError, match="requested output blob\\(s\\) nope not in the net") as info:
        load_caffe(proto, outputs=["nope"])
    assert "conv" in info.value.hint


def test_dangling_bottom(net):
    with pytest.raises(GraphfixError, match="reads blob 'ghost' that no earlier layer or input produces"):
        load_caffe(net(body='layer { name: "r" type: "ReLU" bottom: "ghost" top: "r" }\n', weights=False))


def test_metadata_source_and_preprocess(net, tmp_path):
    proto = net()
    model = load_caffe(proto)
    meta = model.metadata
    assert meta["source"]["format"] == "caffe"
    assert set(meta["source"]["files"]) == {"deploy.prototxt", "net.caffemodel"}
    assert all(len(h) == 64 for h in meta["source"]["files"].values())
    pre = meta["preprocess"]
    assert pre["channel_order"] == "BGR" and pre["scale"] == 1.0 and pre["mean"] is None and pre["size"] == [5, 4]


def test_mean_from_transform_param_in_the_caffemodel(net, tmp_path):
    proto = net()
    tp = cw.ld(5, np.array([104.0, 117.0, 123.0], "<f4").tobytes())  # mean_value, packed
    data = cw.ld(1, b"data") + cw.ld(2, b"Data") + cw.ld(100, tp)
    extra = cw.ld(100, data)
    with open(tmp_path / "net.caffemodel", "ab") as fh:
        fh.write(extra)
    assert load_caffe(proto).preprocess["mean"] == [104.0, 117.0, 123.0]


def test_mean_file_binaryproto(net, tmp_path):
    mean = np.stack([np.full((4, 4), v, np.float32) for v in (10.0, 20.0, 30.0)])[None]
    cw.write_binaryproto(str(tmp_path / "mean.binaryproto"), mean)
    head = (
        INPUT_FORMS["input_dim"]
        + 'layer { name: "tp" type: "Data" top: "unused" transform_param { mean_file: "mean.binaryproto" } }\n'
    )
    pre = load_caffe(net(head)).preprocess
    assert pre["mean"] == [10.0, 20.0, 30.0] and "mean_file" in pre["mean_source"]


def test_graphfix_load_dispatches_prototxt(net):
    model = graphfix.load(net(), outputs=["prob"])
    assert model.output_names == ["prob"] and model.opset == 17
