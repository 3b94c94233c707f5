"""Data sets: CSV manifests (names, 0/1 columns), NPZ, preprocessing, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.data.datasets import Dataset, load_dataset
from graphfix.data.images import Preprocess, image_paths, load_images
from graphfix.errors import GraphfixError

PIL = pytest.importorskip("PIL.Image")
LABELS = ["cat", "dog", "bird"]


def _images(folder, n=3, size=(5, 4), mode="RGB"):
    paths = []
    for i in range(n):
        arr = np.full((size[1], size[0], 3), 10 * i, np.uint8)
        arr[..., 0] = 200  # red channel
        p = folder / f"im{i}.png"
        PIL.fromarray(arr).convert(mode).save(p)
        paths.append(p.name)
    return paths


@pytest.fixture
def prep():
    return Preprocess(size=(4, 5), channels=3)


def test_csv_names(tmp_path, prep):
    names = _images(tmp_path)
    (tmp_path / "d.csv").write_text(f"path,labels\n{names[0]},cat;bird\n{names[1]},\n{names[2]}, dog \n")
    ds = load_dataset(tmp_path / "d.csv", LABELS, prep)
    assert ds.y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    x = next(ds.batches(8))
    assert x.shape == (3, 3, 4, 5) and x.dtype == np.float32
    assert x[0, 0, 0, 0] == pytest.approx(200 / 255)


def test_csv_columns_any_order(tmp_path, prep):
    names = _images(tmp_path, 2)
    (tmp_path / "d.csv").write_text(f"path,bird,cat,dog\n{names[0]},1,0,0\n{names[1]},0,1,1\n")
    ds = load_dataset(tmp_path / "d.csv", LABELS, prep)
    assert ds.y.tolist() == [[0, 0, 1], [1, 1, 0]]


@pytest.mark.parametrize("body,match", [
    ("path,labels\nmissing.png,cat\n", "image not found"),
    ("path,labels\n{0},cat;zebra\n", "unknown label 'zebra'"),
    ("path,cat,dog\n{0},1,0\n", r"no column for the model.s labels \[.bird.\]"),
    ("path,labels\n", "empty"),
    ("", "empty"),
    ("path,cat,dog,bird\n{0},1,0,0.5\n", "0 or 1"),
    ("file,labels\n{0},cat\n", "bad CSV header"),
])
def test_csv_errors(tmp_path, prep, body, match):
    names = _images(tmp_path, 1)
    (tmp_path / "d.csv").write_text(body.format(*names))
    with pytest.raises(GraphfixError, match=match) as err:
        load_dataset(tmp_path / "d.csv", LABELS, prep)
    assert err.value.exit_code == 2


def test_npz_and_errors(tmp_path):
    x = np.zeros((4, 3, 2, 2), np.float32)
    y = np.zeros((4, 3), np.uint8)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    assert len(load_dataset(tmp_path / "ok.npz", LABELS)) == 4
    bad = x.copy()
    bad[1, 0, 0, 0] = np.nan
    np.savez(tmp_path / "nan.npz", x=bad, y=y)
    with pytest.raises(GraphfixError, match="NaN"):
        load_dataset(tmp_path / "nan.npz", LABELS)
    ynan = y.astype(np.float32)
    ynan[0, 0] = np.nan
    np.savez(tmp_path / "ynan.npz", x=x, y=ynan)
    with pytest.raises(GraphfixError, match="NaN"):
        load_dataset(tmp_path / "ynan.npz", LABELS)
    np.savez(tmp_path / "count.npz", x=x, y=np.zeros((4, 5)))
    with pytest.raises(GraphfixError, match="5 labels but the model has 3"):
        load_dataset(tmp_path / "count.npz", LABELS)
    np.savez(tmp_path / "empty.npz", x=x[:0], y=y[:0])
    with pytest.raises(GraphfixError, match="empty"):
        load_dataset(tmp_path / "empty.npz", LABELS)
    np.savez(tmp_path / "nox.npz", y=y)
    with pytest.raises(GraphfixError, match="'x' and 'y'"):
        load_dataset(tmp_path / "nox.npz", LABELS)
    with pytest.raises(GraphfixError, match="no such"):
        load_dataset(tmp_path / "absent.npz", LABELS)


def test_preprocess_bgr_gray_mean_std(tmp_path):
    _images(tmp_path, 1, size=(3, 3))
    path = str(tmp_path / "im0.png")
    rgb = load_images([path], Preprocess(size=(3, 3), channels=3, scale=1.0))
    bgr = load_images([path], Preprocess(size=(3, 3), channels=3, channel_order="BGR", scale=1.0))
    assert np.array_equal(rgb[0, ::-1], bgr[0])
    norm = load_images([path], Preprocess(size=(2, 2), channels=3, scale=1.0, mean=[100, 0, 0], std=[2, 1, 1]))
    assert norm.shape == (1, 3, 2, 2) and norm[0, 0, 0, 0] == pytest.approx(50.0)
    gray = load_images([path], Preprocess(size=(3, 3), channels=1))
    assert gray.shape == (1, 1, 3, 3)


def test_preprocess_for_model(tiny_model):
    p = Preprocess.for_model(tiny_model)
    assert p.size == (6, 6) and p.channels == 3 and p.scale == pytest.approx(1 / 255)
    p2 = Preprocess.for_model(tiny_model, size=[8], channel_order="BGR", mean=[1, 2, 3])
    assert p2.size == (8, 8) and p2.channel_order == "BGR"
    with pytest.raises(GraphfixError, match="mean has 2 values"):
        Preprocess.for_model(tiny_model, mean=[1, 2])


def test_image_paths(tmp_path):
    _images(tmp_path, 2)
    assert len(image_paths([str(tmp_path)])) == 2
    with pytest.raises(GraphfixError, match="image not found"):
        image_paths([str(tmp_path / "nope.png")])


def test_unreadable_image(tmp_path, prep):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(GraphfixError, match="cannot read image"):
        load_images([str(tmp_path / "bad.png")], prep)


def test_fingerprint_changes_with_data():
    a = Dataset.from_arrays(np.zeros((2, 3, 2, 2)), np.zeros((2, 3)))
    b = Dataset.from_arrays(np.ones((2, 3, 2, 2)), np.zeros((2, 3)))
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == Dataset.from_arrays(np.zeros((2, 3, 2, 2)), np.zeros((2, 3))).fingerprint()


def test_caffe_style_and_torchvision_style_metadata(tmp_path, build):
    _images(tmp_path, 1, size=(6, 6))
    path = str(tmp_path / "im0.png")
    caffe = build(preprocess={"layout": "NCHW", "channel_order": "BGR", "size": [6, 6], "mean": [104.0, 117.0, 123.0],
                              "std": None, "scale": 0.5, "pixel_range": 255})
    p = Preprocess.for_model(caffe)
    x = load_images([path], p)
    # BGR: channel 2 is red (200): (200 - 123) * 0.5
    assert x[0, 2, 0, 0] == pytest.approx((200 - 123) * 0.5)
    tv = build(preprocess={"size": [6, 6], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "scale": 1.0, "pixel_range": 1})
    x = load_images([path], Preprocess.for_model(tv))
    assert x[0, 0, 0, 0] == pytest.approx((200 / 255 - 0.485) / 0.229, rel=1e-5)
    nhwc = build(preprocess={"layout": "NHWC"})
    with pytest.raises(GraphfixError, match="layout"):
        Preprocess.for_model(nhwc)
