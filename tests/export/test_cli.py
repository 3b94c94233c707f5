"""`graphfix export` and `graphfix check` end to end: exit codes and the --json document."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import _export_models as M
from _export_models import REPO


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "graphfix.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_export_json_and_check(save, tmp_path):
    src = save(M.swapped(), "swapped.onnx")
    out = str(tmp_path / "out.onnx")
    proc = _cli("export", src, "--target", "tensorrt", "--fp16", "--max-batch", "16", "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is True and doc["path"] == out
    assert doc["parity"]["ok"] and doc["parity"]["outputs"]["probabilities"]["max_abs_diff"] <= 1e-2
    assert doc["report"]["ok"] and doc["options"]["fp16"] is True
    assert [p["name"] for p in doc["passes"]][0] == "fold_constants"
    proc = _cli("check", out, "--target", "tensorrt", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True
    proc = _cli("check", out, "--target", "cuda")
    assert proc.returncode == 0 and "READY for cuda" in proc.stdout


def test_check_not_ready_exits_1(save):
    src = save(M.bad_maxpool_indices(), "bad.onnx")
    proc = _cli("check", src, "--json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False
    assert any(f["id"] == "C6" and f["rule"] == "maxpool-indices" for f in doc["findings"])
    assert "not ready for tensorrt" in proc.stderr


def test_export_not_ready_and_usage_errors(save, tmp_path):
    src = save(M.bad_training_dropout(), "drop.onnx")
    proc = _cli("export", src, "-o", str(tmp_path / "o.onnx"), "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"]["kind"] == "not_ready"
    good = save(M.bn_cnn(), "good.onnx")
    assert _cli("export", good, "--batch", "0", "-o", str(tmp_path / "x.onnx")).returncode == 2
    assert _cli("export", good, "--opset", "12", "-o", str(tmp_path / "x.onnx")).returncode == 2
    assert _cli("export", good, "-o", good).returncode == 2
    assert _cli("check", str(tmp_path / "missing.onnx")).returncode == 2


def test_export_default_output_and_text(save):
    src = save(M.view_head(), "net.onnx")
    proc = _cli("export", src, "--target", "cuda")
    assert proc.returncode == 0, proc.stderr
    assert os.path.exists(src.replace(".onnx", "-cuda.onnx"))
    assert "parity (fp32" in proc.stdout and "READY for cuda" in proc.stdout


def test_export_parity_failure_exits_1_with_figures(save, tmp_path, monkeypatch, capsys):
    import graphfix.convert.export._parity as parity
    from graphfix.cli import main

    monkeypatch.setattr(parity, "FP32_RTOL", -1.0)
    src = save(M.bn_cnn(), "p.onnx")
    out = tmp_path / "out.onnx"
    code = main(["export", src, "-o", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 1 and not out.exists()
    doc = json.loads(captured.out)
    assert doc["ok"] is False and doc["error"]["kind"] == "parity"
    assert doc["parity"]["outputs"]["prob"]["ok"] is False
    assert "parity failed" in captured.err


@pytest.mark.parametrize("flag", ["--no-verify", "--inputs"])
def test_export_options(save, tmp_path, flag):
    import numpy as np

    src = save(M.swapped(), "s.onnx")
    extra = [flag]
    if flag == "--inputs":
        npz = tmp_path / "x.npz"
        np.savez(npz, data=np.ones((2, 3, 8, 8), np.float32))
        extra.append(str(npz))
    proc = _cli("export", src, "-o", str(tmp_path / "o.onnx"), "--json", *extra)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["parity"] is None) == (flag == "--no-verify")


def test_export_for_cpu_says_cpu(save):
    src = save(M.view_head(), "net.onnx")
    proc = _cli("export", src, "--target", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "READY for cpu" in proc.stdout and "for cuda" not in proc.stdout
