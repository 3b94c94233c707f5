"""The train-head, calibrate and predict commands end to end (subprocess), and their errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def gf(*args: str, env_cache: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "GRAPHFIX_CACHE": str(env_cache)}
    proc = subprocess.run([sys.executable, "-m", "graphfix.cli", *args], capture_output=True, text=True, env=env, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr}\n{proc.stdout}")
    return proc


@pytest.fixture
def tiny_files(tmp_path, tiny_model, make):
    from PIL import Image

    model_path = tmp_path / "swapped.onnx"
    tiny_model.save(model_path)
    x, y = make(tiny_model, 160)
    np.savez(tmp_path / "train.npz", x=x[:100], y=y[:100])
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    rows = ["path,labels"]
    for i in range(30):
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png," + ";".join(n for j, n in enumerate(tiny_model.labels) if (i >> j) & 1))
    (tmp_path / "heldout.csv").write_text("\n".join(rows) + "\n")
    np.savez(tmp_path / "test.npz", x=x[100:], y=y[100:])
    return tmp_path


def test_train_calibrate_predict(tiny_files):
    d = tiny_files
    cache = d / "cache"
    res = gf("train-head", str(d / "swapped.onnx"), "--train", str(d / "train.npz"), "--val", str(d / "test.npz"),
             "-o", str(d / "trained.onnx"), "--json", env_cache=cache)
    doc = json.loads(res.stdout)
    hist = doc["history"]
    assert doc["ok"] and hist["settings"]["loss"] == "bce" and hist["selected_by"] == "validation mAP"
    assert hist["converged"] and hist["grad_norm"] <= 1e-6 and len(hist["cv"]) >= 3
    res = gf("calibrate", str(d / "trained.onnx"), "--heldout", str(d / "heldout.csv"), "--train", str(d / "train.npz"),
             "--test", str(d / "test.npz"), "--objective", "f2", "--report", str(d / "rep"), "--at-least-one",
             "-o", str(d / "cal.onnx"), "--json", env_cache=cache)
    doc = json.loads(res.stdout)
    assert doc["thresholds"]["objective"] == "f2" and len(doc["thresholds"]["thresholds"]) == 4
    assert set(doc["metrics"]) == {"heldout", "test"}
    for name in ("report.json", "per_class.csv", "per_class.md", "pr_curves.png"):
        assert (d / "rep" / name).is_file()
    rep = json.loads((d / "rep" / "report.json").read_text())
    assert "mAP" in rep["definitions"] and rep["splits"]["test"]["tuned"]["per_class"]
    res = gf("predict", str(d / "cal.onnx"), str(d / "img"), str(d / "test.npz"), "--json", env_cache=cache)
    doc = json.loads(res.stdout)
    assert doc["rule"] == "thresholds" and len(doc["predictions"]) == 30 + 60
    assert all(p["labels"] for p in doc["predictions"])  # --at-least-one
    res = gf("predict", str(d / "cal.onnx"), str(d / "img" / "0.png"), "--scores", env_cache=cache)
    assert res.stdout.startswith(str(d / "img" / "0.png") + ":")
    # same inputs -> byte-identical model
    gf("train-head", str(d / "swapped.onnx"), "--train", str(d / "train.npz"), "--val", str(d / "test.npz"),
       "-o", str(d / "trained2.onnx"), "-q", "--no-cache", env_cache=cache)
    assert (d / "trained.onnx").read_bytes() == (d / "trained2.onnx").read_bytes()


def test_errors_exit_2(tiny_files):
    d = tiny_files
    cache = d / "cache"
    (d / "bad.csv").write_text("path,labels\nimg/0.png,c0;nosuch\n")
    res = gf("calibrate", str(d / "swapped.onnx"), "--untrained", "--heldout", str(d / "bad.csv"), "-o", str(d / "o.onnx"),
             env_cache=cache, check=False)
    assert res.returncode == 2 and "unknown label 'nosuch'" in res.stderr and res.stderr.startswith("graphfix: error:")
    (d / "missing.csv").write_text("path,labels\nimg/none.png,c0\n")
    res = gf("calibrate", str(d / "swapped.onnx"), "--untrained", "--heldout", str(d / "missing.csv"), "-o", str(d / "o.onnx"),
             env_cache=cache, check=False)
    assert res.returncode == 2 and "image not found" in res.stderr
    res = gf("calibrate", str(d / "swapped.onnx"), "--untrained", "--heldout", str(d / "test.npz"), "--objective", "auc",
             "-o", str(d / "o.onnx"), env_cache=cache, check=False)
    assert res.returncode == 2 and "unknown objective" in res.stderr
    res = gf("predict", str(d / "swapped.onnx"), str(d / "nope.png"), env_cache=cache, check=False)
    assert res.returncode == 2 and "image not found" in res.stderr
    res = gf("train-head", str(d / "swapped.onnx"), "--train", str(d / "absent.npz"), env_cache=cache, check=False)
    assert res.returncode == 2 and "no such data set file" in res.stderr


def test_predict_without_thresholds_warns(tiny_files):
    d = tiny_files
    res = gf("predict", str(d / "swapped.onnx"), str(d / "img" / "1.png"), env_cache=d / "cache")
    assert "the head is untrained" in res.stderr  # tests/test_state.py has the exact lines


@pytest.mark.slow
@pytest.mark.torch
def test_digit_mosaics_end_to_end(tmp_path):
    """The public benchmark, small: tuned thresholds beat 0.5 on test macro-F1."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("digit_mosaics", ROOT / "benchmarks" / "digit_mosaics.py")
    dm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dm)
    paths = dm.generate(tmp_path, n_train=1500, n_heldout=800, n_test=800, cnn_epochs=6)
    env = {**os.environ, "GRAPHFIX_CACHE": str(tmp_path / "cache")}
    docs = dm.run_pipeline(tmp_path, paths, env=env)
    test = docs["calibrate"]["metrics"]["test"]
    assert test["tuned"]["macro_f1"] > test["at_0.5"]["macro_f1"]
    assert test["tuned"]["mAP"] > 0.6
    assert len(docs["predict"]["predictions"]) == 5
    assert (tmp_path / "report-bce" / "pr_curves.png").is_file()


def test_calibrate_pools_out_of_fold_scores_for_few_heldout_positives(tiny_files, tiny_model, make):
    """calibrate --train --oof-below 10: a class with < 10 held-out positives gets its threshold from
    its held-out and out-of-fold training scores; the text, the JSON and graphfix.calibration say
    so. Without --oof-below (default 0) the thresholds stay on the held-out scores."""
    import graphfix as gf_api

    d = tiny_files
    cache = d / "cache"
    x, y = make(tiny_model, 160)
    yh = y[100:].copy()
    yh[:, 0] = 0
    yh[:4, 0] = 1  # 4 held-out positives of c0
    np.savez(d / "few.npz", x=x[100:], y=yh)
    gf("train-head", str(d / "swapped.onnx"), "--train", str(d / "train.npz"), "--loss", "bce", "-o", str(d / "t.onnx"),
       "-q", env_cache=cache)
    res = gf("calibrate", str(d / "t.onnx"), "--heldout", str(d / "few.npz"), "--train", str(d / "train.npz"),
             "--oof-below", "10", "-o", str(d / "c.onnx"), env_cache=cache)
    assert "  1 with < 10 held-out positives, fitted on held-out + out-of-fold training scores: c0 (4)\n" in res.stdout
    res = gf("calibrate", str(d / "t.onnx"), "--heldout", str(d / "few.npz"), "--train", str(d / "train.npz"),
             "--oof-below", "10", "-o", str(d / "c.onnx"), "--json", env_cache=cache)
    per = json.loads(res.stdout)["thresholds"]["per_class"]
    assert [c["source"] for c in per] == ["heldout+oof"] + ["heldout"] * 3
    assert per[0]["reason"].startswith("4 held-out positives (< 10); fitted on them and ")
    stored = gf_api.load(d / "c.onnx").metadata["calibration"]
    assert stored["sources"] == {"heldout": 3, "heldout+oof": 1} and stored["heldout+oof"] == ["c0"]
    res = gf("calibrate", str(d / "t.onnx"), "--heldout", str(d / "few.npz"), "--train", str(d / "train.npz"),
             "-o", str(d / "c0.onnx"), "--json", env_cache=cache)
    assert {c["source"] for c in json.loads(res.stdout)["thresholds"]["per_class"]} == {"heldout"}
