"""Parity of whole networks made by real MXNet 1.9.1 (fixtures/mxnet), batch 1 and 3."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from graphfix.convert import load
from graphfix.convert.mxnet import load_mxnet
from tests.convert.mxnet.mxnet_helpers import MODELS, assert_parity, model_files

REQUIRED = {
    "resnet18_v1", "resnet50_v2", "mobilenet1_0_25", "mobilenetv2_0_25", "squeezenet1_1", "densenet121",
    "inceptionv3", "vgg11_bn", "lenet", "inception_bn_block", "legacy_0x",
}


def _load(name: str):
    sym, params, _ = model_files(name)
    return load_mxnet(sym, params, {"": tuple(MODELS[name]["input_shape"])})


def test_every_required_fixture_is_present():
    assert REQUIRED <= set(MODELS)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_parity_with_mxnet(name):
    assert_parity(_load(name), model_files(name)[2], name)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_form(name):
    model = _load(name)
    graph = model.ir.graph
    assert model.opset == 17
    assert 8 <= model.ir.ir_version <= 10
    assert [v.name for v in graph.inputs] == ["data"], "labels and weights are not inputs"
    first = graph.inputs[0].shape[0]
    assert isinstance(first, ir.SymbolicDim) and first.value == "batch"
    for out in graph.outputs:
        assert isinstance(out.shape[0], ir.SymbolicDim), f"{out.name} has a fixed batch"
    for node in graph:
        assert node.name, "every node is named"
        if node.op_type == "Reshape":
            shape = node.inputs[1].const_value.numpy()
            assert shape[0] in (0, -1), f"{node.name} bakes the batch in: {shape}"
        if node.op_type == "Flatten":
            producer = node.inputs[0].producer()
            assert producer is None or producer.op_type != "Flatten", f"double Flatten at {node.name}"
    assert len({n.name for n in graph}) == len(graph), "node names are unique"
    source = model.metadata["source"]
    assert source["format"] == "mxnet"
    assert set(source["files"]) == {f"{name}-symbol.json", f"{name}-0000.params"}
    assert "preprocess" not in model.metadata
    assert model.weight_bytes() > 0


def test_softmax_output_keeps_node_name_and_drops_label():
    model = _load("lenet")
    names = {n.name: n for n in model.ir.graph}
    assert names["softmax"].op_type == "Softmax"
    assert names["softmax"].attributes["axis"].value == 1
    assert names["fc2"].op_type == "Gemm" and names["fc2"].attributes["transB"].value == 1
    assert model.output_names == ["softmax_output"]
    assert "softmax_label" not in {v.name for v in model.ir.graph.inputs}


def test_fix_gamma_is_honoured_in_the_graph():
    """inception_bn_block stores random gamma for fix_gamma=True BNs; the graph scales by ones."""
    model = _load("inception_bn_block")
    bns = [n for n in model.ir.graph if n.op_type == "BatchNormalization"]
    fixed = [n for n in bns if n.name != "bn_concat"]
    assert fixed
    for n in fixed:
        np.testing.assert_array_equal(n.inputs[1].const_value.numpy(), 1.0)
    free = next(n for n in bns if n.name == "bn_concat")
    assert not np.all(free.inputs[1].const_value.numpy() == 1.0)


def test_weights_are_not_copied():
    """float32 initializers are views of the params file map (one copy of the weights)."""
    model = _load("resnet18_v1")
    init = model.ir.graph.initializers["resnetv10_conv0_weight"].const_value.numpy()
    assert not init.flags.owndata and not init.flags.writeable


def test_load_dispatches_json_and_parses_input_shape():
    sym, _, ref = model_files("lenet")
    model = load(sym, input_shape="data:1,1,28,28")
    assert model.io_info()["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    assert_parity(model, ref, "lenet via graphfix.load")


def test_without_input_shape_rank_and_channels_come_from_the_first_conv():
    sym, _, ref = model_files("legacy_0x")
    model = load_mxnet(sym)
    assert model.io_info()["inputs"][0]["shape"] == ["batch", 3, "?", "?"]
    assert_parity(model, ref, "legacy_0x without input shape")
