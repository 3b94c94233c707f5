"""Fleet conversion: a folder of mixed models with broken ones, one command, a clear summary."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx

from tests.conftest import FIXTURES, run_cli


def _model_units() -> list[list[Path]]:
    """Each fixture model as the list of files it needs (ONNX, MXNet and Caffe fixtures)."""
    units = [[p] for p in sorted((FIXTURES / "onnx").glob("*.onnx"))]
    for sym in sorted((FIXTURES / "mxnet").glob("*/*-symbol.json")):  # whole models, not per-op ones
        stem = sym.name[: -len("-symbol.json")]
        params = sorted(sym.parent.glob(f"{stem}-*.params"))
        if params:
            units.append([sym, params[-1]])
    for proto in sorted((FIXTURES / "caffe").glob("**/*.prototxt")):
        weights = proto.with_suffix(".caffemodel")
        if weights.exists():
            units.append([proto, weights])
    return units


def _make_fleet(root: Path, count: int, broken: int) -> int:
    """Copy `count` fixture models (each in its own folder) plus `broken` broken ones."""
    units = _model_units()[:count]
    for i, files in enumerate(units):
        folder = root / ("deep" if i % 3 == 0 else ".") / f"m{i:02d}"
        folder.mkdir(parents=True)
        for f in files:
            shutil.copy(f, folder / f.name)
    bad = root / "broken"
    bad.mkdir()
    kinds = [("garbage.onnx", b"not a model at all"), ("cut-symbol.json", b'{"nodes": [{"op": "null", "name": "data", "inputs": []'),
             ("empty.onnx", b"")]
    for name, data in kinds[:broken]:
        (bad / name).write_bytes(data)
    if broken >= 2:
        (bad / "cut-0000.params").write_bytes(b"\x12\x01")
    return len(units)


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


def test_fleet_text_table_and_timeout(tmp_path):
    src, out = tmp_path / "models", tmp_path / "out"
    _make_fleet(src, 2, 0)
    res = run_cli("convert", src, "-o", out, "-r", "--timeout", "0.05")
    assert res.returncode == 1
    assert "timeout" in res.stdout and "of 2 models" in res.stdout
    assert not list(out.rglob("*.onnx")) and not list(out.rglob("*.tmp"))


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
