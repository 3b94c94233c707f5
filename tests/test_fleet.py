"""Fleet conversion: a folder of mixed models with broken ones, one command, a clear summary."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import onnx

from tests.conftest import FIXTURES, ROOT, run_cli


_spec = importlib.util.spec_from_file_location("bench_fleet", ROOT / "benchmarks" / "bench_fleet.py")
bench_fleet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_fleet)
_make_fleet = bench_fleet.make_fleet


def test_fleet_summary_counts_and_rerun_skips(tmp_path):
    src, out = tmp_path / "models", tmp_path / "out"
    n = _make_fleet(src, 27, 3)
    res = run_cli("convert", src, "-o", out, "--recursive", "--jobs", "2", "--json", timeout=900)
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["counts"]["ok"] == n and doc["counts"]["failed"] == 3, json.dumps(doc["models"], indent=1)[:3000]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == doc["counts"]
    failed = [m for m in doc["models"] if m["result"]["result"] == "failed"]
    assert all(m["result"]["error"] and "\n" not in m["result"]["error"] for m in failed)
    # outputs mirror the folder layout and are valid models
    for m in doc["models"]:
        if m["result"]["result"] == "ok":
            rel = Path(m["model"]).parent.relative_to(src)
            assert Path(m["output"]).parent == out / rel
            onnx.checker.check_model(m["output"])
    assert not list(out.rglob("*.tmp"))
    # a re-run skips what is up to date; --force redoes one
    res = run_cli("convert", src, "-o", out, "--recursive", "--json")
    doc = json.loads(res.stdout)
    assert doc["counts"]["skipped"] == n and doc["counts"]["failed"] == 3


def test_fleet_needs_output_folder(tmp_path):
    res = run_cli("convert", FIXTURES / "onnx")
    assert res.returncode == 2 and "-o OUTDIR" in res.stderr


def test_single_convert_verify_onnx(tmp_path):
    res = run_cli("convert", FIXTURES / "onnx" / "cnn_softmax.onnx", "-o", tmp_path / "c.onnx", "--verify", "--json")
    assert res.returncode == 0, res.stderr
    verify = json.loads(res.stdout)["verify"]
    assert verify["ok"] is True and verify["max_abs_diff"]["prob"] == 0.0


def test_convert_verify_caffe_against_opencv(tmp_path):
    pytest = __import__("pytest")
    pytest.importorskip("cv2")
    for proto in ("mtcnn_like", "squeezenet_v1.1"):
        src = FIXTURES / "caffe" / f"{proto}.prototxt"
        res = run_cli("convert", src, "--weights", src.with_suffix(".caffemodel"), "-o", tmp_path / f"{proto}.onnx", "--verify", "--json")
        assert res.returncode == 0, res.stderr
        verify = json.loads(res.stdout)["verify"]
        assert verify["ok"] is True and verify["reference"].startswith("OpenCV"), verify
        assert all(d is not None and d < 1e-4 for d in verify["max_abs_diff"].values())
