"""Hostile or broken ONNX tensor data is refused before anything is read."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import graphfix as gf
from graphfix.convert._onnx import make_model
from tests.conftest import run_cli


def _model_with_external(tmp_path, location: str, offset: int = 0, length: int | None = 64, dims=(4, 4)) -> str:
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=list(dims))
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", str(offset)), ("length", None if length is None else str(length))):
        if v is not None:
            e = w.external_data.add()
            e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
                           helper.make_node("Softmax", ["y"], ["p"], axis=1, name="sm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])], [w])
    path = tmp_path / "m.onnx"
    path.write_bytes(make_model(g).SerializeToString())
    return str(path)


@pytest.mark.parametrize(
    ("location", "needle"),
    [("../../etc/passwd", "leaves the model's folder"), ("/etc/passwd", "absolute"), ("missing.bin", "not found")],
)
def test_external_data_location_refused(tmp_path, location, needle):
    path = _model_with_external(tmp_path, location)
    out = tmp_path / "out.onnx"
    res = run_cli("swap-head", path, "--labels", "3", "-o", out)
    assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_symlink_out_of_folder_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())
    inner = tmp_path / "model"
    inner.mkdir()
    os.symlink(outside / "w.bin", inner / "w.bin")
    path = _model_with_external(inner, "w.bin")
    with pytest.raises(gf.GraphfixError, match="resolves outside"):
        gf.load(path)


def test_external_range_and_length_checked(tmp_path):
    (tmp_path / "w.bin").write_bytes(np.ones(16, np.float32).tobytes())
    with pytest.raises(gf.GraphfixError, match="exceeds"):
        gf.load(_model_with_external(tmp_path, "w.bin", offset=32, length=64))
    with pytest.raises(gf.GraphfixError, match="declare"):
        gf.load(_model_with_external(tmp_path, "w.bin", length=32))
    # a 10^12-element tensor declared against a 64-byte file
    with pytest.raises(gf.GraphfixError, match="declare"):
        gf.load(_model_with_external(tmp_path, "w.bin", dims=(10**6, 10**6)))


def test_valid_external_data_loads_and_saves_elsewhere(tmp_path):
    w = np.arange(16, dtype=np.float32).reshape(4, 4)
    (tmp_path / "w.bin").write_bytes(w.tobytes())
    model = gf.load(_model_with_external(tmp_path, "w.bin"))
    other = tmp_path / "other"
    other.mkdir()
    new = gf.swap_head(model, labels=2, features="x")
    new.save(other / "s.onnx")
    onnx.checker.check_model(str(other / "s.onnx"), full_check=True)
    x = np.ones((1, 4), np.float32)
    assert gf.load(other / "s.onnx").run({"x": x})["logits"].shape == (1, 2)


def test_inline_raw_data_length_checked(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.raw_data = w.raw_data[:-4]
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    path = tmp_path / "m.onnx"
    path.write_bytes(make_model(g).SerializeToString())
    with pytest.raises(gf.GraphfixError, match="raw data holds 60 bytes"):
        gf.load(path)
