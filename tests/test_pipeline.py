"""The whole path, end to end, as a user runs it (issue 22, acceptance).

Images on disk (PNG and JPEG colour patches, 1-3 of 4 labels each), a Caffe net that expects
mean-subtracted BGR input, the preprocessing given once (`swap-head --mean 104,117,123 --bgr`),
then train-head -> calibrate -> export --bake-preprocess --triton. The Triton repository's model,
fed raw uint8 pixels decoded by Pillow, must give exactly `graphfix predict`'s labels and its
probabilities within 1e-5 on every test image; a hand-written reference (NumPy preprocessing +
the calibrated model in onnxruntime + the stored thresholds) must agree with both.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.convert.caffe.caffe_helpers import caffe_writer

LABELS = ["red", "green", "blue", "white"]
COLOURS = {"red": (230, 30, 30), "green": (30, 220, 40), "blue": (40, 50, 235), "white": (245, 245, 245)}
MEAN = [104.0, 117.0, 123.0]  # BGR order, pixel units: Caffe's ImageNet mean
SIZE = 32


def _write_net(folder: Path) -> tuple[Path, Path]:
    """A small Caffe classifier on 3x32x32 BGR mean-subtracted input: conv-relu-pool x2, fc, fc, softmax."""
    b = caffe_writer.NetBuilder("ColourNet", {"data": (1, 3, SIZE, SIZE)}, seed=7)
    b.conv("conv1", "data", 16, 3, p=1)
    b.relu("relu1", "conv1")
    b.pool("pool1", "conv1", "MAX", 2, 2)
    b.conv("conv2", "pool1", 16, 3, p=1)
    b.relu("relu2", "conv2")
    b.pool("pool2", "conv2", "AVE", global_=True)
    b.ip("fc1", "pool2", 32)
    b.relu("relu3", "fc1")
    b.ip("fc_cls", "fc1", 10)
    b.softmax("prob", "fc_cls")
    proto, weights = folder / "deploy.prototxt", folder / "net.caffemodel"
    b.save(str(proto), str(weights))
    return proto, weights


def _write_images(folder: Path, n: int = 60) -> list[tuple[str, list[str]]]:
    """`n` images (PNG and JPEG) with 1-3 coloured squares, one per label, on a noisy dark background."""
    from PIL import Image

    rng = np.random.default_rng(22)
    rows = []
    for i in range(n):
        chosen = sorted(rng.choice(len(LABELS), size=1 + i % 3, replace=False))
        img = rng.integers(20, 80, size=(SIZE, SIZE, 3)).astype(np.uint8)
        for j in chosen:
            y, x = rng.integers(0, SIZE - 12, size=2)
            img[y : y + 12, x : x + 12] = COLOURS[LABELS[j]]
        name = f"img{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(img).save(folder / "images" / name, quality=95)
        rows.append((f"images/{name}", [LABELS[j] for j in chosen]))
    return rows


def _csv(path: Path, rows) -> Path:
    path.write_text("path,labels\n" + "".join(f"{p},{';'.join(names)}\n" for p, names in rows))
    return path


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run the whole path once; returns the folder and the parsed outputs."""
    pytest.importorskip("PIL")
    d = tmp_path_factory.mktemp("pipeline")
    (d / "images").mkdir()
    proto, weights = _write_net(d)
    rows = _write_images(d)
    train, heldout, test = _csv(d / "train.csv", rows[:36]), _csv(d / "heldout.csv", rows[36:48]), rows[48:]
    (d / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (d / "repo").mkdir()

    def ok(*args):
        res = run_cli(*args, cwd=d)
        assert res.returncode == 0, res.stderr
        assert "Traceback" not in res.stderr
        return res

    swap = ok("swap-head", proto, "--weights", weights, "--labels", d / "labels.txt", "--mean", "104,117,123",
              "--bgr", "-o", d / "swapped.onnx")
    trained = ok("train-head", d / "swapped.onnx", "--train", train, "--no-cache", "-o", d / "trained.onnx")
    ok("calibrate", d / "trained.onnx", "--heldout", heldout, "--no-cache", "-o", d / "calibrated.onnx")
    export = ok("export", d / "calibrated.onnx", "--target", "cpu", "--bake-preprocess", "--triton", d / "repo",
                "--name", "tagger")
    predict = ok("predict", d / "calibrated.onnx", *[d / p for p, _ in test], "--json")
    return {"dir": d, "test": test, "heldout": heldout, "swap": swap, "trained": trained, "export": export,
            "predict": json.loads(predict.stdout)["predictions"]}


def _meta(path: Path) -> dict:
    import graphfix as gf

    return gf.load(path).metadata


def test_preprocessing_given_once_is_stored_and_carried(pipeline):
    d = pipeline["dir"]
    stored = {"size": [SIZE, SIZE], "channel_order": "BGR", "mean": MEAN, "std": [1.0], "scale": 1.0, "pixel_range": 255.0}
    assert pipeline["swap"].stderr == (f"graphfix: note: stored preprocessing in {d / 'swapped.onnx'}: size 32,32, BGR, "
                                       "mean 104,117,123, std 1, scale 1, pixel range 255\n")
    assert pipeline["trained"].stderr == ""  # the stored values were used: nothing new to store
    for name in ("swapped.onnx", "trained.onnx", "calibrated.onnx", "repo/tagger/1/model.onnx"):
        meta = _meta(d / name)["preprocess"]
        assert {k: meta[k] for k in stored} == stored, name
    assert "training" in _meta(d / "trained.onnx") and "calibration" in _meta(d / "calibrated.onnx")
    baked = _meta(d / "repo/tagger/1/model.onnx")["preprocess"]["baked"]
    assert baked["input"] == "image" and baked["layout"] == "NHWC"
    assert "  baked input: image uint8 [batch,32,32,3] NHWC RGB" in pipeline["export"].stdout.splitlines()
    assert 'name: "image"' in (d / "repo/tagger/config.pbtxt").read_text()


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def test_served_model_equals_predict_and_a_hand_written_reference(pipeline):
    import onnxruntime as ort

    d, test, predicted = pipeline["dir"], pipeline["test"], pipeline["predict"]
    pixels = np.stack([_pixels(d / p) for p, _ in test])  # [N, 32, 32, 3] uint8, RGB, as Pillow decodes
    served = ort.InferenceSession(str(d / "repo/tagger/1/model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in served.get_inputs()] == ["image"]
    probs, labels = served.run(["probabilities", "labels"], {"image": pixels})

    # the hand-written reference: Caffe's preprocessing in NumPy, the calibrated model, the stored thresholds
    x = (pixels[..., ::-1].astype(np.float32) - np.float32(MEAN)).transpose(0, 3, 1, 2)
    calibrated = ort.InferenceSession(str(d / "calibrated.onnx"), providers=["CPUExecutionProvider"])
    (ref,) = calibrated.run(["probabilities"], {calibrated.get_inputs()[0].name: np.ascontiguousarray(x)})
    thresholds = np.asarray(_meta(d / "calibrated.onnx")["thresholds"], np.float32)
    ref_labels = ref >= thresholds
    (no_mean,) = calibrated.run(["probabilities"], {calibrated.get_inputs()[0].name: np.ascontiguousarray(
        pixels[..., ::-1].astype(np.float32).transpose(0, 3, 1, 2))})
    assert np.abs(no_mean - ref).max() > 1e-3  # the mean matters: a dropped mean would fail below

    assert len(predicted) == len(test)
    for i, ((path, truth), item) in enumerate(zip(test, predicted)):
        assert item["input"] == str(d / path)
        got = [LABELS[j] for j in np.flatnonzero(labels[i])]
        assert got == item["labels"], (path, got, item)
        assert got == [LABELS[j] for j in np.flatnonzero(ref_labels[i])], path
        scores = np.array([item["scores"][name] for name in LABELS])
        assert np.abs(probs[i] - scores).max() <= 1e-5, (path, probs[i], scores)
        assert np.abs(ref[i] - probs[i]).max() <= 1e-5, path
    truth = np.array([[name in t for name in LABELS] for _, t in test])
    assert (labels == truth).mean() >= 0.8  # the head learnt the colours (not a test of chance)


def test_other_flags_after_training_are_refused(pipeline, tmp_path):
    d = pipeline["dir"]
    out = tmp_path / "other.onnx"
    res = run_cli("calibrate", d / "trained.onnx", "--heldout", pipeline["heldout"], "--mean", "0,0,0", "-o", out)
    assert res.returncode == 2, res.stderr
    assert res.stderr == (f"graphfix: error: {d / 'trained.onnx'}: --mean 0,0,0 differs from the stored mean "
                          "104,117,123 the head was trained on (leave the flag out to use the stored values, or train "
                          "a head on the new ones from the swapped model)\n")
    assert not out.exists()


def test_predict_feeds_a_baked_model_its_raw_pixels(pipeline):
    """`graphfix predict` on the served (baked, uint8 NHWC) model: the same labels and probabilities
    as on the calibrated model; preprocessing flags are refused there (the graph holds them)."""
    d, test, predicted = pipeline["dir"], pipeline["test"], pipeline["predict"]
    served = d / "repo/tagger/1/model.onnx"
    res = run_cli("predict", served, *[d / p for p, _ in test], "--json")
    assert res.returncode == 0, res.stderr
    for item, ref in zip(json.loads(res.stdout)["predictions"], predicted):
        assert item["labels"] == ref["labels"]
        assert max(abs(item["scores"][k] - ref["scores"][k]) for k in LABELS) <= 1e-5
    res = run_cli("predict", served, d / test[0][0], "--size", "16,16")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "baked into its graph" in res.stderr
