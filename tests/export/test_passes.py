"""Per pass: a before/after structure check, a no-op case, and onnxruntime parity."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import _export_models as M
from graphfix.convert._onnx import make_model
from graphfix.convert.export import passes as P
from graphfix.convert.export._parity import compare
from graphfix.errors import GraphfixError
from graphfix.model import Model


def _model(proto) -> Model:
    return Model.from_proto(proto)


def _ops(model: Model) -> list[str]:
    return [n.op_type for n in model.ir.graph]


def _run(pass_, proto):
    before = _model(proto)
    after = _model(proto)  # an independent copy (Model.copy needs a sorted graph)
    result = pass_(after.ir)
    return before, after, result


def _parity(before: Model, after: Model, fp16: bool = False) -> dict:
    figures = compare(before, after, fp16=fp16)
    assert figures["ok"], figures
    return figures


# ----- FoldConstantsPass ----------------------------------------------------------------------
def _foldable() -> object:
    nodes = [
        helper.make_node("Add", ["a", "b"], ["ab"], name="add_consts"),
        helper.make_node("Mul", ["data", "ab"], ["out"], name="mul"),
        helper.make_node("Relu", ["data"], ["dead"], name="dead_relu"),
    ]
    inits = [helper.make_tensor("a", TensorProto.FLOAT, [4], [1, 2, 3, 4]),
             helper.make_tensor("b", TensorProto.FLOAT, [4], [1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "foldable", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])], inits)
    return make_model(graph)


def test_fold_constants_folds_and_removes_dead_code():
    before, after, result = _run(P.FoldConstantsPass(), _foldable())
    assert result.modified
    assert _ops(after) == ["Mul"]
    _parity(before, after)


def test_fold_constants_noop():
    _, after, result = _run(P.FoldConstantsPass(), M.bn_cnn())
    assert not result.modified
    assert "BatchNormalization" in _ops(after)


# ----- RemoveInferenceNoOpsPass -----------------------------------------------------------------
def test_remove_noops_dropout_identity():
    before, after, result = _run(P.RemoveInferenceNoOpsPass(), M.view_head())
    assert result.modified
    assert "Dropout" not in _ops(after) and "Identity" not in _ops(after)
    _parity(before, after)


def test_remove_noops_identity_on_output_keeps_the_name():
    nodes = [helper.make_node("Relu", ["data"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["out"], name="id")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])])
    before, after, result = _run(P.RemoveInferenceNoOpsPass(), make_model(graph))
    assert result.modified and _ops(after) == ["Relu"]
    assert after.output_names == ["out"]
    _parity(before, after)


def test_remove_noops_keeps_training_dropout_and_noop():
    _, after, result = _run(P.RemoveInferenceNoOpsPass(), M.bad_training_dropout())
    assert not result.modified and _ops(after) == ["Dropout"]
    _, _, result = _run(P.RemoveInferenceNoOpsPass(), M.bn_cnn())
    assert not result.modified


# ----- FoldBatchNormPass ---------------------------------------------------------------------
def test_fold_batchnorm_conv():
    before, after, result = _run(P.FoldBatchNormPass(), M.bn_cnn())
    assert result.modified
    assert "BatchNormalization" not in _ops(after)
    assert _ops(after).count("Conv") == _ops(before).count("Conv")
    assert all(len(n.inputs) == 3 for n in after.ir.graph if n.op_type == "Conv")
    _parity(before, after)


def test_fold_batchnorm_gemm():
    before, after, result = _run(P.FoldBatchNormPass(), M.gemm_bn())
    assert result.modified and _ops(after) == ["Gemm"]
    assert after.output_names == ["out"]
    _parity(before, after)


def test_fold_batchnorm_noop_without_producer():
    nodes = [helper.make_node("BatchNormalization", ["data", "s", "b", "m", "v"], ["out"], name="bn")]
    inits = [helper.make_tensor(n, TensorProto.FLOAT, [3], [1, 1, 1]) for n in "sbmv"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 4, 4])], inits)
    _, after, result = _run(P.FoldBatchNormPass(), make_model(graph))
    assert not result.modified and _ops(after) == ["BatchNormalization"]
    _, _, result = _run(P.FoldBatchNormPass(), M.view_head())
    assert not result.modified


# ----- ConstantReshapePass -------------------------------------------------------------------
def test_constant_reshape_view_becomes_flatten():
    before, after, result = _run(P.ConstantReshapePass(), M.view_head())
    assert result.modified
    ops = _ops(after)
    assert "Flatten" in ops and "Reshape" not in ops and "Shape" not in ops
    _parity(before, after)


def _dynamo_style_view(extra: list[int] | None = None):
    """Shape(data, 0:1) -> Squeeze -> Reshape[-1] -> Concat[..] -> Reshape(allowzero=1), dynamo style."""
    tail = extra or [-1]
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["g"], name="gap"),
        helper.make_node("Shape", ["data"], ["s"], name="shape", start=0, end=1),
        helper.make_node("Squeeze", ["s"], ["n"], name="squeeze"),
        helper.make_node("Reshape", ["n", "m1"], ["n1"], name="n_to_1d"),
        helper.make_node("Concat", ["n1", "tail"], ["shape_vec"], name="concat", axis=0),
        helper.make_node("Reshape", ["g", "shape_vec"], ["out"], name="view", allowzero=1),
    ]
    inits = [helper.make_tensor("m1", TensorProto.INT64, [1], [-1]),
             helper.make_tensor("tail", TensorProto.INT64, [len(tail)], tail)]
    out_rank = 1 + len(tail)
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 8, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N"] + [None] * (out_rank - 1))],
                              inits)
    return make_model(graph)


def test_constant_reshape_dynamo_sym_size_chain():
    before, after, result = _run(P.ConstantReshapePass(), _dynamo_style_view())
    assert result.modified
    assert _ops(after) == ["GlobalAveragePool", "Flatten"]
    _parity(before, after)


def test_constant_reshape_to_constant_shape():
    before, after, result = _run(P.ConstantReshapePass(), _dynamo_style_view([2, -1]))
    assert result.modified
    assert _ops(after) == ["GlobalAveragePool", "Reshape"]
    reshape = [n for n in after.ir.graph if n.op_type == "Reshape"][0]
    assert reshape.inputs[1].const_value.numpy().tolist() == [0, 2, -1]
    assert reshape.attributes.get_int("allowzero", 0) == 0
    _parity(before, after)


def test_constant_reshape_noop():
    _, _, result = _run(P.ConstantReshapePass(), M.bn_cnn())
    assert not result.modified


# ----- ConvertOpsetPass ----------------------------------------------------------------------
def test_convert_opset_softmax11_keeps_meaning():
    before, after, result = _run(P.ConvertOpsetPass(17), M.softmax11())
    assert result.modified
    assert after.opset == 17 and 8 <= after.ir.ir_version <= 10
    assert _ops(after) == ["Conv", "Flatten", "Softmax", "Reshape"]
    _parity(before, after)


def test_convert_opset_softmax11_2d_only_sets_axis():
    before, after, result = _run(P.ConvertOpsetPass(17), M.view_head(opset=11))
    assert result.modified and after.opset == 17
    assert _ops(after).count("Softmax") == 1 and "Flatten" not in _ops(after)
    _parity(before, after)


def test_convert_opset_upsample_to_resize():
    before, after, result = _run(P.ConvertOpsetPass(17), M.bad_upsample())
    assert result.modified and _ops(after) == ["Resize"]
    _parity(before, after)


def test_convert_opset_downgrade_reduce_axes():
    nodes = [helper.make_node("ReduceMean", ["data", "axes"], ["out"], name="mean", keepdims=1)]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, 1, 1])], inits)
    before, after, result = _run(P.ConvertOpsetPass(17), make_model(graph, opset=18))
    assert result.modified and after.opset == 17
    node = next(iter(after.ir.graph))
    assert list(node.attributes.get_ints("axes")) == [2, 3] and len(node.inputs) == 1
    _parity(before, after)


def test_convert_opset_noop_and_bad_target():
    _, after, result = _run(P.ConvertOpsetPass(17), M.bn_cnn())
    assert not result.modified and after.opset == 17
    with pytest.raises(GraphfixError):
        P.ConvertOpsetPass(12)


# ----- BatchDimPass ------------------------------------------------------------------------
def test_batch_dim_fixed():
    before, after, result = _run(P.BatchDimPass(4), M.bn_cnn())
    assert result.modified
    assert list(after.ir.graph.inputs[0].shape) == [4, 3, 32, 32]
    assert list(after.ir.graph.outputs[0].shape) == [4, 10]
    _parity(before, after)


def test_batch_dim_dynamic_noop_and_name():
    _, after, result = _run(P.BatchDimPass("dynamic"), M.bn_cnn())
    assert not result.modified
    assert str(after.ir.graph.outputs[0].shape[0]) == "N"


def test_batch_dim_second_dynamic_dimension_is_an_error():
    with pytest.raises(GraphfixError) as info:
        _run(P.BatchDimPass("dynamic"), M.bad_two_dynamic())
    assert info.value.kind == "usage" and info.value.exit_code == 2  # fixed by --input-shape: a usage error


# ----- Int64RangePass ----------------------------------------------------------------------
def test_int64_range_clamps_slice_sentinels():
    nodes = [helper.make_node("Slice", ["data", "starts", "ends", "axes"], ["out"], name="slice"),
             helper.make_node("Equal", ["ids", "big"], ["same"], name="equal")]
    inits = [helper.make_tensor("starts", TensorProto.INT64, [1], [1]),
             helper.make_tensor("ends", TensorProto.INT64, [1], [2**63 - 1]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
             helper.make_tensor("big", TensorProto.INT64, [1], [2**40])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 6]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5]),
         helper.make_tensor_value_info("same", TensorProto.BOOL, ["N", 1])], inits)
    pass_ = P.Int64RangePass()
    before, after, result = _run(pass_, make_model(graph))
    assert result.modified
    ends = next(iter(after.ir.graph)).inputs[2].const_value.numpy()
    assert ends.tolist() == [2**31 - 1]
    assert [f["name"] for f in pass_.out_of_range] == ["big"]
    _parity(before, after)


def test_int64_range_noop():
    _, _, result = _run(P.Int64RangePass(), M.view_head())
    assert not result.modified


# ----- HygienePass -------------------------------------------------------------------------
def _messy():
    nodes = [helper.make_node("Relu", ["r1"], ["out"], name="dup"),       # out of order
             helper.make_node("Add", ["data", "bias"], ["r1"], name="dup"),
             helper.make_node("Neg", ["data"], ["unused"])]                # dead, unnamed
    inits = [helper.make_tensor("bias", TensorProto.FLOAT, [3], [1, 2, 3])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], inits)
    return make_model(graph)


def test_hygiene_fixes_names_order_and_inputs():
    _, after, result = _run(P.HygienePass(), _messy())
    assert result.modified
    names = [n.name for n in after.ir.graph]
    assert len(set(names)) == len(names) and all(names)
    assert _ops(after) == ["Add", "Relu"]
    assert after.input_names == ["data"] and len(after.ir.graph.inputs) == 1


def test_hygiene_noop():
    model = _model(M.bn_cnn())
    P.HygienePass()(model.ir)
    assert not P.HygienePass()(model.ir).modified


# ----- Float16Pass -------------------------------------------------------------------------
def _typed(proto) -> Model:
    from onnx_ir.passes.common import ShapeInferencePass

    model = _model(proto)
    ShapeInferencePass()(model.ir)
    return model


def test_float16_keeps_io_resize_and_head_fp32():
    proto = M.swapped()
    before = _model(proto)
    after = _typed(proto)
    pass_ = P.Float16Pass()
    result = pass_(after.ir)
    assert result.modified and pass_.converted > 0
    graph = after.ir.graph
    assert all(v.dtype == ir.DataType.FLOAT for v in graph.inputs)
    assert [v.dtype for v in graph.outputs][:2] == [ir.DataType.FLOAT, ir.DataType.FLOAT]
    assert after.output_names == before.output_names
    nodes = {n.name: n for n in graph}
    assert nodes["graphfix_head"].inputs[1].dtype == ir.DataType.FLOAT
    assert nodes["graphfix_head"].inputs[0].dtype == ir.DataType.FLOAT
    assert nodes["resize"].inputs[0].dtype == ir.DataType.FLOAT
    assert nodes["resize"].inputs[2].dtype == ir.DataType.FLOAT
    assert nodes["conv"].inputs[1].dtype == ir.DataType.FLOAT16
    figures = _parity(before, after, fp16=True)
    assert figures["outputs"]["probabilities"]["max_abs_diff"] < 1e-2


def test_float16_overflowing_weights_stay_fp32():
    nodes = [helper.make_node("Mul", ["data", "big"], ["m"], name="scale"),
             helper.make_node("Relu", ["m"], ["out"], name="relu")]
    inits = [helper.make_tensor("big", TensorProto.FLOAT, [2], [1e5, 1.0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])], inits)
    model = _typed(make_model(graph))
    pass_ = P.Float16Pass()
    pass_(model.ir)
    assert [o["node"] for o in pass_.overflow] == ["scale"]
    scale = next(n for n in model.ir.graph if n.name == "scale")
    assert scale.inputs[1].const_value.numpy().dtype == np.float32


def test_float16_noop_on_integer_graph():
    nodes = [helper.make_node("Add", ["data", "one"], ["out"], name="add")]
    inits = [helper.make_tensor("one", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.INT64, ["N", 2])],
                              [helper.make_tensor_value_info("out", TensorProto.INT64, ["N", 2])], inits)
    model = _typed(make_model(graph))
    assert not P.Float16Pass()(model.ir).modified


# ----- every pass: no change on a foreign-domain-only graph ------------------------------------------
@pytest.mark.parametrize("pass_factory", [
    P.FoldConstantsPass, P.RemoveInferenceNoOpsPass, P.FoldBatchNormPass, P.ConstantReshapePass,
    lambda: P.ConvertOpsetPass(17), lambda: P.BatchDimPass("dynamic"), P.Int64RangePass, P.Float16Pass,
    P.HygienePass,
], ids=["fold", "noops", "batchnorm", "reshape", "opset", "batch", "int64", "fp16", "hygiene"])
def test_every_pass_leaves_a_foreign_domain_graph_alone(pass_factory):
    nodes = [helper.make_node("Custom", ["data"], ["out"], name="custom", domain="my.domain")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])])
    proto = make_model(graph)
    proto.opset_import.append(helper.make_opsetid("my.domain", 1))
    model = _model(proto)
    result = pass_factory()(model.ir)
    assert not result.modified
    assert [(n.domain, n.op_type) for n in model.ir.graph] == [("my.domain", "Custom")]
