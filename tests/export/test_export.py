"""export(): every good model exports, checks without FAIL and passes parity; the API contract."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

import _export_models as M
from graphfix.convert.export import export
from graphfix.errors import GraphfixError
from graphfix.model import Model, load_onnx


def _assert_exported(result, fp16: bool) -> None:
    assert result.parity is not None and result.parity["ok"], result.parity
    assert result.report is not None and result.report.ok, result.report.text()
    model = load_onnx(result.path)
    assert model.opset == 17 and 8 <= model.ir.ir_version <= 10
    ops = set(model.op_histogram())
    assert not ops & {"Dropout", "Identity", "BatchNormalization", "Shape", "Upsample"}, ops
    if fp16:
        assert any(v.dtype is not None and v.dtype.name == "FLOAT16" for v in model.ir.graph.initializers.values())
    for value in model.ir.graph.inputs:
        dims = list(value.shape)
        assert not isinstance(dims[0], int) and all(isinstance(d, int) for d in dims[1:])


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("name", sorted(M.GOOD_MODELS))
def test_good_models_export(name, fp16, tmp_path):
    src = Model.from_proto(M.GOOD_MODELS[name]())
    result = export(src, tmp_path / "out.onnx", target="tensorrt", fp16=fp16)
    _assert_exported(result, fp16)




@pytest.mark.torch
@pytest.mark.parametrize("name", ["torch_view_opset17", "torch_view_opset11"])
def test_torch_models_export(torch_models, name, tmp_path):
    for fp16 in (False, True):
        result = export(load_onnx(torch_models[name]), tmp_path / f"out{int(fp16)}.onnx", fp16=fp16)
        _assert_exported(result, fp16)
        assert "Flatten" in load_onnx(result.path).op_histogram()


@pytest.mark.torch
@pytest.mark.slow
def test_torch_dynamo_export(torch_dynamo_model, tmp_path):
    source = load_onnx(torch_dynamo_model)
    assert source.opset == 18 and "Shape" in source.op_histogram()
    result = export(source, tmp_path / "out.onnx")
    _assert_exported(result, fp16=False)
    assert result.parity["outputs"]["prob"]["max_abs_diff"] <= 1e-5


def test_export_keeps_metadata_and_input_untouched(tmp_path):
    src = Model.from_proto(M.swapped())
    before = src.to_bytes()
    result = export(src, tmp_path / "out.onnx", max_batch=16)
    assert src.to_bytes() == before
    out = load_onnx(result.path)
    assert out.ir.metadata_props["graphfix.labels"] == '["a","b","c","d","e","f"]'
    assert '"max_batch":16' in out.ir.metadata_props["graphfix.export"]
    assert out.output_names == ["logits", "probabilities", "labels"]


def test_export_is_deterministic(tmp_path):
    for fp16 in (False, True):
        a = export(Model.from_proto(M.bn_cnn()), tmp_path / "a.onnx", fp16=fp16, check=False)
        b = export(Model.from_proto(M.bn_cnn()), tmp_path / "b.onnx", fp16=fp16, check=False)
        assert open(a.path, "rb").read() == open(b.path, "rb").read()


def test_export_fixed_batch(tmp_path):
    result = export(Model.from_proto(M.view_head()), tmp_path / "out.onnx", batch=4)
    out = load_onnx(result.path)
    assert list(out.ir.graph.inputs[0].shape)[0] == 4
    assert list(out.ir.graph.outputs[0].shape) == [4, 5]


def test_export_cpu_and_cuda_targets(tmp_path):
    for target in ("cpu", "cuda"):
        result = export(Model.from_proto(M.swapped()), tmp_path / f"{target}.onnx", target=target)
        assert result.ok and result.report.ok


def test_export_external_data_stays_relative(tmp_path):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    proto = M.bn_cnn()
    onnx.save(proto, str(src_dir / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    result = export(load_onnx(src_dir / "m.onnx"), out_dir / "e.onnx")
    assert result.ok, result.report.text()
    stored = onnx.load(result.path, load_external_data=False)
    locations = {e.value for t in stored.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"e.onnx.data"}
    assert os.path.exists(out_dir / "e.onnx.data")
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = Model.from_proto(M.bn_cnn()).run(x)["prob"]  # onnx.save turned `proto` external
    got = load_onnx(result.path).run(x)["prob"]
    assert np.abs(ref - got).max() <= 1e-5


def test_export_sample_inputs_are_used(tmp_path):
    """The command's own data wins: parity is judged on it alone."""
    feeds = {"data": np.ones((3, 3, 8, 8), np.float32)}
    result = export(Model.from_proto(M.swapped()), tmp_path / "out.onnx", sample_inputs=feeds)
    assert result.parity["runs"] == ["sample 0"] and result.parity["inputs"] == "3 given input rows"


def test_export_parity_failure_writes_nothing(tmp_path, monkeypatch):
    import graphfix.convert.export._parity as parity

    monkeypatch.setattr(parity, "FP32_RTOL", -1.0)
    with pytest.raises(GraphfixError) as info:
        export(Model.from_proto(M.bn_cnn()), tmp_path / "out.onnx")
    assert info.value.kind == "parity" and info.value.exit_code == 1
    assert info.value.result.parity["ok"] is False
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize(("name", "kind"), [("training_dropout", "not_ready"), ("second_dynamic_dim", "usage"),
                                          ("string_tensor", "not_ready")])
def test_export_refuses_undeployable_models(name, kind):
    """A model that cannot be deployed is not_ready (exit 1); a missing --input-shape is usage (exit 2)."""
    with pytest.raises(GraphfixError) as info:
        export(Model.from_proto(M.BAD_MODELS[name][0]()), None)
    assert info.value.kind == kind


def test_export_bad_models_that_export_report_findings():
    result = export(Model.from_proto(M.bad_maxpool_indices()), None)
    assert not result.report.ok and "C6" in result.report.ids("FAIL")
    result = export(Model.from_proto(M.bad_upsample()), None)
    assert result.report.ok and "Resize" in result.model.op_histogram()


def test_export_fp16_overflow_is_reported():
    from onnx import TensorProto, helper

    from graphfix.convert._onnx import make_model

    nodes = [helper.make_node("Mul", ["data", "big"], ["m"], name="scale"),
             helper.make_node("Relu", ["m"], ["out"], name="relu")]
    inits = [helper.make_tensor("big", TensorProto.FLOAT, [2], [1e5, 1.0])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])], inits)
    result = export(Model.from_proto(make_model(graph)), None, fp16=True)
    assert result.notes["fp16_overflow_kept_fp32"][0]["node"] == "scale"
    assert result.parity["ok"]
