"""Shared fixtures for the export/check tests: small models written to temp files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import _export_models as _models  # noqa: E402


@pytest.fixture
def save(tmp_path):
    """save(proto, name) -> path of the proto written under tmp_path."""
    import onnx

    def _save(proto, name: str = "model.onnx") -> str:
        path = tmp_path / name
        onnx.save(proto, str(path))
        return str(path)

    return _save


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory):
    """Paths of torch-exported models (skipped when torch is missing): name -> path."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("torch")
    return {
        "torch_view_opset17": _models.torch_view_net(str(folder / "view17.onnx"), opset=17),
        "torch_view_opset11": _models.torch_view_net(str(folder / "view11.onnx"), opset=11),
    }


@pytest.fixture(scope="session")
def torch_dynamo_model(tmp_path_factory):
    """A torch.onnx dynamo export (opset 18, external data, `sym_size` view chain)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    folder = tmp_path_factory.mktemp("dynamo")
    return _models.torch_view_net(str(folder / "dynamo.onnx"), opset=18, dynamo=True)
