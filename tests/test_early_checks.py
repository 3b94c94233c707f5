"""Checks that need no computation run before the first model run (issue 22 item 5): --to's
source files, in train-head and calibrate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from graphfix.cli import main
from tests.conftest import FIXTURES


@pytest.fixture
def gone(tmp_path, capsys):
    """A Caffe LeNet swapped to 3 labels whose caffemodel is gone; data for it as NPZ."""
    for name in ("lenet.prototxt", "lenet.caffemodel"):
        shutil.copy(FIXTURES / "caffe" / name, tmp_path / name)
    assert main(["swap-head", str(tmp_path / "lenet.prototxt"), "--labels", "3", "-o", str(tmp_path / "s.onnx"), "-q"]) == 0
    (tmp_path / "lenet.caffemodel").unlink()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((12, 1, 28, 28)).astype(np.float32),
             y=(rng.random((12, 3)) > 0.5).astype(np.uint8))
    capsys.readouterr()
    return tmp_path


@pytest.mark.parametrize("command", [
    ["train-head", "s.onnx", "--train", "d.npz"],
    ["calibrate", "s.onnx", "--untrained", "--heldout", "d.npz"],
])
def test_a_gone_write_back_source_is_refused_before_any_model_runs(gone, command, no_model_runs, capsys):
    ran = no_model_runs
    argv = [str(gone / a) if a.endswith((".onnx", ".npz")) else a for a in command]
    before = sorted(p.name for p in gone.iterdir())
    rc = main([*argv, "--no-cache", "--to", "caffe", "-o", str(gone / "out")])
    out, err = capsys.readouterr()
    assert rc == 2 and not ran and out == ""
    assert err == (f"graphfix: error: {gone / 's.onnx'}: source file lenet.caffemodel is gone (looked in {gone}) "
                   "(pass --source FILE|DIR)\n")
    assert sorted(p.name for p in gone.iterdir()) == before
