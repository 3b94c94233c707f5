"""C17: the explicit-quantization (Q/DQ) rules of `check --target tensorrt`.

Each rule gets a graph built with onnx.helper that breaks it (exact FAIL line, node named); the
graph onnxruntime's `quantize_static` writes is checked as the real quantizer writes it.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import _export_models as M
from graphfix.convert._onnx import make_model
from graphfix.convert.check import check, qdq
from graphfix.model import Model

_SUMMARY = "explicit quantization: {q} QuantizeLinear, {dq} DequantizeLinear; TensorRT builds it strongly typed, " \
           "no calibration table"


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def qdq_net(*, in_zp=0, in_zp_type=np.int8, r_scale=0.05, w_axis=0, w_scales=4, opset=17, between=None,
            drop_in_zp=False, drop_w_axis=False) -> onnx.ModelProto:
    """data -> Q/DQ -> Conv(DQ weights, per-channel) -> Relu -> Q/DQ -> GAP -> Flatten -> head Gemm -> Sigmoid.

    `between` is an op type put between q_r and dq_r (a Reshape keeps the shape).
    """
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    ws = np.full(w_scales, 0.01, np.float32)
    zp_in = [] if drop_in_zp else ["in.zp"]
    nodes = [
        helper.make_node("QuantizeLinear", ["data", "in.scale", *zp_in], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "in.scale", *zp_in], ["x"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["conv.wq", "conv.ws", "conv.wzp"], ["w"], name="dq_w",
                         **({} if drop_w_axis else {"axis": w_axis})),
        helper.make_node("Conv", ["x", "w", "conv.b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("QuantizeLinear", ["r", "r.scale", "r.zp"], ["rq"], name="q_r"),
    ]
    if between == "Reshape":
        nodes.append(helper.make_node("Reshape", ["rq", "r.shape"], ["rq2"], name="mid"))
    elif between is not None:
        nodes.append(helper.make_node(between, ["rq"], ["rq2"], name="mid"))
    nodes += [
        helper.make_node("DequantizeLinear", ["rq2" if between else "rq", "r.scale", "r.zp"], ["rd"], name="dq_r"),
        helper.make_node("GlobalAveragePool", ["rd"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["features"], name="flatten"),
        helper.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                         name="graphfix_head", transB=1),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    r_scale = np.asarray(r_scale, np.float32)
    inits = [
        _init("in.scale", np.float32(0.03)), _init("in.zp", in_zp_type(in_zp)),
        _init("conv.wq", w), _init("conv.ws", ws), _init("conv.wzp", np.zeros(w_scales, np.int8)),
        _init("conv.b", np.zeros(4, np.float32)),
        _init("r.scale", r_scale), _init("r.zp", np.zeros(r_scale.shape, np.int8)),
        _init("r.shape", np.array([-1, 4, 8, 8], np.int64)),
        _init("graphfix_head.weight", rng.standard_normal((2, 4)).astype(np.float32)),
        _init("graphfix_head.bias", np.zeros(2, np.float32)),
    ]
    graph = helper.make_graph(
        nodes, "qdq", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])], inits)
    return make_model(graph, opset=opset)


def _c17(report, severity=None) -> list[str]:
    return [f.line() for f in report.findings if f.id == "C17" and (severity is None or f.severity == severity)]


def _set(proto, name, array) -> None:
    """Replace initializer `name` in place."""
    for i, init in enumerate(proto.graph.initializer):
        if init.name == name:
            proto.graph.initializer[i].CopyFrom(_init(name, array))
            return
    raise KeyError(name)


def test_good_qdq_graph_passes_and_runs():
    proto = qdq_net()
    report = check(Model.from_proto(proto), target="tensorrt")
    assert report.ok, report.text()
    assert _c17(report) == ["INFO C17 qdq-summary: " + _SUMMARY.format(q=2, dq=3)]
    assert "C6" not in report.ids()  # DequantizeLinear of a constant weight counts as an initializer weight
    out = Model.from_proto(proto).run({"data": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)})
    assert out["probabilities"].shape == (2, 2) and np.all(np.isfinite(out["probabilities"]))


def test_zero_point_not_zero():
    report = check(Model.from_proto(qdq_net(in_zp=3)), target="tensorrt")
    fix = "quantize symmetrically (ActivationSymmetric / WeightSymmetric=True)"
    assert _c17(report, "FAIL") == [
        f"FAIL C17 qdq-zero-point [q_in (QuantizeLinear)]: QuantizeLinear zero point is 3, not 0 (TensorRT quantizes "
        f"symmetrically only) -> {fix}",
        f"FAIL C17 qdq-zero-point [dq_in (DequantizeLinear)]: DequantizeLinear zero point is 3, not 0 (TensorRT "
        f"quantizes symmetrically only) -> {fix}",
    ]
    assert not report.ok


@pytest.mark.parametrize("value, shown", [(0.0, "0.0"), (-0.5, "-0.5"), (np.inf, "inf"), (np.nan, "nan")])
def test_scale_positive_and_finite(value, shown):
    report = check(Model.from_proto(qdq_net(r_scale=value)), target="tensorrt")
    fix = "recalibrate: a zero, negative or non-finite scale cannot quantize"
    assert _c17(report, "FAIL") == [
        f"FAIL C17 qdq-scale [q_r (QuantizeLinear)]: QuantizeLinear scale holds {shown} (scales must be positive and "
        f"finite) -> {fix}",
        f"FAIL C17 qdq-scale [dq_r (DequantizeLinear)]: DequantizeLinear scale holds {shown} (scales must be positive "
        f"and finite) -> {fix}",
    ]


def test_weight_scale_nonpositive_names_the_weight_dq():
    proto = qdq_net()
    _set(proto, "conv.ws", np.array([0.01, 0.01, -0.01, 0.01], np.float32))
    assert _c17(check(Model.from_proto(proto), target="tensorrt"), "FAIL") == [
        "FAIL C17 qdq-scale [dq_w (DequantizeLinear)]: DequantizeLinear scale holds -0.009999999776482582 (scales must "
        "be positive and finite) -> recalibrate: a zero, negative or non-finite scale cannot quantize"]


def test_check_command_on_a_broken_qdq_model(save):
    from tests.conftest import run_cli

    path = save(qdq_net(in_zp=3))
    proc = run_cli("check", path, "--target", "tensorrt")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "  FAIL C17 qdq-zero-point [q_in (QuantizeLinear)]: QuantizeLinear zero point is 3, not 0 (TensorRT " \
           "quantizes symmetrically only) -> quantize symmetrically (ActivationSymmetric / WeightSymmetric=True)" \
        in proc.stdout.splitlines()
    doc = json.loads(run_cli("check", path, "--target", "tensorrt", "--json").stdout)
    assert [(f["rule"], f["node"]) for f in doc["findings"] if f["severity"] == "FAIL"] == [
        ("qdq-zero-point", "q_in (QuantizeLinear)"), ("qdq-zero-point", "dq_in (DequantizeLinear)")]
    assert run_cli("check", save(qdq_net(), "good.onnx"), "--target", "tensorrt", "-q").returncode == 0


def test_scale_and_zero_point_must_be_constants():
    proto = qdq_net()
    proto.graph.node.insert(0, helper.make_node("Abs", ["r.scale0"], ["r.scale_c"], name="abs"))
    proto.graph.initializer.append(_init("r.scale0", np.float32(0.05)))
    for node in proto.graph.node:
        if node.name in ("q_r", "dq_r"):
            node.input[1] = "r.scale_c"
    report = check(Model.from_proto(proto), target="tensorrt")
    assert _c17(report, "FAIL") == [
        f"FAIL C17 qdq-constant [{n} ({op})]: {op} scale is computed, not a constant -> make it an initializer"
        for n, op in (("q_r", "QuantizeLinear"), ("dq_r", "DequantizeLinear"))]


def test_uint8_is_refused():
    report = check(Model.from_proto(qdq_net(in_zp_type=np.uint8)), target="tensorrt")
    assert _c17(report, "FAIL") == [
        "FAIL C17 qdq-type [q_in (QuantizeLinear)]: QuantizeLinear quantizes to UINT8 (TensorRT: INT8, FP8 E4M3 or "
        "INT4 weights) -> quantize to signed INT8 (QuantType.QInt8)"]


def test_missing_zero_point_means_uint8():
    proto = qdq_net(drop_in_zp=True)
    report = check(Model.from_proto(proto), target="tensorrt")
    assert _c17(report, "FAIL") == [
        "FAIL C17 qdq-type [q_in (QuantizeLinear)]: QuantizeLinear without a zero point quantizes to UINT8 (ONNX "
        "default; negatives clamp to 0) -> give an INT8 zero point of 0"]
    # what the rule is about: onnxruntime really clamps the negative inputs to 0
    x = -np.ones((1, 3, 8, 8), np.float32)
    probe = Model.from_proto(proto).copy()
    probe.ir.graph.outputs.append(next(o for n in probe.ir.graph for o in n.outputs if o.name == "x"))
    assert float(probe.run({"data": x})["x"].max()) == 0.0


def test_fp8_is_a_warning():
    proto = qdq_net(opset=19)
    zp = helper.make_tensor("in.zp", TensorProto.FLOAT8E4M3FN, [], [0.0])
    _set(proto, "in.zp", np.int8(0))
    next(i for i in proto.graph.initializer if i.name == "in.zp").CopyFrom(zp)
    report = check(Model.from_proto(proto), target="tensorrt")
    assert _c17(report, "WARN") == [
        "WARN C17 qdq-type [q_in (QuantizeLinear)]: QuantizeLinear quantizes to FP8 (E4M3) -> FP8 needs TensorRT 10 "
        "and an sm_89+ GPU (Ada, Hopper); use INT8 elsewhere"]
    assert not _c17(report, "FAIL")


def test_per_channel_needs_opset_13():
    report = check(Model.from_proto(qdq_net(opset=12, drop_w_axis=True)), target="tensorrt")
    assert _c17(report, "FAIL") == [
        "FAIL C17 qdq-opset [dq_w (DequantizeLinear)]: per-channel DequantizeLinear at opset 12 (the axis attribute "
        "needs opset 13) -> export at opset 13 or later (graphfix writes 17)"]


def test_per_channel_activation_is_refused():
    report = check(Model.from_proto(qdq_net(r_scale=np.full(4, 0.05, np.float32))), target="tensorrt")
    fix = "use one scale for activations"
    assert _c17(report, "FAIL") == [
        f"FAIL C17 qdq-per-channel [{n} ({op})]: per-channel {op} on an activation (4 scales; TensorRT quantizes "
        f"activations per-tensor) -> {fix}" for n, op in (("q_r", "QuantizeLinear"), ("dq_r", "DequantizeLinear"))]


def test_conv_weight_axis_must_be_the_output_channels():
    report = check(Model.from_proto(qdq_net(w_axis=1, w_scales=3)), target="tensorrt")
    assert _c17(report, "FAIL") == [
        "FAIL C17 qdq-per-channel [dq_w (DequantizeLinear)]: per-channel axis 1 for Conv 'conv' input 1 (its "
        "output-channel axis is 0) -> quantize along axis 0"]


def test_scale_count_must_match_the_axis():
    report = check(Model.from_proto(qdq_net(w_scales=3)), target="tensorrt")
    assert _c17(report, "FAIL") == [
        "FAIL C17 qdq-per-channel [dq_w (DequantizeLinear)]: 3 scales for axis 0 of size 4 -> one scale per channel"]


def _weight_net(op: str, axis: int, trans_b: int = 1) -> onnx.ModelProto:
    """data -> Q/DQ -> op(DQ per-channel weights), for the output-channel axis of each weight layout."""
    if op == "ConvTranspose":
        data, wshape, out = ["N", 4, 5, 5], (4, 6, 3, 3), ["N", 6, 7, 7]
    else:
        data, out = ["N", 5], ["N", 6]
        wshape = (6, 5) if op == "Gemm" and trans_b else (5, 6)
    scales = np.full(wshape[axis], 0.01, np.float32)
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["data", "s", "z"], ["xq"], name="q"),
        helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["x"], name="dq"),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], name="dq_w", axis=axis),
        helper.make_node(op, ["x", "w"], ["out"], name="layer", **attrs),
    ]
    inits = [_init("s", np.float32(0.02)), _init("z", np.int8(0)), _init("ws", scales),
             _init("wz", np.zeros(scales.shape, np.int8)), _init("wq", np.ones(wshape, np.int8))]
    graph = helper.make_graph(nodes, "w", [helper.make_tensor_value_info("data", TensorProto.FLOAT, data)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, out)], inits)
    return make_model(graph)


@pytest.mark.parametrize("op, trans_b, good, bad", [
    ("ConvTranspose", 1, 1, 0), ("Gemm", 1, 0, 1), ("Gemm", 0, 1, 0), ("MatMul", 0, 1, 0)])
def test_weight_axis_per_layout(op, trans_b, good, bad):
    proto = _weight_net(op, good, trans_b)
    report = check(Model.from_proto(proto), target="tensorrt")
    assert not _c17(report, "FAIL"), report.text()
    dims = [2] + [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    assert Model.from_proto(proto).run({"data": np.ones(dims, np.float32)})["out"].shape[0] == 2
    assert _c17(check(Model.from_proto(_weight_net(op, bad, trans_b)), target="tensorrt"), "FAIL") == [
        f"FAIL C17 qdq-per-channel [dq_w (DequantizeLinear)]: per-channel axis {bad} for {op} 'layer' input 1 (its "
        f"output-channel axis is {good}) -> quantize along axis {good}"]


@pytest.mark.parametrize("axis", [0, 1])
def test_weight_axis_through_a_transpose(axis):
    """DQ(W [6, 5]) -> Transpose -> MatMul: the MatMul's output channels are W's axis 0."""
    proto = _weight_net("Gemm", axis, trans_b=1)  # W [6, 5]
    layer = proto.graph.node[3]
    layer.op_type, layer.input[1] = "MatMul", "wt"
    del layer.attribute[:]
    proto.graph.node.insert(3, helper.make_node("Transpose", ["w"], ["wt"], name="t", perm=[1, 0]))
    report = check(Model.from_proto(proto), target="tensorrt")
    if axis == 0:
        assert not _c17(report, "FAIL"), report.text()
        assert Model.from_proto(proto).run({"data": np.ones((2, 5), np.float32)})["out"].shape == (2, 6)
    else:
        assert _c17(report, "FAIL") == [
            "FAIL C17 qdq-per-channel [dq_w (DequantizeLinear)]: per-channel axis 1 (axis 0 after the Transpose) for "
            "MatMul 'layer' input 1 (its output-channel axis is 1) -> quantize along axis 0"]


def test_only_data_movement_between_q_and_dq():
    assert not _c17(check(Model.from_proto(qdq_net(between="Reshape")), target="tensorrt"), "FAIL")
    report = check(Model.from_proto(qdq_net(between="Relu")), target="tensorrt")
    assert _c17(report, "FAIL") == [
        "FAIL C17 qdq-pairing [q_r (QuantizeLinear)]: Relu 'mid' reads the quantized output of 'q_r' (between Q and DQ "
        "only Concat, Flatten, Gather, Identity, MaxPool, Reshape, Slice, Squeeze, Transpose, Unsqueeze) -> put a "
        "DequantizeLinear before it"]


def test_quantized_tensor_as_graph_output():
    proto = qdq_net()
    proto.graph.output.append(helper.make_tensor_value_info("rq", TensorProto.INT8, ["N", 4, 8, 8]))
    assert _c17(check(Model.from_proto(proto), target="tensorrt"), "FAIL") == [
        "FAIL C17 qdq-pairing [q_r (QuantizeLinear)]: the quantized tensor 'rq' is a graph output (a QuantizeLinear "
        "must feed a DequantizeLinear) -> add a DequantizeLinear before the output"]


def test_dequantize_without_quantize():
    proto = qdq_net()
    proto.graph.node.insert(5, helper.make_node("Cast", ["r"], ["r8"], name="cast", to=TensorProto.INT8))
    for node in proto.graph.node:
        if node.name == "dq_r":
            node.input[0] = "r8"
    report = check(Model.from_proto(proto), target="tensorrt")
    assert "FAIL C17 qdq-pairing [dq_r (DequantizeLinear)]: DequantizeLinear reads Cast 'cast', not a QuantizeLinear " \
           "output or a constant weight -> pair every DequantizeLinear with a QuantizeLinear" in _c17(report, "FAIL")


# --- what onnxruntime's quantizer writes -----------------------------------------------------------------------


def _quantize(tmp_path, **options) -> str:
    quantization = pytest.importorskip("onnxruntime.quantization")
    from tests.tiny_heads import build_swapped

    src, dst = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    build_swapped().save(src)

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.rows = iter([{"data": rng.standard_normal((1, 3, 6, 6)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.rows, None)

    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, **options.pop("extra", {})}
    quantization.quantize_static(str(src), str(dst), Reader(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True, activation_type=quantization.QuantType.QInt8,
                                 weight_type=quantization.QuantType.QInt8, extra_options=extra, **options)
    return str(dst)


def test_quantize_static_for_tensorrt_passes(tmp_path):
    path = _quantize(tmp_path, nodes_to_exclude=["graphfix_head", "graphfix_sigmoid"], extra={"QuantizeBias": False})
    report = check(path, target="tensorrt")
    assert report.ok, report.text()
    assert [f.line() for f in report.findings if f.severity != "INFO"] == []
    assert _c17(report) == ["INFO C17 qdq-summary: " + _SUMMARY.format(q=5, dq=6)]
    x = np.random.default_rng(3).standard_normal((4, 3, 6, 6)).astype(np.float32)
    from tests.tiny_heads import build_swapped

    int8, fp32 = Model.from_proto(onnx.load(path)).run({"data": x}), build_swapped().run({"data": x})
    assert np.max(np.abs(int8["probabilities"] - fp32["probabilities"])) < 0.02


def test_quantize_static_defaults_name_the_int32_biases_and_the_head(tmp_path):
    report = check(_quantize(tmp_path), target="tensorrt")
    fix = "keep biases fp32 (onnxruntime quantize_static: extra_options QuantizeBias=False)"
    assert _c17(report, "FAIL") == [
        f"FAIL C17 qdq-type [{n}_DequantizeLinear (DequantizeLinear)]: DequantizeLinear of an INT32 tensor (a quantized "
        f"bias): TensorRT takes only INT8/FP8/INT4 into a DequantizeLinear -> {fix}"
        for n in ("conv.b", "graphfix_head.bias")]
    assert _c17(report, "WARN") == [
        "WARN C17 qdq-head [graphfix_head (Gemm)]: the multi-label head is quantized (its weights are int8; the "
        "thresholds were fitted on fp32 scores) -> keep graphfix_head and graphfix_sigmoid fp32 (quantize_static "
        "nodes_to_exclude)"]
    assert not report.ok


# --- graphs without Q/DQ: unchanged --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(M.GOOD_MODELS) + sorted(M.BAD_MODELS))
def test_no_qdq_graph_is_unchanged(name, monkeypatch):
    build = M.GOOD_MODELS[name] if name in M.GOOD_MODELS else M.BAD_MODELS[name][0]
    model = Model.from_proto(build())
    with_c17 = check(model, target="tensorrt").to_dict()
    monkeypatch.setattr(qdq, "check_qdq", lambda ctx: None)
    without = check(model, target="tensorrt").to_dict()
    assert json.dumps(with_c17["findings"]) == json.dumps(without["findings"])
    assert "C17" in with_c17["checks"] and "C17" not in check(model, target="cuda").checks


def test_int8_metadata_without_qdq_nodes():
    proto = M.bn_cnn()
    proto.metadata_props.add(key="graphfix.int8", value=json.dumps({"method": "entropy"}))
    assert _c17(check(Model.from_proto(proto), target="tensorrt")) == [
        "WARN C17 qdq-metadata: metadata says graphfix.int8 but the graph holds no QuantizeLinear/DequantizeLinear "
        "-> re-export with --int8 (the int8 graph was lost)"]


# --- Triton: the INT8 precision ------------------------------------------------------------------------------------

_TRITON_INT8 = '''name: "tagger"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "data"
    data_type: TYPE_FP32
    dims: [ 3, 8, 8 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 2 ]
  },
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 2 ]
  }
]
dynamic_batching { }
instance_group [ { kind: KIND_GPU, count: 1 } ]
optimization {
  execution_accelerators {
    gpu_execution_accelerator [
      {
        name: "tensorrt"
        parameters { key: "precision_mode" value: "INT8" }
        parameters { key: "max_workspace_size_bytes" value: "1073741824" }
        parameters { key: "trt_engine_cache_enable" value: "1" }
        parameters { key: "trt_engine_cache_path" value: "/tmp/triton_trt_cache" }
      }
    ]
  }
}
'''


def test_triton_config_of_an_int8_model(tmp_path):
    from graphfix.convert.triton import triton_config, write_repository

    proto = qdq_net()
    plain = Model.from_proto(proto)
    proto.metadata_props.add(key="graphfix.int8", value=json.dumps(
        {"method": "entropy", "quantizer": "onnxruntime", "weights": "per-channel symmetric int8",
         "activations": "per-tensor symmetric int8", "calibration_rows": 16, "float_nodes": [], "accuracy": {}}))
    int8 = Model.from_proto(proto)
    for fp16 in (False, True):  # INT8 whatever the fp16 flag: the graph says where it is int8
        assert triton_config(int8, "tagger", target="tensorrt", fp16=fp16) == _TRITON_INT8
    # no calibration table for an explicitly quantized model; fp16/fp32 models keep what they had
    assert "calibration" not in _TRITON_INT8
    fp16_line = '        parameters { key: "precision_mode" value: "FP16" }'
    assert triton_config(plain, "tagger", target="tensorrt", fp16=True) == _TRITON_INT8.replace(
        '        parameters { key: "precision_mode" value: "INT8" }', fp16_line)
    assert 'value: "FP32"' in triton_config(plain, "tagger", target="tensorrt")
    assert "optimization" not in triton_config(int8, "tagger", target="cuda")
    files = write_repository(int8, tmp_path, "tagger", target="tensorrt")
    assert open(files[0]).read() == _TRITON_INT8
    assert any(p.key == "graphfix.int8" for p in onnx.load(files[-1]).metadata_props)
    from test_serving import _parse_config  # Triton's own ModelConfig schema (skipped without tritonclient)

    config, _ = _parse_config(_TRITON_INT8)
    (acc,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and dict(acc.parameters)["precision_mode"] == "INT8"


# --- C16 oracle on a Q/DQ model: tensorrt_rtx, else the standard tensorrt (which needs a GPU) ------------------------


def _fake_tensorrt(calls: dict, *, strongly_typed: bool = True, builder_error: Exception | None = None):
    """A stand-in `tensorrt` module recording what the oracle asks of it (the real one needs a GPU)."""
    import types

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.9.0" if strongly_typed else "8.6.1"

    class Logger:
        ERROR = 1

        def __init__(self, level):
            pass

    class Tensor:
        name, shape = "data", (-1, 3, 8, 8)

    class Network:
        num_inputs, num_layers = 1, 11

        def get_input(self, i):
            return Tensor()

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return True

    class Config:
        def set_flag(self, flag):
            calls.setdefault("builder_flags", []).append(flag)

        def add_optimization_profile(self, profile):
            pass

    class Profile:
        def set_shape(self, name, lo, mid, hi):
            calls["profile"] = (name, lo, mid, hi)

    class Builder:
        def __init__(self, logger):
            if builder_error is not None:
                raise builder_error

        def create_network(self, flags):
            calls["network_flags"] = flags
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return memoryview(b"\0" * 2048)

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.BuilderFlag = type("BuilderFlag", (), {"INT8": 2})
    if strongly_typed:
        trt.NetworkDefinitionCreationFlag = type("NetworkDefinitionCreationFlag", (), {"EXPLICIT_BATCH": 0,
                                                                                       "STRONGLY_TYPED": 1})
    return trt


def _oracle(monkeypatch, proto, **fake):
    import sys

    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # `import tensorrt_rtx` fails
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(calls, **fake) if fake.pop("installed", True) else None)
    return check(Model.from_proto(proto), target="tensorrt", build=True), calls


def test_oracle_builds_a_qdq_model_strongly_typed_with_tensorrt(monkeypatch):
    report, calls = _oracle(monkeypatch, qdq_net())
    assert report.ok, report.text()
    assert calls["network_flags"] == 1 << 1 and "builder_flags" not in calls  # STRONGLY_TYPED, no INT8 flag
    assert calls["profile"] == ("data", [1, 3, 8, 8], [8, 3, 8, 8], [32, 3, 8, 8])
    assert {k: report.build[k] for k in ("status", "engine_bytes", "backend", "quantized", "version")} == {
        "status": "ok", "engine_bytes": 2048, "backend": "TensorRT",
        "quantized": {"QuantizeLinear": 2, "DequantizeLinear": 3}, "version": "10.9.0"}


def test_oracle_tensorrt_8_sets_the_int8_flag(monkeypatch):
    _, calls = _oracle(monkeypatch, qdq_net(), strongly_typed=False)
    assert calls["network_flags"] == 0 and calls["builder_flags"] == [2]


def test_oracle_without_a_gpu_is_a_clean_skip(monkeypatch):
    report, calls = _oracle(monkeypatch, qdq_net(), builder_error=RuntimeError("CUDA initialization failure with "
                                                                                "error: 35"))
    assert report.ok and "parsed" not in calls
    assert report.build == {"status": "skipped", "detail": "TensorRT builder: CUDA initialization failure with error: 35",
                            "backend": "TensorRT", "quantized": {"QuantizeLinear": 2, "DequantizeLinear": 3}}
    assert [f.line() for f in report.findings if f.id == "C16"] == [
        "INFO C16 oracle-skipped: TensorRT oracle skipped: the builder did not start (CUDA initialization failure with "
        "error: 35)"]


def test_oracle_skips_without_tensorrt(monkeypatch):
    report, _ = _oracle(monkeypatch, qdq_net(), installed=False)
    assert report.build == {"status": "skipped", "detail": "tensorrt_rtx / tensorrt not installed"}
    # a model without Q/DQ keeps the TensorRT-RTX-only oracle, even where tensorrt is installed
    report, calls = _oracle(monkeypatch, M.bn_cnn())
    assert report.build == {"status": "skipped", "detail": "tensorrt_rtx not installed"} and not calls
