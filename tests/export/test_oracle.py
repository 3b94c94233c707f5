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
