"""Features folders without Ray: same bytes twice, refusals, use as data in every command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from graphfix.data import Dataset, load_dataset
from graphfix.train import train_head
from graphfix.data.features import extract_features, save_features
from graphfix.data.shards import read_manifest
from graphfix.errors import GraphfixError
from tests.conftest import run_cli


def _data(build, make, n=150):
    model = build()
    x, y = make(model, n)
    return model, Dataset.from_arrays(x, y, model.labels), x, y


def test_folder_is_deterministic_and_equals_plain_features(build, make, tmp_path):
    model, ds, x, y = _data(build, make)
    a = save_features(model, ds, tmp_path / "a", batch_size=8, shard_rows=20)
    save_features(model, ds, tmp_path / "b", batch_size=8, shard_rows=20)
    assert a["shards"] == 7 and read_manifest(tmp_path / "a")["shard_rows"] == 24
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["manifest.json"] + [f"shard-{k:05d}.npz" for k in range(7)]
    for name in files[1:]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    loaded = load_dataset(tmp_path / "a", model.labels)
    assert np.array_equal(loaded.features, extract_features(model, ds, batch_size=8, cache=False))
    assert np.array_equal(loaded.y, y)
    trained_a, _ = train_head(model, ds, weight_decay=0.01, cache=False)
    trained_b, _ = train_head(model, tmp_path / "a", weight_decay=0.01)
    assert trained_a.sha256() == trained_b.sha256()


def test_refusals(build, make, tmp_path):
    model, ds, x, y = _data(build, make, 40)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(GraphfixError, match="not empty and holds no graphfix manifest"):
        save_features(model, ds, tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    np.savez(tmp_path / "d.npz", x=x, y=y)
    with pytest.raises(GraphfixError, match="holds the input"):
        save_features(model, ds, tmp_path, inputs=(str(tmp_path / "d.npz"),))
    save_features(model, ds, tmp_path / "f", batch_size=8, shard_rows=8)
    doc = read_manifest(tmp_path / "f")
    (tmp_path / "f" / "manifest.json").write_text(json.dumps({**doc, "complete": False}))
    with pytest.raises(GraphfixError, match="incomplete"):
        load_dataset(tmp_path / "f", model.labels)
    with pytest.raises(GraphfixError, match="another backbone"):
        save_features(model, ds, tmp_path / "g")
        train_head(build(seed=3), tmp_path / "g")
    with pytest.raises(GraphfixError, match="another run"):
        save_features(build(seed=3), ds, tmp_path / "g")


def test_cli_features_then_calibrate_and_predict_from_it(build, make, tmp_path):
    model, ds, x, y = _data(build, make, 120)
    model.save(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    res = run_cli("features", tmp_path / "m.onnx", tmp_path / "d.npz", "-o", tmp_path / "f", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["written"] == 1
    res = run_cli("train-head", tmp_path / "m.onnx", "--features", tmp_path / "f", "-o", tmp_path / "t.onnx")
    assert res.returncode == 0, res.stderr
    a = run_cli("calibrate", tmp_path / "t.onnx", "--features", tmp_path / "f", "-o", tmp_path / "c1.onnx")
    b = run_cli("calibrate", tmp_path / "t.onnx", "--heldout", tmp_path / "d.npz", "-o", tmp_path / "c2.onnx")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "c1.onnx").read_bytes() == (tmp_path / "c2.onnx").read_bytes()
    res = run_cli("features", tmp_path / "m.onnx", tmp_path / "d.npz", "-o", tmp_path / "d.npz")
    assert res.returncode == 2 and "would overwrite the input" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("predict", tmp_path / "c1.onnx", "--ray", "x", tmp_path / "d.npz")
    assert res.returncode == 2 and "Traceback" not in res.stderr


def test_features_over_the_memory_budget_are_memory_mapped(build, make, tmp_path, monkeypatch):
    model, ds, x, y = _data(build, make, 60)
    save_features(model, ds, tmp_path / "f", batch_size=8, shard_rows=16)
    monkeypatch.setenv("GRAPHFIX_MEMORY_BUDGET", "100")
    loaded = load_dataset(tmp_path / "f", model.labels)
    assert isinstance(loaded.features, np.memmap)
    assert np.array_equal(loaded.features, extract_features(model, ds, batch_size=8, cache=False))


def test_unlabelled_features_serve_predict_but_not_training(build, make, tmp_path):
    model, ds, x, y = _data(build, make, 30)
    model.save(tmp_path / "m.onnx")
    np.savez(tmp_path / "x.npz", x=x)
    res = run_cli("features", tmp_path / "m.onnx", tmp_path / "x.npz", "-o", tmp_path / "f", "--json")
    assert res.returncode == 0, res.stderr
    assert read_manifest(tmp_path / "f")["labelled"] is False
    res = run_cli("predict", tmp_path / "m.onnx", "--features", tmp_path / "f", "--json")
    assert res.returncode == 0 and len(json.loads(res.stdout)["predictions"]) == 30, res.stderr
    res = run_cli("train-head", tmp_path / "m.onnx", "--features", tmp_path / "f", "-o", tmp_path / "t.onnx")
    assert res.returncode == 2 and "unlabelled" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_ctrl_c_keeps_complete_shards_and_says_how_to_resume(tmp_path):
    import os
    import subprocess
    import sys

    from PIL import Image

    from tests.tiny_heads import build_swapped
    from tests.conftest import ROOT

    build_swapped(preprocess={"size": [6, 6]}).save(tmp_path / "m.onnx")
    (tmp_path / "img").mkdir()
    rows = ["path,labels"]
    for i in range(40):
        name = f"img/{i:02d}{'_interruptme' if i == 25 else ''}.png"
        Image.fromarray(np.full((6, 6, 3), i, np.uint8)).save(tmp_path / name)
        rows.append(f"{name},c{i % 4}")
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(
        "import os, signal, sys\n"
        "opened = []\n"
        "def _hook(event, args):\n"
        "    if event == 'open' and isinstance(args[0], str) and 'interruptme' in args[0]:\n"
        "        opened.append(args[0])\n"
        "        if len(opened) == 2:  # the first open is the header check, before any shard\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.addaudithook(_hook)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]),
               GRAPHFIX_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "graphfix.cli", "features", str(tmp_path / "m.onnx"), str(tmp_path / "d.csv"),
           "-o", str(tmp_path / "f"), "--batch-size", "8", "--shard-rows", "8", "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 130 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip() == (f"graphfix: error: interrupted; 3 of 5 shards are in {tmp_path / 'f'}: "
                                  "run the same command again to finish"), res.stderr
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["skipped"], doc["written"]) == (3, 2) and read_manifest(tmp_path / "f")["complete"]
