"""`graphfix features` (and predict -o) locally and on a local Ray: same bytes, faults, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graphfix.data.shards import read_arrays, read_manifest
from tests.tiny_heads import build_swapped
from tests.conftest import ROOT

ray = pytest.importorskip("ray")

#: Installed through PYTHONPATH. In a Ray worker, opening an image with "crashonce" in its name
#: SIGKILLs the worker the first time (a marker file remembers); in the driver, opening one with
#: "stophere" SIGKILLs the driver the first time it decodes it (its second open: the first is the
#: header check before any work; an interrupted run); "crashalways" kills every Ray worker that opens it.
FAULTS = """
import os, signal, sys
_ray = any("default_worker" in a for a in sys.orig_argv)
_opened = {}
def _hook(event, args):
    if event != "open" or not isinstance(args[0], str):
        return
    if _ray and "crashalways" in args[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    _opened[args[0]] = _opened.get(args[0], 0) + 1
    if not _ray and _opened[args[0]] < 2:
        return
    for word, here in (("crashonce", _ray), ("stophere", not _ray)):
        marker = os.environ.get("GRAPHFIX_TEST_MARKER", "/nonexistent") + "." + word[::-1]
        if here and word in args[0] and not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(_hook)
"""


def _images(tmp: Path, n: int, special: dict[int, str] | None = None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp / "img").mkdir(parents=True)
    rows = ["path,labels"]
    for i in range(n):
        name = f"img/{i:04d}{'_' + special[i] if special and i in special else ''}.png"
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp / name)
        rows.append(f"{name},{';'.join(f'c{j}' for j in range(4) if rng.random() < 0.4)}")
    (tmp / "data.csv").write_text("\n".join(rows) + "\n")
    return tmp / "data.csv"


def _cli(tmp: Path, *args: str, faults: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, GRAPHFIX_CACHE=str(tmp / "cache"), GRAPHFIX_TEST_MARKER=str(tmp / "marker"))
    path = [str(ROOT)]
    if faults:
        (tmp / "site").mkdir(exist_ok=True)
        (tmp / "site" / "sitecustomize.py").write_text(FAULTS)
        path.insert(0, str(tmp / "site"))
    env["PYTHONPATH"] = os.pathsep.join(path)
    return subprocess.run([sys.executable, "-m", "graphfix.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def _model(tmp: Path) -> Path:
    path = tmp / "tiny.onnx"
    build_swapped(preprocess={"size": [6, 6]}).save(path)
    return path


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.npz"))}


def test_ray_features_equal_local_bytes_and_survive_a_killed_worker(tmp_path):
    model = _model(tmp_path)
    data = _images(tmp_path, 300, {150: "crashonce"})
    args = ("--batch-size", "16", "--shard-rows", "40", "--json")
    local = _cli(tmp_path, "features", model, data, "-o", tmp_path / "local", *args)
    assert local.returncode == 0, local.stderr
    doc = json.loads(local.stdout)
    assert doc["shards"] == 7 and doc["written"] == 7 and doc["rows"] == 300  # 40 -> 48 rows (3 batches)
    res = _cli(tmp_path, "features", model, data, "-o", tmp_path / "ray", *args, "--ray", faults=True)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    run = json.loads(res.stdout)
    assert (tmp_path / "marker.ecnohsarc").exists()  # the worker really was killed
    assert [r["shard"] for r in run["retried"]] == [3] and run["retried"][0]["attempts"] == 2, run["retried"]
    assert sum(run["rows_by_worker"].values()) == 300
    assert _shards(tmp_path / "ray") == _shards(tmp_path / "local")  # every row once, bitwise equal
    rows = read_arrays(tmp_path / "ray", ["row", "path"])
    assert np.array_equal(rows["row"], np.arange(300)) and rows["path"][150].endswith("0150_crashonce.png")
    # a head trained from the folder is the head trained from the images
    a = _cli(tmp_path, "train-head", model, "--train", data, "-o", tmp_path / "a.onnx", "--weight-decay", "0.01")
    b = _cli(tmp_path, "train-head", model, "--train", tmp_path / "ray", "-o", tmp_path / "b.onnx", "--weight-decay", "0.01")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_an_interrupted_run_resumes_and_skips_complete_shards(tmp_path):
    model = _model(tmp_path)
    data = _images(tmp_path, 200, {130: "stophere"})
    args = ("--batch-size", "16", "--shard-rows", "32", "--json")
    ref = _cli(tmp_path, "features", model, data, "-o", tmp_path / "ref", *args)
    assert ref.returncode == 0, ref.stderr
    first = _cli(tmp_path, "features", model, data, "-o", tmp_path / "f", *args, faults=True)
    assert first.returncode == -9  # killed while decoding row 130 (shard 4)
    assert not read_manifest(tmp_path / "f")["complete"]
    assert sorted(_shards(tmp_path / "f")) == [f"shard-{k:05d}.npz" for k in range(4)]
    again = _cli(tmp_path, "features", model, data, "-o", tmp_path / "f", *args, "--ray", faults=True)
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert doc["skipped"] == 4 and doc["written"] == 3
    assert _shards(tmp_path / "f") == _shards(tmp_path / "ref")
    assert read_manifest(tmp_path / "f")["complete"]
    # an unfinished folder is refused as data; another model's folder is refused as output
    other = tmp_path / "other.onnx"
    build_swapped(seed=5, preprocess={"size": [6, 6]}).save(other)
    res = _cli(tmp_path, "features", other, data, "-o", tmp_path / "f")
    assert res.returncode == 2 and "another run (model_sha256" in res.stderr, res.stderr
    res = _cli(tmp_path, "train-head", other, "--train", tmp_path / "f", "-o", tmp_path / "x.onnx")
    assert res.returncode == 2 and "another backbone" in res.stderr, res.stderr


def test_predict_folder_on_ray_equals_local_and_the_printed_labels(tmp_path):
    model = _model(tmp_path)
    data = _images(tmp_path, 120)
    trained = tmp_path / "trained.onnx"
    res = _cli(tmp_path, "train-head", model, "--train", data, "-o", trained, "--weight-decay", "0.01")
    assert res.returncode == 0, res.stderr
    args = ("--batch-size", "8", "--shard-rows", "32", "--scores", "--json")
    local = _cli(tmp_path, "predict", trained, data, "-o", tmp_path / "p_local", *args)
    on_ray = _cli(tmp_path, "predict", trained, data, "-o", tmp_path / "p_ray", *args, "--ray")
    assert local.returncode == 0 and on_ray.returncode == 0, local.stderr + on_ray.stderr
    assert json.loads(on_ray.stdout)["shards"] == 4
    assert _shards(tmp_path / "p_ray") == _shards(tmp_path / "p_local")
    got = read_arrays(tmp_path / "p_ray", ["labels", "scores", "path"])
    printed = _cli(tmp_path, "predict", trained, tmp_path / "img", "--json")
    assert printed.returncode == 0, printed.stderr
    rows = json.loads(printed.stdout)["predictions"]
    labels = read_manifest(tmp_path / "p_ray")["labels"]
    assert [r["input"] for r in rows] == list(got["path"])
    assert [r["labels"] for r in rows] == [[labels[j] for j in np.flatnonzero(v)] for v in got["labels"]]
    # from a features folder only the head runs (NumPy): same labels
    feats = _cli(tmp_path, "features", model, data, "-o", tmp_path / "f")
    assert feats.returncode == 0, feats.stderr
    from_feats = _cli(tmp_path, "predict", trained, "--features", tmp_path / "f", "--json")
    assert from_feats.returncode == 0, from_feats.stderr
    assert [r["labels"] for r in json.loads(from_feats.stdout)["predictions"]] == [r["labels"] for r in rows]
    res = _cli(tmp_path, "predict", trained, data, "--ray")
    assert res.returncode == 2 and "add -o PREDICTIONS" in res.stderr
    res = _cli(tmp_path, "features", model, data, "-o", tmp_path / "g", "--ray", "127.0.0.1:1")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "nothing answers at 127.0.0.1:1" in res.stderr


def test_a_shard_that_always_kills_its_worker_fails_the_run_in_one_line(tmp_path):
    model = _model(tmp_path)
    data = _images(tmp_path, 64, {40: "crashalways"})
    res = _cli(tmp_path, "features", model, data, "-o", tmp_path / "f", "--batch-size", "16", "--shard-rows", "32",
               "--ray", faults=True)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("graphfix: error: ")]
    assert len(errors) == 1 and "shard 1 (rows 32..63) killed its worker 3 times" in errors[0], lines
    ours = [ln for ln in lines if ln.startswith("graphfix: ")]
    assert all(ln.startswith("graphfix: ray: ") for ln in ours if ln != errors[0]), lines  # Ray's notices, a line each
    assert not read_manifest(tmp_path / "f")["complete"]
    assert "shard-00001.npz" not in _shards(tmp_path / "f")  # shard 0 ran beside it: written or not
