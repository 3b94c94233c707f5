"""The model carries the preprocessing (issue 22, item 1): --size --mean --std --scale --bgr are
stored by the first command that writes a model, used by later ones, and refused once the head
was trained on other values."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import graphfix as gf
from tests.conftest import FIXTURES, run_cli

LENET = (FIXTURES / "caffe" / "lenet.prototxt", FIXTURES / "caffe" / "lenet.caffemodel")  # 1x28x28, BGR, no mean


def _note(path, text: str) -> str:
    return f"graphfix: note: stored preprocessing in {path}: {text}"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """swapped.onnx (mean 33 stored by swap-head), trained.onnx (train-head on it), data.csv of 12 images."""
    from PIL import Image

    d = tmp_path_factory.mktemp("prep")
    rng = np.random.default_rng(3)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(d / f"g{i}.png")
        rows.append(f"g{i}.png,{'a' if i % 2 else 'b'}{';a' if i % 3 == 0 and i % 2 == 0 else ''}")
    (d / "data.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
    (d / "labels.txt").write_text("a\nb\n")
    res = run_cli("swap-head", LENET[0], "--weights", LENET[1], "--labels", d / "labels.txt", "--mean", "33",
                  "-o", d / "swapped.onnx")
    assert res.returncode == 0, res.stderr
    res = run_cli("train-head", d / "swapped.onnx", "--train", d / "data.csv", "--no-cache", "-o", d / "trained.onnx")
    assert res.returncode == 0, res.stderr
    return d


def _refused(res, message: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphfix: error: ") and "Traceback" not in res.stderr, res.stderr
    assert message in lines[0], lines[0]


def test_convert_stores_flags_with_one_notice_quiet_and_json(tmp_path):
    out = tmp_path / "c.onnx"
    res = run_cli("convert", *LENET[:1], "--weights", LENET[1], "--mean", "33", "--scale", "0.5", "-o", out)
    assert res.returncode == 0, res.stderr
    text = "size 28,28, BGR, mean 33, std 1, scale 0.5, pixel range 255 (--scale 0.5 replaces scale 1)"  # Caffe's
    assert res.stderr == _note(out, text) + "\n"
    stored = gf.load(out).preprocess
    assert {k: stored[k] for k in ("size", "channel_order", "mean", "std", "scale", "pixel_range")} == {
        "size": [28, 28], "channel_order": "BGR", "mean": [33.0], "std": [1.0], "scale": 0.5, "pixel_range": 255.0}
    res = run_cli("convert", *LENET[:1], "--weights", LENET[1], "--mean", "33", "--scale", "0.5", "-o", out, "-q")
    assert res.returncode == 0 and res.stderr == "" and res.stdout == "", res.stderr
    res = run_cli("convert", *LENET[:1], "--weights", LENET[1], "--mean", "33", "--scale", "0.5", "-o", out, "--json")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert json.loads(res.stdout)["notices"] == [f"stored preprocessing in {out}: {text}"]
    # no flags: nothing stored, no notice (the importer's values stay)
    res = run_cli("convert", *LENET[:1], "--weights", LENET[1], "-o", tmp_path / "plain.onnx")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert gf.load(tmp_path / "plain.onnx").preprocess["mean"] is None


def test_later_commands_use_and_train_head_keeps_the_stored_values(models):
    trained = gf.load(models / "trained.onnx")
    assert trained.metadata["training"]
    assert trained.preprocess["mean"] == [33.0] and trained.preprocess["size"] == [28, 28]
    # predict without flags reads the stored mean: equal to the hand-made input
    from PIL import Image

    res = run_cli("predict", models / "trained.onnx", models / "g0.png", "--json")
    assert res.returncode == 0, res.stderr
    scores = json.loads(res.stdout)["predictions"][0]["scores"]
    x = (np.asarray(Image.open(models / "g0.png"), np.float32) - 33)[None, None]
    ref = trained.run(x)["probabilities"][0]
    assert np.abs(ref - [scores["a"], scores["b"]]).max() <= 1e-5


def test_trained_head_refuses_other_values_in_every_command(models, tmp_path):
    trained = models / "trained.onnx"
    hint = "(leave the flag out to use the stored values, or train a head on the new ones from the swapped model)"
    res = run_cli("calibrate", trained, "--heldout", models / "data.csv", "--size", "14,14", "--scale", "2",
                  "-o", tmp_path / "c.onnx")
    _refused(res, f"{trained}: --size 14,14 and --scale 2 differ from the stored size 28,28 and scale 1 the head was "
                  f"trained on {hint}")
    _refused(run_cli("predict", trained, models / "g0.png", "--mean", "5"),
             "--mean 5 differs from the stored mean 33 the head was trained on")
    _refused(run_cli("features", trained, models / "data.csv", "-o", tmp_path / "f", "--std", "2"),
             "--std 2 differs from the stored std 1 the head was trained on")
    _refused(run_cli("export", trained, "--bake-preprocess", "--target", "cpu", "--mean", "0", "-o", tmp_path / "e.onnx"),
             "--mean 0 differs from the stored mean 33 the head was trained on")
    # a backbone fine-tuned on the stored values: train-head refuses too (before any work)
    tuned = tmp_path / "tuned.onnx"
    gf.load(trained).with_metadata(training={"train_from": "ip1"}).save(tuned)
    _refused(run_cli("train-head", tuned, "--train", models / "data.csv", "--mean", "1", "-o", tmp_path / "t.onnx"),
             "--mean 1 differs from the stored mean 33 the head was trained on")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.onnx"]
    # the stored values given again are fine, and store nothing new
    res = run_cli("calibrate", trained, "--heldout", models / "data.csv", "--size", "28,28", "--mean", "33",
                  "--bgr", "--no-cache", "-o", tmp_path / "c.onnx")
    assert res.returncode == 0 and "note" not in res.stderr, res.stderr


def test_before_training_flags_replace_the_stored_values(models, tmp_path):
    out = tmp_path / "t.onnx"
    res = run_cli("train-head", models / "swapped.onnx", "--train", models / "data.csv", "--mean", "10", "--no-cache",
                  "-o", out)
    assert res.returncode == 0, res.stderr
    assert _note(out, "size 28,28, BGR, mean 10, std 1, scale 1, pixel range 255 (--mean 10 replaces mean 33)") \
        in res.stderr.splitlines()
    assert gf.load(out).preprocess["mean"] == [10.0]
    # train-head on a trained head fits it again: new values replace the stored ones too
    again = tmp_path / "again.onnx"
    res = run_cli("train-head", out, "--train", models / "data.csv", "--mean", "20", "--no-cache", "-o", again)
    assert res.returncode == 0, res.stderr
    assert gf.load(again).preprocess["mean"] == [20.0]
    # export before training stores the values and bakes them
    baked = tmp_path / "b.onnx"
    res = run_cli("export", models / "swapped.onnx", "--bake-preprocess", "--target", "cpu", "--mean", "50", "-o", baked)
    assert res.returncode == 0, res.stderr
    assert _note(baked, "size 28,28, BGR, mean 50, std 1, scale 1, pixel range 255 (--mean 50 replaces mean 33)") \
        in res.stderr.splitlines()
    model = gf.load(baked)
    assert model.preprocess["mean"] == [50.0]
    assert model.ir.graph.initializers["graphfix_pre.mean"].const_value.numpy().ravel().tolist() == [50.0]
    # a command that writes no model uses the flag for this run and says so
    res = run_cli("predict", models / "swapped.onnx", models / "g0.png", "--mean", "9")
    assert res.returncode == 0, res.stderr
    assert "graphfix: note: --mean 9 replaces mean 33 for this run only (this command writes no model)" \
        in res.stderr.splitlines()


def test_features_folder_records_its_preprocessing(models, tmp_path):
    feats = tmp_path / "feats"
    res = run_cli("features", models / "swapped.onnx", models / "data.csv", "-o", feats, "--mean", "10")
    assert res.returncode == 0, res.stderr
    assert "graphfix: note: --mean 10 replaces mean 33 for this run only (this command writes no model)" \
        in res.stderr.splitlines()
    assert json.loads((feats / "manifest.json").read_text())["preprocess"]["mean"] == [10.0]
    out = tmp_path / "t.onnx"
    _refused(run_cli("train-head", models / "swapped.onnx", "--features", feats, "-o", out),
             f"{feats}: the features were extracted with mean 10, but this command uses mean 33 (give the "
             "preprocessing flags the features were extracted with, or extract them again)")
    _refused(run_cli("calibrate", models / "trained.onnx", "--features", feats, "-o", out),
             "the features were extracted with mean 10, but this command uses mean 33")
    _refused(run_cli("predict", models / "trained.onnx", "--features", feats), "extracted with mean 10")
    res = run_cli("train-head", models / "swapped.onnx", "--features", feats, "--mean", "10", "-o", out)
    assert res.returncode == 0, res.stderr
    assert gf.load(out).preprocess["mean"] == [10.0]


def test_write_back_sidecar_holds_the_stored_values(tmp_path):
    shutil.copy(LENET[0], tmp_path / "net.prototxt")
    shutil.copy(LENET[1], tmp_path / "net.caffemodel")
    res = run_cli("swap-head", tmp_path / "net.prototxt", "--labels", "3", "--to", "caffe", "-o", tmp_path / "ml",
                  "--mean", "33", "--scale", "0.5")
    assert res.returncode == 0, res.stderr
    assert res.stderr == _note(tmp_path / "ml", "size 28,28, BGR, mean 33, std 1, scale 0.5, pixel range 255 "
                                                "(--scale 0.5 replaces scale 1)") + "\n"
    sidecar = json.loads((tmp_path / "ml-graphfix.json").read_text())["preprocess"]
    assert sidecar["mean"] == [33.0] and sidecar["scale"] == 0.5 and sidecar["channel_order"] == "BGR"


def test_train_head_api_stores_the_preprocessing_it_used(models):
    from graphfix.data.images import Preprocess

    swapped = gf.load(models / "swapped.onnx")
    prep = Preprocess((28, 28), channels=1, channel_order="BGR", mean=[7.0], std=[2.0], scale=1.0)
    trained, _ = gf.train_head(swapped, models / "data.csv", preprocess=prep, cache=False, progress=False)
    stored = trained.preprocess
    assert (stored["mean"], stored["std"], stored["scale"], stored["size"]) == ([7.0], [2.0], 1.0, [28, 28])
    assert swapped.preprocess["mean"] == [33.0]  # the input model is unchanged
