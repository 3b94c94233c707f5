"""Every export pass and every check runs over nodes whose optional inputs are all omitted.

ONNX lets optional inputs be left off at the end or named "" in the middle. The model below
has one node of each op the passes and checks read past input 0, each with every optional input
omitted (Slice without axes/steps, Conv/Gemm without bias, Clip without bounds, Pad without
value/axes, Resize without roi, Dropout without ratio/mode, LayerNormalization without bias,
ReduceMean without axes, Split without split). Each pass alone, the whole export (fp32 and
fp16) and `check` must run without an exception, and the outputs must match the input.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_ir.passes.common import ShapeInferencePass

from graphfix.convert._onnx import make_model
from graphfix.convert.check import check
from graphfix.convert.export import export
from graphfix.convert.export import passes as P
from graphfix.convert.export._parity import compare
from graphfix.model import Model


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _omitted_optional_inputs(opset: int):
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    inits = [
        _init("w", f32(4, 3, 3, 3)), _init("bn_s", f32(4) ** 2 + 0.5), _init("bn_b", f32(4)),
        _init("bn_m", f32(4)), _init("bn_v", f32(4) ** 2 + 0.5),
        _init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        _init("scales", np.array([1, 1, 0.8, 0.8], np.float32)),
        _init("start", np.array([0], np.int64)), _init("end", np.array([1], np.int64)),
        _init("minus1", np.array([-1], np.int64)),
        _init("ln_s", f32(64)), _init("g1", f32(32, 5)), _init("g2", f32(32, 5)),
    ]
    split_attrs = {"num_outputs": 2} if opset >= 18 else {}
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"]),
        helper.make_node("Clip", ["bn"], ["clip"]),
        helper.make_node("Pad", ["clip", "pads"], ["pad"]),
        helper.make_node("Resize", ["pad", "", "scales"], ["rs"], mode="nearest"),
        helper.make_node("Dropout", ["rs"], ["drop"]),
        helper.make_node("MaxPool", ["drop"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["mp"], ["sh"]),
        helper.make_node("Slice", ["sh", "start", "end"], ["n"]),
        helper.make_node("Concat", ["n", "minus1"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["mp", "flat_shape"], ["flat"]),
        helper.make_node("LayerNormalization", ["flat", "ln_s"], ["ln"], axis=-1),
        helper.make_node("Split", ["ln"], ["s1", "s2"], axis=1, **split_attrs),
        helper.make_node("Gemm", ["s1", "g1"], ["y1"]),
        helper.make_node("Gemm", ["s2", "g2"], ["y2"]),
        helper.make_node("Add", ["y1", "y2"], ["y"]),
        helper.make_node("ReduceMean", ["y"], ["mean"]),
        helper.make_node("Sub", ["y", "mean"], ["centred"]),
        helper.make_node("Softmax", ["centred"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "omitted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 5])], inits,
    )
    return make_model(graph, opset=opset)


def _passes():
    return [
        P.FoldConstantsPass(), P.RemoveInferenceNoOpsPass(), P.FoldBatchNormPass(), P.ConstantReshapePass(),
        P.ConvertOpsetPass(17), P.BatchDimPass("dynamic"), P.Int64RangePass(), P.Float16Pass(), P.HygienePass(),
    ]


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("index", range(len(_passes())))
def test_each_pass_runs_with_optional_inputs_omitted(opset, index):
    pass_ = _passes()[index]
    before = Model.from_proto(_omitted_optional_inputs(opset))
    after = Model.from_proto(_omitted_optional_inputs(opset))
    ShapeInferencePass(strict_mode=False)(after.ir)  # as export() has done before the later passes
    pass_(after.ir)
    figures = compare(before, after, fp16=isinstance(pass_, P.Float16Pass))
    assert figures["ok"], (type(pass_).__name__, figures)


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("fp16", [False, True])
def test_export_and_check_run_with_optional_inputs_omitted(tmp_path, opset, fp16):
    result = export(Model.from_proto(_omitted_optional_inputs(opset)), tmp_path / "out.onnx",
                    target="tensorrt", fp16=fp16)
    assert result.parity["ok"], result.parity
    report = check(result.path, target="tensorrt")
    assert all(f.id != "C0" for f in report.findings), report.text()
    report_cuda = check(result.path, target="cuda")
    assert report_cuda is not None
