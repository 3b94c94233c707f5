"""Shared test helpers: fixture paths, CLI runner, feature exposure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
ONNX_FIXTURES = json.loads((FIXTURES / "onnx" / "fixtures.json").read_text())


def onnx_fixture(name: str) -> Path:
    return FIXTURES / "onnx" / ONNX_FIXTURES[name]["file"]


def run_cli(*args: str, cwd: str | os.PathLike | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m graphfix.cli ARGS` and return the completed process (text mode)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "graphfix.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout,
    )


def with_outputs(model, names: list[str]):
    """A copy of `model` whose graph also outputs the tensors `names`."""
    from graphfix.model import Model

    work = model.copy()
    values = {v.name: v for n in work.ir.graph for v in n.outputs}
    for name in names:
        if values[name] not in work.ir.graph.outputs:
            work.ir.graph.outputs.append(values[name])
    return Model(work.ir)


def random_input(model, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random float inputs for every graph input (symbolic dims -> `batch`)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for v in model.ir.graph.inputs:
        if v.name in model.ir.graph.initializers:
            continue
        shape = [d if isinstance(d, int) else batch for d in v.shape]
        shape[0] = batch
        feeds[v.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


__all__ = ["ROOT", "FIXTURES", "ONNX_FIXTURES", "onnx_fixture", "run_cli", "with_outputs", "random_input", "ir"]


@pytest.fixture
def no_model_runs(monkeypatch) -> list:
    """onnxruntime.InferenceSession patched to fail: a test that some refusal comes before any
    model runs. Returns the list of attempted sessions (empty if none ran)."""
    import onnxruntime

    attempts: list = []

    def no_session(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("a model ran")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_session)
    return attempts
