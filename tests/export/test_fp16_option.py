"""`--fp16 [auto]` is one option in every command; parity inputs follow the model; the fp16 output is text.

The commands run in-process (`graphfix.cli.main`) so that the parity run can be watched: a spy on
`_parity.compare` / `_parity.varied_feeds` records what was fed.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import onnx
import pytest

import _export_models as M
from _export_models import REPO
from graphfix.cli import main
from graphfix.commands._options import FP16_HELP, note_lines
from graphfix.convert.export import export
from graphfix.model import Model

#: Every command that takes --fp16.
FP16_COMMANDS = ("export", "swap-head", "convert", "calibrate")
#: Caffe-style preprocessing: BGR, mean subtracted, no scaling (inputs about -123..151).
CAFFE_PREP = {"size": [8, 8], "channel_order": "BGR", "mean": [104.0, 117.0, 123.0], "std": [1.0], "scale": 1.0,
              "pixel_range": 255}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def fed(monkeypatch):
    """What the parity runs were fed: a list of (sample_inputs, generated feeds) per compare call."""
    import graphfix.convert.export._parity as parity

    calls: list[dict] = []
    compare, varied = parity.compare, parity.varied_feeds

    def spy_compare(*args, **kwargs):
        calls.append({"given": kwargs.get("sample_inputs"), "generated": None})
        return compare(*args, **kwargs)

    def spy_varied(*args, **kwargs):
        feeds = varied(*args, **kwargs)
        calls[-1]["generated"] = feeds
        return feeds

    monkeypatch.setattr(parity, "compare", spy_compare)
    monkeypatch.setattr(parity, "varied_feeds", spy_varied)
    return calls


def _no_reprs(lines: list[str]) -> None:
    """Human lines hold text, not printed Python dicts, lists of strings or None/True/False."""
    for line in lines:
        assert not re.search(r"[{}]|\['|\[\{|\bNone\b|\bTrue\b|\bFalse\b", line), line


# ----- one option ---------------------------------------------------------------------------------
@pytest.mark.parametrize("command", FP16_COMMANDS)
def test_fp16_is_the_same_option_in_every_command(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (and after hyphens)
    assert "--fp16[auto]" in text and "".join(FP16_HELP.split()) in text
    with pytest.raises(SystemExit) as info:
        main([command, "m.onnx", "--fp16", "fast"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert err.strip().splitlines() == [
        f"graphfix: error: argument --fp16: expected nothing or 'auto', not 'fast' (write --fp16 after MODEL) "
        f"(see `graphfix {command} --help`)"]


@pytest.mark.parametrize("command", ["swap-head", "convert"])
def test_fp16_auto_in_the_target_path(command, tmp_path, capsys):
    src = str(REPO / "fixtures" / "onnx" / "cnn_softmax.onnx")
    out = tmp_path / "out.onnx"
    extra = ["--labels", "3"] if command == "swap-head" else []
    assert main([command, src, *extra, "--target", "cuda", "--fp16", "auto", "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "exported for cuda, fp16 auto: ready" in lines
    assert any(re.fullmatch(r"  fp16 auto: 0 of \d+ nodes kept fp32 \(1 tries\)", line) for line in lines), lines
    _no_reprs(lines)
    stored = Model.from_proto(onnx.load(str(out)))
    assert stored.metadata["export"]["fp16"] == "auto"


# ----- calibrate: plain fp16 fails parity, --fp16 auto is accepted ------------------------------
@pytest.fixture
def drift_files(tmp_path):
    """The fp16-drift model trained by train-head (NPZ), and a held-out CSV of 8x8 PNG images."""
    from PIL import Image

    from graphfix.data.features import feature_model

    src = tmp_path / "drift.onnx"
    onnx.save(M.fp16_drift(), str(src))
    model = Model.from_proto(M.fp16_drift())
    rng = np.random.default_rng(1)
    x = rng.random((80, 3, 8, 8)).astype(np.float32)
    feats = feature_model(model).run(x)["features"]
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6) @ np.random.default_rng(5).standard_normal((8, 4))
    np.savez(tmp_path / "train.npz", x=x, y=(z > 0.3).astype(np.uint8))
    (tmp_path / "img").mkdir()
    rows = ["path,labels"]
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        rows.append(f"img/{i}.png," + ";".join(n for j, n in enumerate("abcd") if (i >> j) & 1))
    (tmp_path / "heldout.csv").write_text("\n".join(rows) + "\n")
    trained = tmp_path / "trained.onnx"
    assert main(["train-head", str(src), "--train", str(tmp_path / "train.npz"), "--loss", "bce", "-o", str(trained),
                 "-q"]) == 0
    return tmp_path


def test_calibrate_fp16_fails_parity_then_fp16_auto_is_accepted(drift_files, fed, capsys):
    from graphfix.data import load_dataset
    from graphfix.data.images import Preprocess, load_images

    d = drift_files
    out, report = d / "cal.onnx", d / "report"
    cmd = ["calibrate", str(d / "trained.onnx"), "--heldout", str(d / "heldout.csv"), "--target", "tensorrt",
           "--report", str(report), "--no-plots", "-o", str(out)]
    capsys.readouterr()
    assert main([*cmd, "--fp16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "parity failed: output" in err[0], err
    assert err[0].endswith("(nothing was written; run the same command with `--fp16 auto` in place of `--fp16`: it "
                           "keeps in fp32 the fewest nodes that bring parity within tolerance; the backbone features "
                           "are cached, so the data is not run again)"), err
    assert not out.exists() and not report.exists()

    fed.clear()
    assert main([*cmd, "--fp16", "auto", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    export_doc = doc["export"]
    auto = export_doc["notes"]["fp16_auto"]
    assert export_doc["fp16"] == "auto" and export_doc["ready"] is True
    assert auto["kept_fp32"] == ["conv_a"] and auto["candidates"] > 1
    assert export_doc["parity"]["ok"] and export_doc["parity"]["inputs"] == "8 rows of heldout.csv"
    assert out.exists() and (report / "report.json").exists()
    # every try of the search was judged on the first 8 held-out images, as calibrate decodes them
    model = Model.from_proto(onnx.load(str(d / "trained.onnx")))
    ds = load_dataset(d / "heldout.csv", model.labels, Preprocess.for_model(model))
    expected = load_images(ds.paths[:8], ds.preprocess)
    assert len(fed) == auto["tries"]
    for call in fed:
        assert call["generated"] is None and len(call["given"]) == 1
        assert np.array_equal(call["given"][0]["data"], expected)
    # the written model is fp16 inside, calibrated, and within the fp16 tolerance on those images
    written = Model.from_proto(onnx.load(str(out)))
    assert written.metadata["thresholds"] and "Cast" in written.op_histogram()
    probs = written.run(expected)["probabilities"]
    assert np.abs(probs - model.run(expected)["probabilities"]).max() <= 1e-2


# ----- parity inputs follow the model ------------------------------------------------------------
def test_a_baked_uint8_model_gets_uint8_images(fed):
    from graphfix.convert.export.preprocess import bake_preprocess

    baked = bake_preprocess(Model.from_proto(M.fp16_drift(CAFFE_PREP)))
    result = export(baked, None, check=False)
    (feeds,) = fed[0]["generated"]
    images = feeds["image"]
    assert images.dtype == np.uint8 and images.shape == (8, 8, 8, 3)
    assert images.min() == 0 and images.max() == 255
    assert result.parity["inputs"] == "8 random uint8 images 0..255"


def test_a_model_with_a_stored_mean_gets_inputs_in_that_range(fed):
    result = export(Model.from_proto(M.fp16_drift(CAFFE_PREP)), None, check=False)
    (feeds,) = fed[0]["generated"]
    x = feeds["data"]
    assert x.dtype == np.float32 and x.shape == (8, 3, 8, 8)
    pixels = x + np.array(CAFFE_PREP["mean"], np.float32).reshape(1, 3, 1, 1)  # x = pixel - mean (scale 1, std 1)
    assert np.array_equal(pixels, np.round(pixels)) and pixels.min() == 0 and pixels.max() == 255
    assert x.min() == -123 and x.max() == 255 - 104
    assert result.parity["inputs"] == ("8 random 0..255 images through the stored preprocessing "
                                       "(BGR, x = (pixel - 104,117,123) * 1 / 1)")


def test_baking_does_not_change_what_parity_sees(fed):
    """The baked and the float model are fed the same pixels: the same reference outputs, the same verdict."""
    from graphfix.convert.export.preprocess import bake_preprocess

    model = Model.from_proto(M.fp16_drift(CAFFE_PREP))
    plain = export(model, None, check=False)
    baked = export(bake_preprocess(model), None, check=False)
    assert plain.parity["ok"] and baked.parity["ok"]
    for name in ("logits", "probabilities"):
        assert plain.parity["outputs"][name]["max_abs_ref"] == baked.parity["outputs"][name]["max_abs_ref"]
    assert fed[0]["generated"][0]["data"].shape == (8, 3, 8, 8) and fed[1]["generated"][0]["image"].shape == (8, 8, 8, 3)


def test_a_model_without_stored_preprocessing_keeps_the_seeded_varied_batch(fed):
    result = export(Model.from_proto(M.fp16_drift()), None, check=False)
    (feeds,) = fed[0]["generated"]
    first = np.random.default_rng(0).standard_normal((3, 8, 8)) * 0.5
    assert np.array_equal(feeds["data"][0], first.astype(np.float32))
    assert result.parity["inputs"].startswith("8 seeded varied inputs")


def test_export_inputs_win_over_generated_ones(tmp_path, fed, capsys):
    src = tmp_path / "m.onnx"
    onnx.save(M.fp16_drift(CAFFE_PREP), str(src))
    npz = tmp_path / "x.npz"
    given = np.random.default_rng(3).uniform(-100, 100, (2, 3, 8, 8)).astype(np.float32)
    np.savez(npz, data=given)
    assert main(["export", str(src), "--inputs", str(npz), "-o", str(tmp_path / "o.onnx"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["parity"]["runs"] == ["sample 0"] and doc["parity"]["inputs"] == "2 rows of --inputs x.npz"
    assert fed[0]["generated"] is None and np.array_equal(fed[0]["given"]["data"], given)


# ----- the search shows progress; the output is text ---------------------------------------------
def test_fp16_auto_shows_progress_with_a_total_and_prints_text(tmp_path, monkeypatch, capsys):
    import graphfix.progress as progress

    bars: list[dict] = []

    class Bar:
        def __init__(self, **kwargs):
            bars.append({**kwargs, "updates": 0})

        def update(self, n=1):
            bars[-1]["updates"] += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(progress, "bar", lambda **kw: Bar(**kw))
    src = tmp_path / "m.onnx"
    onnx.save(M.fp16_drift(), str(src))
    assert main(["export", str(src), "--fp16", "auto", "-o", str(tmp_path / "o.onnx")]) == 0
    lines = capsys.readouterr().out.splitlines()
    (auto,) = [re.fullmatch(r"  fp16 auto: (\d+) of (\d+) nodes kept fp32 \((\d+) tries\): conv_a", line)
               for line in lines if line.startswith("  fp16 auto")]
    assert auto, lines
    kept, candidates, tries = map(int, auto.groups())
    assert kept == 1 and bars == [{"total": 2 + 2 * math.ceil(math.log2(candidates)), "desc": "fp16 auto",
                                   "unit": "try", "updates": tries}]
    assert tries <= bars[0]["total"]
    assert "  parity (fp16) on 8 seeded varied inputs (normal x0.5..x4, uniform, Laplace): ok" in lines
    _no_reprs(lines)


def test_export_notes_are_sentences():
    notes = {
        "fp16_auto": {"kept_fp32": [f"n{i}" for i in range(9)], "kept_fp32_count": 9, "converted": 3,
                      "candidates": 12, "tries": 8, "block": "prefix"},
        "fp16_converted_nodes": 3,
        "fp16_overflow_kept_fp32": [{"node": "scale", "initializer": "big", "max_abs": 1e5}],
        "fp16_underflow": [{"initializer": "w", "flushed_to_zero": 4}, {"initializer": "v", "flushed_to_zero": 1}],
        "int64_out_of_range": [{"name": "huge", "min": 0, "max": 2**40}],
    }
    assert note_lines(notes) == [
        "  fp16 auto: 9 of 12 nodes kept fp32 (8 tries): n0, n1, n2, n3, n4, n5 and 3 more",
        "  fp16: 3 nodes converted",
        "  fp16: 1 node kept fp32, its weights exceed 65504: scale (big up to 1e+05)",
        "  fp16: 5 weights below 6e-8 flushed to zero in 2 initializers: w, v",
        "  int64 constants outside the int32 range: huge (0 to 1099511627776)",
    ]


def test_dataset_feeds_take_the_first_rows_and_skip_features_folders(tmp_path):
    from graphfix.convert.export._parity import dataset_feeds

    model = Model.from_proto(M.fp16_drift())
    x = np.random.default_rng(0).random((12, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "h.npz", x=x, y=np.zeros((12, 4), np.uint8))
    feeds, source = dataset_feeds(model, tmp_path / "h.npz")
    assert source == "8 rows of h.npz" and len(feeds) == 1 and np.array_equal(feeds[0]["data"], x[:8])
    assert dataset_feeds(model, tmp_path) is None  # a features folder: the seeded inputs are used
