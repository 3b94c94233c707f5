"""C16 with TensorRT-RTX (graphfix[trt]): parse and build an engine on CPU. Skipped when absent."""

from __future__ import annotations

import pytest

import _export_models as M
from graphfix.convert.check import check
from graphfix.convert.export import export
from graphfix.model import Model

pytest.importorskip("tensorrt_rtx")


def test_exported_model_builds(tmp_path):
    for fp16 in (False, True):
        result = export(Model.from_proto(M.swapped()), tmp_path / f"m{int(fp16)}.onnx", fp16=fp16, max_batch=16)
        report = check(result.path, build=True)
        assert report.ok, report.text()
        assert report.build["status"] == "ok" and report.build["engine_bytes"] > 0
        assert report.build["profile"]["data"][2][0] == 16


@pytest.mark.parametrize("name", ["maxpool_indices", "resize_tf_crop_and_resize"])
def test_bad_models_fail_to_parse(name, save):
    report = check(save(M.BAD_MODELS[name][0]()), build=True)
    assert "C16" in report.ids("FAIL"), report.text()


def test_qdq_model_builds(tmp_path):
    """What onnxruntime's quantize_static writes with the TensorRT options (C17 clean) builds."""
    from test_check_qdq import _quantize

    path = _quantize(tmp_path, nodes_to_exclude=["graphfix_head", "graphfix_sigmoid"], extra={"QuantizeBias": False})
    report = check(path, build=True)
    assert report.ok and report.build["status"] == "ok", report.text()
    assert report.build["backend"] == "TensorRT-RTX" and report.build["engine_bytes"] > 0
    assert report.build["quantized"] == {"QuantizeLinear": 5, "DequantizeLinear": 6}
