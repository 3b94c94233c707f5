"""Passes added for real torchvision/timm exports: Einsum equations TensorRT accepts, and a
training-mode BatchNormalization on constants (timm ScaledStdConv) computed once."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from graphfix.convert._onnx import make_model
from graphfix.convert.export import passes as P
from graphfix.convert.export._parity import compare
from graphfix.convert.export.passes.einsum import normalized_equation
from graphfix.model import Model


def test_normalized_equation():
    assert normalized_equation("B G H I D, B G H J D -> B G H I J") == "abcde,abcfe->abcdf"
    assert normalized_equation("bij,bjk->bik") == "abc,acd->abd"
    assert normalized_equation("...ij,...jk") == "...ab,...bc"


def _einsum_model():
    graph = helper.make_graph(
        [helper.make_node("Einsum", ["a", "b"], ["y"], equation="B I D, B J D -> B I J")], "e",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 5, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 5])])
    return make_model(graph, opset=17)


def test_einsum_pass_rewrites_and_keeps_values():
    before, after = Model.from_proto(_einsum_model()), Model.from_proto(_einsum_model())
    assert P.EinsumEquationPass()(after.ir).modified
    assert after.ir.graph.node(0).attributes["equation"].as_string() == "abc,adc->abd"
    assert compare(before, after)["ok"]
    assert not P.EinsumEquationPass()(after.ir).modified


def _standardised_weight_model():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((1, 4, 27)).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w, "w"), (np.ones(4, np.float32) * 0.7, "s"), (np.zeros(4, np.float32), "b"),
        (np.zeros(4, np.float32), "m"), (np.ones(4, np.float32), "v"),
        (np.array([4, 3, 3, 3], np.int64), "wshape"))]
    nodes = [
        helper.make_node("BatchNormalization", ["w", "s", "b", "m", "v"], ["wn", "rm", "rv"], training_mode=1,
                         epsilon=1e-5, momentum=1.0),
        helper.make_node("Reshape", ["wn", "wshape"], ["wk"]),
        helper.make_node("Conv", ["x", "wk"], ["y"], pads=[1, 1, 1, 1]),
    ]
    graph = helper.make_graph(nodes, "ws", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
    return make_model(graph, opset=17)


def test_training_batchnorm_on_constants_is_computed_once():
    before, after = Model.from_proto(_standardised_weight_model()), Model.from_proto(_standardised_weight_model())
    assert P.FoldBatchNormPass()(after.ir).modified
    assert "BatchNormalization" not in [n.op_type for n in after.ir.graph]
    figures = compare(before, after)
    assert figures["ok"], figures


def _unary(op: str, **attrs):
    inits = [numpy_helper.from_array(np.array(-3.0, np.float32), "lo"),
             numpy_helper.from_array(np.array(3.0, np.float32), "hi")]
    inputs = ["x", "lo", "hi"] if op == "Clip" else ["x"]
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "u",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
                              inits if op == "Clip" else [])
    return Model.from_proto(make_model(graph, opset=17))


def test_parity_is_judged_on_a_varied_batch():
    """A candidate that differs only on inputs beyond +-3 passes on one mild input and fails on
    the seeded batch of 8 (which has x4-scaled and uniform [-3, 3] samples)."""
    from graphfix.convert.export._parity import PARITY_SAMPLES, varied_feeds

    feeds = varied_feeds(_unary("Identity"))
    assert len(feeds) == 1 and feeds[0]["x"].shape == (PARITY_SAMPLES, 16)
    assert np.array_equal(feeds[0]["x"], varied_feeds(_unary("Identity"))[0]["x"])  # seeded
    assert compare(_unary("Identity"), _unary("Clip"), samples=1)["ok"]
    figures = compare(_unary("Identity"), _unary("Clip"))
    assert not figures["ok"] and figures["outputs"]["y"]["max_abs_diff"] > 1.0, figures


# ----- Float16Pass on torch exports: graphs that type-check and that onnxruntime can load -----------

_ORT_PROBE = """
import sys, numpy as np, onnxruntime as ort
opts = ort.SessionOptions()
opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
opts.log_severity_level = 3
session = ort.InferenceSession(sys.argv[1], opts, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((2, 17, 32)).astype(np.float32)
np.save(sys.argv[2], session.run(None, {"x": x})[0])
"""


def _seq_first_attention_proj():
    """torchvision MultiheadAttention's in-projection: batch-first -> seq-first Transpose, MatMul."""
    w = np.random.default_rng(1).standard_normal((32, 96)).astype(np.float32) * 0.1
    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0, 2], name="seq_first"),
         helper.make_node("MatMul", ["t", "w"], ["m"], name="proj"),
         helper.make_node("Shape", ["m"], ["s"], name="shape"),
         helper.make_node("Relu", ["m"], ["y"], name="relu")], "mha",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 17, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [17, "N", 96]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [3])],
        [numpy_helper.from_array(w, "w")])
    return make_model(graph, opset=17)


def _typed(proto) -> Model:
    from onnx_ir.passes.common import ShapeInferencePass

    model = Model.from_proto(proto)
    ShapeInferencePass()(model.ir)
    return model


def test_fp16_seq_first_transpose_loads_in_onnxruntime(tmp_path):
    """onnxruntime 1.31's CPU session died (SIGSEGV) on an fp16 rank-3 Transpose [1,0,2] feeding
    a MatMul, the torchvision ViT (dynamo) case: the Transpose stays fp32; the session is made in
    a child process so a crash fails this test instead of killing pytest."""
    import subprocess
    import sys

    import onnx
    import onnx_ir as ir

    model = _typed(_seq_first_attention_proj())
    assert P.Float16Pass()(model.ir).modified
    types = {n.name: n.outputs[0].dtype for n in model.ir.graph}
    assert types["seq_first"] == ir.DataType.FLOAT and types["proj"] == ir.DataType.FLOAT16
    assert sorted(u.node.op_type for u in model.ir.graph.node("proj").outputs[0].uses()) == ["Relu", "Shape"]
    proto = ir.serde.serialize_model(model.ir)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    onnx.save(proto, tmp_path / "fp16.onnx")
    onnx.save(_seq_first_attention_proj(), tmp_path / "fp32.onnx")
    for name in ("fp32", "fp16"):
        proc = subprocess.run([sys.executable, "-c", _ORT_PROBE, str(tmp_path / f"{name}.onnx"),
                               str(tmp_path / f"{name}.npy")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (name, proc.returncode, proc.stderr[-500:])
    want, got = np.load(tmp_path / "fp32.npy"), np.load(tmp_path / "fp16.npy")
    assert want.shape == got.shape == (17, 2, 96)
    assert np.max(np.abs(want - got)) < 1e-2


def test_fp16_input_of_unknown_type_keeps_node_fp32():
    """An Add reading a value of unknown type (a custom op's output) is not half converted: its
    other input would be fp16 beside a float32 one."""
    import onnx_ir as ir

    graph = helper.make_graph(
        [helper.make_node("Foo", ["x"], ["u"], domain="custom", name="foo"),
         helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Add", ["r", "u"], ["y"], name="add")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom", 1)])
    model = _typed(proto)
    P.Float16Pass()(model.ir)
    add = model.ir.graph.node("add")
    assert [v.dtype for v in add.inputs] == [ir.DataType.FLOAT, None]
    assert model.ir.graph.node("relu").outputs[0].dtype == ir.DataType.FLOAT16


def test_fp16_initializer_that_is_a_graph_input_keeps_its_type():
    """IR < 4 lists initializers as graph inputs too: the input stays float32 (the fp16 copy is new)."""
    import onnx_ir as ir

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"], name="mul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 3
    model = _typed(proto)
    P.Float16Pass()(model.ir)
    assert [v.dtype for v in model.ir.graph.inputs] == [ir.DataType.FLOAT, ir.DataType.FLOAT]
    assert model.ir.graph.node("mul").inputs[1].dtype == ir.DataType.FLOAT16


def test_fp16_type_check_names_the_node_and_leaves_the_model():
    """`type_check` refuses a graph strict onnx inference rejects, in one line naming the node,
    and leaves the initializers (big ones declared as inputs for the check) as they were."""
    import onnx_ir as ir
    import pytest

    from graphfix.convert.export.passes.fp16 import type_check
    from graphfix.errors import GraphfixError

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["h"], to=TensorProto.FLOAT16, name="half"),
         helper.make_node("Add", ["h", "big"], ["a"], name="bad_add"),
         helper.make_node("Reshape", ["a", "shape"], ["y"], name="reshape")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [4096])],
        [numpy_helper.from_array(np.ones((2, 2048), np.float32), "big"),
         numpy_helper.from_array(np.array([4096], np.int64), "shape")])
    model = Model.from_proto(make_model(graph, opset=17))
    with pytest.raises(GraphfixError) as info:
        type_check(model.ir)
    message = str(info.value)
    assert "bad_add" in message and "inconsistent type" in message and "\n" not in message, message
    assert list(model.ir.graph.initializers) == ["big", "shape"]
    assert [v.name for v in model.ir.graph.inputs] == ["x"]
    model.ir.graph.node("half").attributes["to"] = ir.AttrInt64("to", int(ir.DataType.FLOAT))
    model.ir.graph.node("half").outputs[0].dtype = ir.DataType.FLOAT
    model.ir.graph.outputs[0].dtype = ir.DataType.FLOAT
    type_check(model.ir)  # float32 + float32: fine
