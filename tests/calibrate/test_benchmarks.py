"""The benchmark scripts run (tiny sizes) and print their figures and command."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script,args", [
    ("bench_thresholds.py", ["--samples", "3000", "--classes", "20", "--repeat", "1"]),
    ("bench_features.py", ["--samples", "64", "--batch-size", "16", "--size", "32", "--repeat", "1"]),
    ("bench_head_training.py", ["--n", "3000", "--features", "24", "--labels", "4"]),
    ("bench_head_options.py", ["--part", "oof", "--sets", "small-0"]),
    ("bench_head_options.py", ["--part", "l2", "--sets", "small-1"]),
])
def test_benchmark_runs(script, args, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env={"GRAPHFIX_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "command:" in proc.stdout


def test_head_quality_runs(tmp_path):
    """The quality benchmark, one small tabular set: the defaults stay within 0.01 of sklearn."""
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "head_quality.py"), "--out", str(tmp_path),
                           "--sets", "tabular-0", "--tabular-samples", "1200"], capture_output=True, text=True, cwd=ROOT,
                          env={"GRAPHFIX_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| sklearn reference |" in proc.stdout and "command:" in proc.stdout


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_real_photos_set(tmp_path):
    """The real-photo set: seeded (byte-identical files), 1..4 labels per image, CSVs graphfix reads, and no
    val/test tile drawn from a region of a photo that training tiles show."""
    pytest.importorskip("skimage")
    pytest.importorskip("sklearn")
    from graphfix.data import Preprocess, load_dataset

    rp = _script("real_photos")
    a = rp.generate(tmp_path / "a", n_train=16, n_val=6, n_test=6, seed=3)
    rp.generate(tmp_path / "b", n_train=16, n_val=6, n_test=6, seed=3)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 16 + 6 + 6 + 3 + 2
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    ds = load_dataset(a["train"], rp.LABELS, Preprocess(size=(224, 224)))
    counts = ds.y.sum(axis=1)
    assert len(ds) == 16 and counts.min() >= 1 and counts.max() <= 4 and counts.max() > 1
    assert next(ds.batches(4)).shape == (4, 3, 224, 224)
    assert load_dataset(a["test"], rp.LABELS, Preprocess(size=(224, 224))).y.shape == (6, 20)
    sources = rp.load_sources()
    regions = rp.split_regions({k: v.shape[:2] for k, v in sources.items()}, 3)
    for name in rp.LABELS:
        per_split = [set(regions[s][name]) for s in ("train", "val", "test")]
        assert [len(r) for r in per_split] == [5, 2, 2] and len(set.union(*per_split)) == 9
    mtime = (tmp_path / "a" / "train.csv").stat().st_mtime_ns
    assert rp.ensure(tmp_path / "a", n_train=16, n_val=6, n_test=6, seed=3) == a
    assert (tmp_path / "a" / "train.csv").stat().st_mtime_ns == mtime  # reused, not rewritten
    rp.ensure(tmp_path / "a", n_train=16, n_val=6, n_test=6, seed=4)
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "b" / "train.csv").read_bytes()


@pytest.mark.slow
def test_finetune_quality_runs(tmp_path):
    """The open_nsfw fine-tuning benchmark end to end on a tiny photo set: head only and the last block."""
    pytest.importorskip("skimage")
    pytest.importorskip("torch")
    if not (ROOT / ".cache" / "nsfw" / "resnet_50_1by2_nsfw.caffemodel").is_file():
        pytest.skip("open_nsfw not fetched (bash fixtures/caffe/fetch_nsfw.sh .cache/nsfw)")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "finetune_quality.py"), "--out", str(tmp_path),
                           "--n-train", "40", "--n-val", "20", "--n-test", "20", "--runs", "head-bce,-1"],
                          capture_output=True, text=True, cwd=ROOT, env={"PATH": "/usr/bin:/bin"}, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| head only, --loss bce |" in proc.stdout and "| --train-from -1 |" in proc.stdout
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert runs["--train-from -1"]["train_from"] and runs["--train-from -1"]["epoch_val_mAP"][0] > 0
    assert 0 < runs["head only, --loss bce"]["mAP"] <= 1
