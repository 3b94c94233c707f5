"""`--to mxnet|caffe` on swap-head / train-head, and every refusal: one line, exit 2 (or 1 for a
parity failure), no partial file set, inputs unchanged."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import graphfix as gf
from graphfix.convert import writeback
from graphfix.convert.mxnet._params import read_params
from graphfix.convert.writeback import write_back
from tests.convert.mxnet.mxnet_helpers import run_cli
from tests.convert.writeback.helpers import REPO, caffe_paths, mx_paths

MX_FILES = ("-symbol.json", "-0000.params", "-train-symbol.json", "-graphfix.json")


def _copy_lenet(folder):
    symbol, params = mx_paths("lenet")
    shutil.copy(symbol, folder / symbol.name)
    shutil.copy(params, folder / params.name)
    return folder / symbol.name, folder / params.name


def _swapped_lenet_and_data(folder, *, rows: int, seed: int):
    """A copy of the MXNet LeNet swapped to 3 labels (folder/ml.onnx, returned) and `rows` seeded
    training rows in folder/d.npz."""
    symbol, _ = _copy_lenet(folder)
    onnx_path = folder / "ml.onnx"
    assert run_cli("swap-head", symbol, "--labels", "3", "-o", onnx_path, "--input-shape", "data:1,1,28,28").returncode == 0
    rng = np.random.default_rng(seed)
    np.savez(folder / "d.npz", x=rng.standard_normal((rows, 1, 28, 28)).astype(np.float32),
             y=(rng.random((rows, 3)) > 0.5).astype(np.float32))
    return onnx_path


def _assert_refused(proc, *needles, code=2):
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphfix: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_swap_head_to_mxnet_json(tmp_path):
    symbol, _ = mx_paths("lenet")
    proc = run_cli("swap-head", symbol, "--labels", "4", "--to", "mxnet", "-o", tmp_path / "ml",
                   "--input-shape", "data:1,1,28,28", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["export"]["format"] == "mxnet" and doc["export"]["parity"]["max_abs_diff"] <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"ml{s}" for s in MX_FILES)


def test_swap_head_to_caffe_default_prefix(tmp_path):
    proto, weights = caffe_paths("lenet")
    shutil.copy(proto, tmp_path / "net.prototxt")
    shutil.copy(weights, tmp_path / "net.caffemodel")
    proc = run_cli("swap-head", tmp_path / "net.prototxt", "--labels", "3", "--to", "caffe", "-q")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    names = {p.name for p in tmp_path.iterdir()}
    assert {"net-multilabel-deploy.prototxt", "net-multilabel.caffemodel", "net-multilabel-train.prototxt",
            "net-multilabel-graphfix.json"} <= names


def test_train_head_to_mxnet_finds_source_beside_onnx(tmp_path):
    pytest.importorskip("torch")
    onnx_path = _swapped_lenet_and_data(tmp_path, rows=24, seed=0)
    proc = run_cli("train-head", onnx_path, "--train", tmp_path / "d.npz", "--epochs", "2", "--to", "mxnet",
                   "-o", tmp_path / "trained", "--no-cache", "--json")
    assert proc.returncode == 0, proc.stderr
    swapped = gf.load(onnx_path)  # head weights in the params are the trained ones, not the swap's
    new = read_params(tmp_path / "trained-0000.params")
    assert not np.array_equal(new.args["graphfix_head_weight"], swapped.ir.graph.initializers["graphfix_head.weight"].const_value.numpy())
    assert json.loads(proc.stdout)["export"]["parity"]["checked"]


def test_squared_head_writes_back_as_a_sigmoid_head(tmp_path):
    """--loss squared: the Platt scaling is folded into the head's weights, so the head written back
    is the plain FullyConnected + sigmoid the source format holds, and its parity check passes."""
    onnx_path = _swapped_lenet_and_data(tmp_path, rows=30, seed=1)
    proc = run_cli("train-head", onnx_path, "--train", tmp_path / "d.npz", "--loss", "squared", "--to", "mxnet",
                   "-o", tmp_path / "trained", "--no-cache", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    s = doc["history"]["settings"]
    assert s["loss"] == "squared" and s["platt"]["fitted_on"] == "out-of-fold"
    parity = doc["export"]["parity"]
    assert parity["checked"] and parity["max_abs_diff"] <= 1e-5, parity


def test_refusals_cli(tmp_path):
    symbol, _ = mx_paths("lenet")
    _assert_refused(run_cli("swap-head", symbol, "--labels", "3", "--to", "caffe", "-o", tmp_path / "x"),
                    "--to caffe needs a model converted from caffe", "came from mxnet")
    onnx_src = REPO / "fixtures" / "onnx" / "cnn_softmax.onnx"
    _assert_refused(run_cli("swap-head", onnx_src, "--labels", "3", "--to", "mxnet", "-o", tmp_path / "x"), "came from onnx")
    _assert_refused(run_cli("swap-head", symbol, "--labels", "3", "--to", "mxnet", "--target", "cpu", "-o", tmp_path / "x"),
                    "--target")
    _assert_refused(run_cli("swap-head", symbol, "--labels", "3", "--to", "mxnet", "-o", tmp_path / "no" / "x"),
                    "output folder does not exist")
    _assert_refused(run_cli("swap-head", mx_paths("resnet18_v1")[0], "--labels", "3", "--to", "mxnet", "-o", tmp_path / "x",
                            "--features", "resnetv10_dense0_fwd_flatten"), "cannot be written back exactly")
    assert list(tmp_path.iterdir()) == []


def test_source_changed_or_gone(tmp_path):
    symbol, params = _copy_lenet(tmp_path)
    model = gf.swap_head(gf.load(symbol), labels=3)
    out = tmp_path / "out"
    out.mkdir()
    with open(symbol, "a") as fh:
        fh.write("\n")
    with pytest.raises(gf.GraphfixError, match="has changed since conversion") as err:
        write_back(model, out / "x", to="mxnet")
    assert err.value.kind == "usage"
    symbol.unlink()
    with pytest.raises(gf.GraphfixError, match="is gone"):
        write_back(model, out / "x", to="mxnet")
    assert list(out.iterdir()) == []
    assert params.read_bytes() == mx_paths("lenet")[1].read_bytes()


def test_softmax_head_refused(tmp_path):
    model = gf.swap_head(gf.load(mx_paths("lenet")[0]), labels=3)
    for node in model.ir.graph:
        if node.op_type == "Sigmoid":
            node.op_type = "Softmax"
    with pytest.raises(gf.GraphfixError, match="only sigmoid heads"):
        write_back(model, tmp_path / "x", to="mxnet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("to", ["mxnet", "caffe"])
def test_parity_failure_writes_nothing(tmp_path, monkeypatch, to):
    if to == "mxnet":
        model = gf.swap_head(gf.load(mx_paths("lenet")[0], input_shape="data:1,1,28,28"), labels=3)
        sources = None
    else:
        proto, weights = caffe_paths("lenet")
        model = gf.swap_head(gf.load(proto, weights=weights), labels=3)
        sources = [proto, weights]
    monkeypatch.setattr(writeback, "TOLERANCE", -1.0)
    with pytest.raises(gf.GraphfixError, match="differs from the ONNX model") as err:
        write_back(model, tmp_path / "x", to=to, sources=sources)
    assert err.value.kind == "parity"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("existed", [False, True])
def test_report_failure_leaves_no_write_back_files(tmp_path, monkeypatch, capsys, existed):
    """calibrate --to mxnet --report DIR: the write-back files and the report are one set; a report
    write that fails after the files are staged leaves neither (an older file set byte-identical)."""
    import errno
    import os

    import graphfix.calibrate.report as report
    from graphfix.cli import main

    symbol, _ = _copy_lenet(tmp_path)
    onnx_path = tmp_path / "ml.onnx"
    gf.swap_head(gf.load(symbol, input_shape="data:1,1,28,28"), labels=3, seed=0).save(onnx_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((24, 1, 28, 28)).astype(np.float32),
             y=(rng.random((24, 3)) > 0.5).astype(np.float32))
    old = {tmp_path / f"cal{s}": f"older {s}\n".encode() for s in MX_FILES} if existed else {}
    for path, data in old.items():
        path.write_bytes(data)
    before = sorted(p.name for p in tmp_path.iterdir())

    def full_disk(folder, *args, **kwargs):
        path = os.path.join(folder, "index.html")
        with open(path, "wb") as fh:
            fh.write(b"<html")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(report, "write_report", full_disk)
    code = main(["calibrate", str(onnx_path), "--heldout", str(tmp_path / "d.npz"), "--untrained", "--to", "mxnet",
                 "-o", str(tmp_path / "cal"), "--report", str(tmp_path / "rdir"), "--no-plots", "-q"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 1 and "Traceback" not in err
    assert lines == [f"graphfix: error: {tmp_path / 'rdir' / 'index.html'}: cannot write (No space left on device)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no rdir, no cal-*, no staging folder
    assert all(path.read_bytes() == data for path, data in old.items())
