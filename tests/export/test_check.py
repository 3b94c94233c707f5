"""check(): the C1-C16 checklist on good, exported and deliberately bad models."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import _export_models as M
from graphfix.convert._onnx import make_model
from graphfix.convert.check import CHECKS, check
from graphfix.convert.check.cuda import load_kernel_table
from graphfix.model import Model


@pytest.mark.parametrize("name", sorted(M.BAD_MODELS))
def test_bad_models_get_the_right_finding(name, save):
    builder, check_id, severity, rule = M.BAD_MODELS[name]
    report = check(save(builder()), target="tensorrt")
    hits = [f for f in report.findings if f.id == check_id and f.rule == rule]
    assert hits, report.text()
    assert hits[0].severity == severity
    assert hits[0].fix and hits[0].message
    assert report.ok == (severity != "FAIL" and not report.failures)
    json.dumps(report.to_dict())


@pytest.mark.parametrize("name", sorted(M.GOOD_MODELS))
def test_good_models_have_no_fail(name):
    report = check(Model.from_proto(M.GOOD_MODELS[name]()), target="tensorrt")
    assert report.ok, report.text()


def test_report_shape():
    report = check(Model.from_proto(M.view_head()))
    doc = report.to_dict()
    assert set(doc) >= {"ok", "target", "checks", "counts", "findings"}
    assert doc["checks"] == [c for c in CHECKS if c != "C16"]
    assert {"C9", "C11"} <= report.ids()
    for finding in doc["findings"]:
        assert set(finding) == {"id", "severity", "rule", "node", "message", "fix"}


def test_c2_c3_ir_and_opset():
    proto = M.bn_cnn()
    proto.ir_version = 14
    report = check(Model.from_proto(proto))
    assert "C2" in report.ids("FAIL")
    report = check(Model.from_proto(M.bad_upsample()), target="tensorrt")
    assert "C3" not in report.ids("FAIL")  # opset 9 is inside TensorRT's 9..24


def test_c4_custom_domain():
    nodes = [helper.make_node("FusedConv", ["data", "w"], ["out"], name="fc", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 4, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, 4, 4])],
                              [numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")])
    proto = make_model(graph)
    proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert "C4" in check(Model.from_proto(proto), target="tensorrt").ids("FAIL")
    assert "C4" not in check(Model.from_proto(proto), target="cuda").ids("FAIL")


def test_c5_unsupported_op():
    nodes = [helper.make_node("Det", ["data"], ["out"], name="det")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N"])])
    report = check(Model.from_proto(make_model(graph)), target="tensorrt")
    assert "C5" in report.ids("FAIL")


def test_c13_hygiene_warnings():
    nodes = [helper.make_node("Add", ["data", "bias"], ["r1"]), helper.make_node("Relu", ["r1"], ["out"])]
    inits = [numpy_helper.from_array(np.ones(3, np.float32), "bias"),
             numpy_helper.from_array(np.ones(3, np.float32), "unused")]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], inits)
    report = check(Model.from_proto(make_model(graph)))
    rules = {f.rule for f in report.findings if f.id == "C13"}
    assert {"node-names", "initializer-inputs", "unused-initializers"} <= rules


def test_c12_external_data_checks(tmp_path):
    proto = M.bn_cnn()
    onnx.save(proto, str(tmp_path / "m.onnx"), save_as_external_data=True, location="m.onnx.data",
              size_threshold=0)
    report = check(str(tmp_path / "m.onnx"))
    assert report.ok and "C12" in report.ids("INFO")
    (tmp_path / "m.onnx.data").unlink()
    report = check(str(tmp_path / "m.onnx"))
    assert "C12" in report.ids("FAIL")


def _overflowing_model():
    nodes = [helper.make_node("Mul", ["data", "k"], ["a"], name="mul1"),
             helper.make_node("Mul", ["a", "k"], ["b"], name="mul2"),
             helper.make_node("Relu", ["b"], ["out"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(np.full(4, 300.0, np.float32), "k")])
    return make_model(graph)


def test_c14_activation_probe_fp32_and_fp16():
    from graphfix.convert.export import export

    feeds = {"data": np.full((2, 4), 5.0, np.float32)}
    report = check(Model.from_proto(_overflowing_model()), sample_inputs=feeds)
    assert any(f.id == "C14" and f.rule == "fp16-range" and f.severity == "WARN" for f in report.findings)
    assert report.probe["max_abs"] == pytest.approx(450000.0)
    result = export(Model.from_proto(_overflowing_model()), None, fp16=True, verify=False, sample_inputs=feeds)
    assert "C14" in result.report.ids("FAIL")


def test_c14_detects_onnxconverter_clamp():
    nodes = [helper.make_node("Cast", ["data"], ["h"], name="to16", to=TensorProto.FLOAT16),
             helper.make_node("Mul", ["h", "k"], ["m"], name="mul"),
             helper.make_node("Cast", ["m"], ["out"], name="to32", to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.array([1e4, -1e4, 1.0], np.float16), "k")])
    report = check(Model.from_proto(make_model(graph)))
    assert any(f.rule == "fp16-1e4" for f in report.findings)


def test_c15_cuda_kernel_table():
    table = load_kernel_table()
    assert table["commit"] and "OperatorKernels.md" in table["source"]
    assert "Conv" in table["ops"] and "Mean" not in table["ops"]
    nodes = [helper.make_node("Mean", ["data", "data"], ["out"], name="mean")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])])
    report = check(Model.from_proto(make_model(graph)), target="cuda")
    assert any(f.id == "C15" and f.severity == "WARN" for f in report.findings)
    clip11 = helper.make_graph(
        [helper.make_node("Clip", ["data"], ["out"], name="clip", min=0.0, max=6.0)], "g",
        [helper.make_tensor_value_info("data", TensorProto.DOUBLE, ["N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.DOUBLE, ["N", 3])])
    report = check(Model.from_proto(make_model(clip11, opset=10)), target="cuda")
    assert any(f.id == "C15" and "f64" in f.message for f in report.findings)


def test_c16_skipped_without_tensorrt_rtx(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "tensorrt_rtx":
            raise ImportError("no tensorrt_rtx")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    report = check(Model.from_proto(M.bn_cnn()), build=True)
    assert report.build == {"status": "skipped", "detail": "tensorrt_rtx not installed"}
    assert report.ok and "C16" in report.ids("INFO")


def test_unsorted_model_is_checked_not_crashed():
    nodes = [helper.make_node("Relu", ["r1"], ["out"], name="relu"),
             helper.make_node("Add", ["data", "bias"], ["r1"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])],
                              [numpy_helper.from_array(np.ones(3, np.float32), "bias")])
    report = check(Model.from_proto(make_model(graph)))
    assert any(f.id == "C13" and f.rule == "toposort" for f in report.findings)
    from graphfix.convert.export import export

    result = export(Model.from_proto(make_model(graph)), None)
    assert result.ok and [n.op_type for n in result.model.ir.graph] == ["Add", "Relu"]
