"""The strict CSV reader and the image check (issue 22, items 3-5): every problem of a manifest in one
error with its line, every bad image in one error before any backbone runs, --skip-bad."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from graphfix.cli import main
from graphfix.data.datasets import MAX_LISTED, label_name_problems, load_dataset
from graphfix.data.images import Preprocess, check_image, decode_image
from graphfix.errors import GraphfixError
from graphfix.model import Model
from tests.tiny_heads import build_swapped

PIL = pytest.importorskip("PIL.Image")
LABELS = ["cat", "dog", "bird"]


@pytest.fixture
def prep():
    return Preprocess(size=(6, 6), channels=3)


@pytest.fixture
def folder(tmp_path):
    """im0.png .. im4.png (6x6 RGB), a text file named bad.png, a folder named dir.png."""
    for i in range(5):
        PIL.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "bad.png").write_text("not a png\n")
    (tmp_path / "dir.png").mkdir()
    return tmp_path


def _error(folder, text, prep, labels=LABELS, **kw) -> str:
    path = folder / "d.csv"
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    with pytest.raises(GraphfixError) as err:
        load_dataset(path, labels, prep, **kw)
    assert err.value.exit_code == 2
    line = str(err.value)
    assert line.startswith(f"{path}: ") and "\n" not in line
    return line


# ----- the manifest: one problem per test, the exact text and line --------------------------------
def test_row_without_labels_field_is_an_error(folder, prep):
    line = _error(folder, "path,labels\nim0.png,cat\n\nim1.png\n", prep)
    assert line == (f"{folder / 'd.csv'}: 1 bad row: line 4: 1 field, expected 2 "
                    "(path,labels: an image with no label is written `im1.png,`)")


def test_explicit_empty_labels_field_means_no_label(folder, prep):
    (folder / "d.csv").write_text('path,labels\nim0.png,\nim1.png,""\nim2.png, ; \nim3.png,dog;\n')
    ds = load_dataset(folder / "d.csv", LABELS, prep)
    assert ds.y.tolist() == [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]]
    assert ds.lines == [2, 3, 4, 5]


def test_extra_column_is_an_error(folder, prep):
    line = _error(folder, "path,labels\nim0.png,cat,dog\n", prep)
    assert line.endswith(": 1 bad row: line 2: 3 fields, expected 2 (path,labels)")
    line = _error(folder, "path,cat,dog,bird\nim0.png,1,0\n", prep)
    assert line.endswith(": 1 bad row: line 2: 3 fields, expected 4 (path,cat,dog,bird)")


def test_unknown_label_names_line_and_model_labels(folder, prep):
    line = _error(folder, "path,labels\nim0.png,cat\nim1.png,cat;zebra\n", prep)
    assert line.endswith(": 1 bad row: line 3: unknown label 'zebra' (the model's labels are cat, dog, bird)")


@pytest.mark.parametrize("second,same", [("im0.png,dog", "other labels"), ("./sub/../im0.png,cat", "the same labels")])
def test_same_image_twice(folder, prep, second, same):
    line = _error(folder, f"path,labels\nim0.png,cat\nim1.png,dog\n{second}\n", prep)
    shown = second.split(",")[0]
    assert line.endswith(f": 1 bad row: line 4: {shown} is already listed at line 2 (with {same}) (list each image once)")


def test_same_image_twice_in_01_columns(folder, prep):
    line = _error(folder, "path,cat,dog,bird\nim0.png,1,0,0\nim0.png,0,1,0\n", prep)
    assert "line 3: im0.png is already listed at line 2 (with other labels)" in line


def test_01_columns_not_0_or_1(folder, prep):
    line = _error(folder, "path,cat,dog,bird\nim0.png,1,0,0.5\nim1.png,yes,0,\nim2.png,1.0,0,0\n", prep)
    assert line.endswith(": 3 bad rows: line 2: column 'bird' is '0.5', expected 0 or 1; "
                         "line 3: column 'cat' is 'yes', expected 0 or 1; line 3: column 'bird' is '', expected 0 or 1")


def test_empty_path(folder, prep):
    line = _error(folder, "path,labels\nim0.png,cat\n ,dog\n", prep)
    assert line.endswith(": 1 bad row: line 3: empty path")


def test_every_problem_in_one_error_first_20_and_a_count(folder, prep):
    rows = ["path,labels", "im0.png"] + [f"im{i % 5}x.png,cat,extra" for i in range(30)] + ["im1.png,zebra"]
    line = _error(folder, "\n".join(rows) + "\n", prep)
    assert line.startswith(f"{folder / 'd.csv'}: 32 bad rows: line 2: 1 field, expected 2")
    assert line.count("expected 2 (path,labels") == MAX_LISTED
    assert "line 21: 3 fields, expected 2 (path,labels); ... and 12 more (the model's labels are" in line
    assert "zebra" not in line  # the 32nd problem is counted, not listed


def test_bom_accepted_in_both_header_forms(folder, prep):
    (folder / "d.csv").write_bytes("\ufeffpath,labels\r\nim0.png,cat;bird\r\nim1.png,\r\n".encode("utf-8"))
    assert load_dataset(folder / "d.csv", LABELS, prep).y.tolist() == [[1, 0, 1], [0, 0, 0]]
    (folder / "e.csv").write_bytes("\ufeffpath,bird,cat,dog\nim0.png,1,0,0\n".encode("utf-8"))
    assert load_dataset(folder / "e.csv", LABELS, prep).y.tolist() == [[0, 0, 1]]


def test_not_utf8_names_the_line(folder, prep):
    line = _error(folder, b"path,labels\nim0.png,cat\nim\xe9.png,dog\n", prep)
    assert line.endswith(": line 3: not UTF-8 text (byte 0xe9) (save it as UTF-8 (Excel: CSV UTF-8))")


def test_header_label_columns_checked_once(folder, prep):
    line = _error(folder, "path,cat,dog;bird,cat\nim0.png,1,0,0\n", prep, labels=None)
    assert line.endswith(": 2 header problems: line 1 column 3: label 'dog;bird' contains the separator ';'; "
                         "line 1 column 4: duplicate label 'cat' (first at line 1 column 2)")
    line = _error(folder, "path,cat,dog\nim0.png,1,0\n", prep)
    assert line.endswith(": 1 header problem: line 1: no column for the model's labels ['bird'] "
                         "(the model's labels are cat, dog, bird)")


def test_label_name_problems():
    assert label_name_problems(["a", "b;c", "", "\ufeffd", "a"]) == [
        "label 2: label 'b;c' contains the separator ';'",
        "label 3: empty label name",
        "label 4: label '\\ufeffd' contains a byte order mark (U+FEFF)",
        "label 5: duplicate label 'a' (first at label 1)",
    ]


# ----- images: checked before any decoding, all bad ones in one error ----------------------------
def test_all_bad_images_in_one_error_with_lines(folder, prep):
    rows = ["path,labels"] + [f"im{i}.png,cat" for i in range(5)] + ["bad.png,dog", "gone.png,", "dir.png,bird"]
    line = _error(folder, "\n".join(rows) + "\n", prep)
    assert line == (
        f"{folder / 'd.csv'}: 3 bad images (of 8): "
        "line 7: bad.png: cannot read image (not an image format Pillow knows); "
        "line 8: gone.png: image not found; line 9: dir.png: not a regular file "
        "(fix or remove these rows, or leave them out with --skip-bad)"
    )


def test_image_over_max_pixels_refused_from_its_header(folder):
    small = Preprocess(size=(6, 6), max_pixels=35)
    line = _error(folder, "path,labels\nim0.png,cat\n", small)
    assert line.endswith(": 1 bad image (of 1): line 2: im0.png: image is 6x6 = 36 pixels, over the limit of 35 "
                         "(every image is bad; raise the limit with --max-pixels)")


def test_check_image_is_the_decoders_rule(folder, prep):
    """One place knows what a readable image is: decode_image refuses exactly what check_image names."""
    for name in ("bad.png", "gone.png", "dir.png"):
        problem = check_image(str(folder / name), prep)
        with pytest.raises(GraphfixError) as err:
            decode_image(str(folder / name), prep, "d.csv line 7")
        assert err.value.message == problem and err.value.hint == "listed at d.csv line 7"
    assert check_image(str(folder / "im0.png"), prep) is None


def test_skip_bad_leaves_rows_out_and_lists_them(folder, prep):
    rows = ["path,labels", "im0.png,cat", "bad.png,dog", "im1.png,dog", "gone.png,", "im2.png,bird"]
    (folder / "d.csv").write_text("\n".join(rows) + "\n")
    ds = load_dataset(folder / "d.csv", LABELS, prep, skip_bad=True)
    assert ds.y.tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 1]] and ds.lines == [2, 4, 6]
    assert [p.rsplit("/", 1)[1] for p in ds.paths] == ["im0.png", "im1.png", "im2.png"]
    assert [str(r) for r in ds.skipped] == [
        "d.csv line 3: bad.png: cannot read image (not an image format Pillow knows)",
        "d.csv line 5: gone.png: image not found",
    ]
    assert next(ds.batches(8)).shape == (3, 3, 6, 6)


def test_skip_bad_does_not_skip_manifest_errors_nor_an_all_bad_set(folder, prep):
    line = _error(folder, "path,labels\nim0.png,zebra\n", prep, skip_bad=True)
    assert "line 2: unknown label 'zebra'" in line
    line = _error(folder, "path,labels\nbad.png,cat\n", prep, skip_bad=True)
    assert line.endswith(": 1 bad image (of 1): line 2: bad.png: cannot read image (not an image format Pillow knows) "
                         "(every image is bad)")


# ----- the commands: checks before any backbone runs; --skip-bad --------------------------------
@pytest.fixture
def setup(folder):
    model = build_swapped(n_labels=3, size=6)
    model.save(str(folder / "m.onnx"))
    rows = ["path,labels"] + [f"im{i % 5}.png,c{i % 3}" for i in range(5)]
    (folder / "good.csv").write_text("\n".join(rows) + "\n")
    (folder / "bad.csv").write_text("\n".join(rows + ["bad.png,c0", "gone.png,c1"]) + "\n")
    return folder


COMMANDS = {
    "train-head": ["train-head", "m.onnx", "--train", "{data}", "-o", "out.onnx"],
    "calibrate": ["calibrate", "m.onnx", "--untrained", "--heldout", "{data}", "-o", "out.onnx"],
    "features": ["features", "m.onnx", "{data}", "-o", "feats"],
    "predict": ["predict", "m.onnx", "{data}", "-o", "preds"],
}


def _run(folder, command, data, *more, capsys):
    argv = [a.format(data=folder / data) if "{" in a else (str(folder / a) if a.endswith((".onnx", "feats", "preds")) else a)
            for a in COMMANDS[command]]
    rc = main([*argv, "--no-cache", *more])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_data_refused_before_any_backbone_runs(setup, command, no_model_runs, capsys):
    sessions = no_model_runs
    before = sorted(p.name for p in setup.iterdir())
    rc, out, err = _run(setup, command, "bad.csv", capsys=capsys)
    assert rc == 2 and out == "" and not sessions
    assert err == (f"graphfix: error: {setup / 'bad.csv'}: 2 bad images (of 7): "
                   "line 7: bad.png: cannot read image (not an image format Pillow knows); line 8: gone.png: image not found "
                   "(fix or remove these rows, or leave them out with --skip-bad)\n")
    assert sorted(p.name for p in setup.iterdir()) == before  # nothing written
    (setup / "rows.csv").write_text("path,labels\nim0.png\nim1.png,c0,c1\n")
    rc, out, err = _run(setup, command, "rows.csv", capsys=capsys)
    assert rc == 2 and not sessions and "2 bad rows: line 2: 1 field, expected 2" in err


def test_skip_bad_train_head_and_calibrate(setup, capsys):
    rc, out, err = _run(setup, "train-head", "bad.csv", "--skip-bad", "--json", capsys=capsys)
    assert rc == 0, err
    assert err.splitlines() == [
        "graphfix: warning: 5 training samples: too few for 3-fold CV; loss bce, weight decay 0.01",
        f"graphfix: warning: --skip-bad left out 2 rows with a bad image, listed in {setup / 'out.skipped.csv'}",
        "graphfix: warning: 3 labels have fewer than 3 training positives (unreliable scores): c0 (2), c1 (2), c2 (1)",
    ]
    doc = json.loads(out)
    assert doc["skipped_rows"]["count"] == 2 and doc["skipped_rows"]["list"] == str(setup / "out.skipped.csv")
    with open(setup / "out.skipped.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["data", "line", "path", "problem"],
            [str(setup / "bad.csv"), "7", "bad.png", "cannot read image (not an image format Pillow knows)"],
            [str(setup / "bad.csv"), "8", "gone.png", "image not found"],
        ]
    trained = Model.load(str(setup / "out.onnx"))
    assert trained.metadata["training"]["skipped"] == {"count": 2, "rows": [
        "bad.csv line 7: bad.png: cannot read image (not an image format Pillow knows)",
        "bad.csv line 8: gone.png: image not found",
    ]}
    assert trained.metadata["training"]["train_samples"] == 5
    # trained on the good rows only: the same head as training on good.csv
    rc, _, err = _run(setup, "train-head", "good.csv", "-q", capsys=capsys)
    assert rc == 0 and err == ""
    good = Model.load(str(setup / "out.onnx"))
    x = np.random.default_rng(0).standard_normal((4, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(good.run(x)["probabilities"], trained.run(x)["probabilities"])
    # calibrate records it in graphfix.calibration; -q prints nothing, the list is still written
    (setup / "out.onnx").rename(setup / "m.onnx")
    rc, out, err = _run(setup, "calibrate", "bad.csv", "--skip-bad", "-q", capsys=capsys)
    assert rc == 0 and out == "" and err == ""
    assert Model.load(str(setup / "out.onnx")).metadata["calibration"]["skipped"]["count"] == 2
    assert (setup / "out.skipped.csv").read_text().count("\n") == 3


@pytest.mark.parametrize("command,listed", [("features", "feats.skipped.csv"), ("predict", "preds.skipped.csv")])
def test_skip_bad_features_and_predict(setup, command, listed, capsys):
    rc, out, err = _run(setup, command, "bad.csv", "--skip-bad", "--json", capsys=capsys)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["rows"] == 5 and doc["skipped"] == 0  # "skipped" stays the shards already there
    assert doc["skipped_rows"]["count"] == 2 and doc["skipped_rows"]["list"] == str(setup / listed)
    line = f"graphfix: warning: --skip-bad left out 2 rows with a bad image, listed in {setup / listed}"
    assert line in err.splitlines()  # (predict also warns that the model stores no thresholds)
    assert (setup / listed).read_text().splitlines()[1:] == [
        f"{setup / 'bad.csv'},7,bad.png,cannot read image (not an image format Pillow knows)",
        f"{setup / 'bad.csv'},8,gone.png,image not found",
    ]


@pytest.mark.parametrize("command", ["train-head", "calibrate"])
def test_skip_bad_list_commits_with_the_model(setup, command, monkeypatch, capsys):
    """The --skip-bad list is in the model's output set: when it cannot be committed, neither is
    the model (and no warning precedes the one error line)."""
    import errno
    import os

    import graphfix.output as output

    real_replace = os.replace

    def replace(a, b):
        if os.path.basename(b) == "out.skipped.csv":
            raise OSError(errno.EIO, os.strerror(errno.EIO), a)
        real_replace(a, b)

    monkeypatch.setattr(output.os, "replace", replace)
    before = sorted(p.name for p in setup.iterdir())
    rc, out, err = _run(setup, command, "bad.csv", "--skip-bad", capsys=capsys)
    assert rc == 1 and out == ""
    assert [ln for ln in err.splitlines() if "too few" not in ln] == [
        f"graphfix: error: {setup / 'out.skipped.csv'}: cannot write (Input/output error)"]
    assert sorted(p.name for p in setup.iterdir()) == before  # neither out.onnx nor the list, no staging folder
