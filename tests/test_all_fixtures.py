"""Every whole-model fixture (ONNX, MXNet, Caffe) converts to a model that passes onnx.checker."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import graphfix as gf
from tests.conftest import FIXTURES


def _models() -> list[tuple[str, Path, dict]]:
    out = [(p.stem, p, {}) for p in sorted((FIXTURES / "onnx").glob("*.onnx"))]
    out += [(p.parent.name, p, {}) for p in sorted((FIXTURES / "mxnet").glob("*/*-symbol.json"))]
    for proto in sorted((FIXTURES / "caffe").glob("**/*.prototxt")):
        weights = proto.with_suffix(".caffemodel")
        if weights.exists():
            out.append((proto.stem, proto, {"weights": weights}))
    return out


@pytest.mark.parametrize(("name", "path", "kwargs"), _models(), ids=[m[0] for m in _models()])
def test_converted_fixture_passes_full_check(name, path, kwargs, tmp_path):
    model = gf.load(path, **kwargs)
    out = tmp_path / "m.onnx"
    model.save(out)
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out))
    assert 8 <= proto.ir_version <= 10
    for value in proto.graph.input:
        dims = value.type.tensor_type.shape.dim
        assert dims and (dims[0].dim_param or dims[0].dim_value), f"input {value.name} has no batch dim"
