"""Head finding on the ONNX fixtures and on small edge-case graphs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphfix as gf
from graphfix.convert._onnx import make_model
from graphfix.surgery.head import normalized_axes
from tests.conftest import ONNX_FIXTURES, onnx_fixture

HEADED = sorted(k for k, v in ONNX_FIXTURES.items() if "kind" in v)


@pytest.mark.parametrize("name", HEADED)
def test_fixture_head(name):
    expect = ONNX_FIXTURES[name]
    model = gf.load(onnx_fixture(name))
    head = gf.find_head(model)
    assert head.kind == expect["kind"]
    assert head.features == expect["features"]
    assert head.num_features == expect["F"]
    assert head.num_classes == expect["K"]
    assert head.needs_pooling == (expect["kind"] == "conv")


def test_find_head_does_not_modify_model():
    model = gf.load(onnx_fixture("cnn_softmax"))
    before = model.to_bytes()
    gf.find_head(model)
    assert model.to_bytes() == before


def test_ambiguous_head_lists_both_softmax_outputs():
    model = gf.load(onnx_fixture("two_softmax"))
    with pytest.raises(gf.GraphfixError) as info:
        gf.find_head(model)
    err = info.value
    assert err.kind == "no_head" and err.exit_code == 2
    assert "ambiguous" in err.message and "prob_a" in err.message and "prob_b" in err.message
    assert "--features" in err.one_line()


def test_no_head_lists_candidates():
    model = gf.load(onnx_fixture("no_head"))
    with pytest.raises(gf.GraphfixError) as info:
        gf.find_head(model)
    line = info.value.one_line()
    assert "no classification head" in line and "relu2" in line and "\n" not in line


def test_features_override_resolves_ambiguity():
    model = gf.load(onnx_fixture("two_softmax"))
    head = gf.find_head(model, features="flatten")
    assert head.kind == "features" and head.num_features == 16
    assert sorted(head.outputs) == ["prob_a", "prob_b"]


def test_features_override_unknown_tensor():
    model = gf.load(onnx_fixture("cnn_softmax"))
    with pytest.raises(gf.GraphfixError, match="no such tensor"):
        gf.find_head(model, features="nope")


@pytest.mark.parametrize(
    ("opset", "axis", "rank", "expected"),
    [(11, None, 2, [1]), (11, 1, 4, [1, 2, 3]), (11, -1, 4, [3]), (13, None, 2, [1]), (13, None, 4, [3]), (13, 1, 4, [1])],
)
def test_softmax_axis_semantics(opset, axis, rank, expected):
    attrs = {} if axis is None else {"axis": axis}
    node = gf.Model.from_proto(_softmax_on_conv_model(opset, attrs)).ir.graph.node(-1)
    assert normalized_axes(node, rank, opset) == expected


def _softmax_on_conv_model(opset: int, attrs: dict, hw: int = 1) -> onnx.ModelProto:
    """Conv1x1 on a [N, 8, hw, hw] input -> Softmax on the 4-D logits."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((5, 8, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), helper.make_node("Softmax", ["c"], ["p"], name="sm", **attrs)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, hw, hw])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, None)], [w],
    )
    return make_model(graph, opset=opset)


def test_opset11_softmax_on_pooled_4d_conv_head_is_found():
    model = gf.Model.from_proto(_softmax_on_conv_model(11, {"axis": 1}))
    head = gf.find_head(model)
    assert head.kind == "conv" and head.num_classes == 5 and head.num_features == 8


def test_opset13_default_axis_on_4d_logits_is_rejected():
    # opset >= 13, axis=-1 on [N, 5, 1, 1] normalises a size-1 axis: not a class softmax
    model = gf.Model.from_proto(_softmax_on_conv_model(13, {}))
    with pytest.raises(gf.GraphfixError, match="not the class axis"):
        gf.find_head(model)


def test_per_pixel_softmax_is_not_a_classifier_head():
    model = gf.Model.from_proto(_softmax_on_conv_model(17, {"axis": 1}, hw=4))
    with pytest.raises(gf.GraphfixError, match="spatial map"):
        gf.find_head(model)


def test_full_size_average_pool_counts_as_global_pooling():
    """ONNX-zoo SqueezeNet style: 1x1 Conv -> Relu -> AveragePool(13x13) -> Flatten -> Softmax."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((6, 8, 1, 1)).astype(np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv10"),
        helper.make_node("Relu", ["c"], ["r"], name="relu10"),
        helper.make_node("AveragePool", ["r"], ["p"], name="pool10", kernel_shape=[13, 13]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Softmax", ["f"], ["prob"], name="sm", axis=1),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 13, 13])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)], [w])
    model = gf.Model.from_proto(make_model(graph))
    head = gf.find_head(model)
    assert head.kind == "conv" and head.needs_pooling and head.num_features == 8
    new = gf.swap_head(model, labels=3)
    x = rng.standard_normal((2, 8, 13, 13)).astype(np.float32)
    np.testing.assert_allclose(
        new.run({"x": x})["logits"],
        x.mean(axis=(2, 3)) @ new.ir.graph.initializers["graphfix_head.weight"].const_value.numpy().T,
        rtol=1e-5, atol=1e-5,
    )
    # a pooling window smaller than the map is not global pooling
    nodes[2] = helper.make_node("AveragePool", ["r"], ["p"], name="pool10", kernel_shape=[3, 3])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 13, 13])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, None)], [w])
    with pytest.raises(gf.GraphfixError, match="does not cover"):
        gf.find_head(gf.Model.from_proto(make_model(graph)))
