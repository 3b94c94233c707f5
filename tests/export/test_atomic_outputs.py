"""`graphfix export -o X --triton R` writes all of its outputs or none (one `graphfix.output.OutputSet`).

Faults with real files (R a regular file, R unwritable) and injected ones (the config write hits a
full disk; a rename fails while the set is being committed). Each case checks the exit code, the one
error line naming the path, X absent when it was absent and byte-identical when it existed, R as it
was, and no staging folder left anywhere.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

import graphfix as gf
from graphfix.cli import main
from tests.conftest import FIXTURES, run_cli

OLD = b"an older export, kept byte for byte\n"


@pytest.fixture
def src(tmp_path) -> Path:
    """A swapped fixture (the CLI's input), in its own folder."""
    folder = tmp_path / "src"
    folder.mkdir()
    path = folder / "m.onnx"
    gf.swap_head(gf.load(FIXTURES / "onnx" / "cnn_softmax.onnx"), labels=3, seed=0).save(path)
    return path


def _tree(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder`: path -> sha256 (files) or "dir"."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if "~gfx-" in p.name]


def _one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("graphfix: error: "), stderr
    return lines[0]


def _out(tmp_path: Path, existed: bool) -> Path:
    out = tmp_path / "exports" / "x.onnx"  # its folder sorts first: committed before the repository
    out.parent.mkdir()
    if existed:
        out.write_bytes(OLD)
    return out


def _untouched(out: Path, existed: bool) -> None:
    if existed:
        assert out.read_bytes() == OLD
        assert sorted(p.name for p in out.parent.iterdir()) == ["x.onnx"]
    else:
        assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("existed", [False, True])
def test_repository_that_is_a_file(src, tmp_path, existed):
    out = _out(tmp_path, existed)
    repo = tmp_path / "models"
    repo.write_bytes(b"not a folder")
    res = run_cli("export", src, "--target", "cpu", "-o", out, "--triton", repo, "--name", "t")
    assert res.returncode == 2
    assert _one_line(res.stderr) == f"graphfix: error: {repo}: is not a folder; --triton needs a model repository folder"
    _untouched(out, existed)
    assert repo.read_bytes() == b"not a folder" and not _leftovers(tmp_path)


@pytest.mark.parametrize("existed", [False, True])
def test_repository_that_cannot_be_written(src, tmp_path, existed):
    """A read-only repository (mode 0555; as root, which ignores modes, an immutable folder)."""
    out = _out(tmp_path, existed)
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "other").mkdir()
    (repo / "other" / "config.pbtxt").write_text('name: "other"\n')
    before = _tree(repo)
    if os.geteuid() != 0:
        repo.chmod(0o555)
        unlock = ["chmod", "755", str(repo)]
    elif subprocess.run(["chattr", "+i", str(repo)], capture_output=True).returncode == 0:
        unlock = ["chattr", "-i", str(repo)]
    else:
        pytest.skip("running as root, and chattr +i is not supported here")
    try:
        res = run_cli("export", src, "--target", "cpu", "-o", out, "--triton", repo, "--name", "t")
    finally:
        subprocess.run(unlock, capture_output=True)
    assert res.returncode == 2
    line = _one_line(res.stderr)
    assert line.startswith(f"graphfix: error: {repo / 't'}: cannot write (")
    assert "Permission denied" in line or "Operation not permitted" in line
    _untouched(out, existed)
    assert _tree(repo) == before and not _leftovers(tmp_path)


class _FullDisk:
    """A staged file whose first write stops part-way on a full disk."""

    def __init__(self, fh) -> None:
        self.fh = fh

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()

    def write(self, data: bytes) -> int:
        self.fh.write(data[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("repo_existed", [False, True])
@pytest.mark.parametrize("existed", [False, True])
def test_config_write_failure(src, tmp_path, monkeypatch, capsys, existed, repo_existed):
    """The model is already staged (X and R/t/1/model.onnx) when config.pbtxt cannot be written."""
    from graphfix.output import OutputSet

    real_open = OutputSet.open

    def open_(self, dest, mode="wb"):
        fh = real_open(self, dest, mode)
        return _FullDisk(fh) if os.path.basename(dest) == "config.pbtxt" else fh

    monkeypatch.setattr(OutputSet, "open", open_)
    out = _out(tmp_path, existed)
    repo = tmp_path / "models"
    if repo_existed:
        repo.mkdir()
    code = main(["export", str(src), "--target", "cpu", "-o", str(out), "--triton", str(repo), "--name", "t"])
    err = capsys.readouterr().err
    assert code == 1
    assert _one_line(err) == f"graphfix: error: {repo / 't' / 'config.pbtxt'}: cannot write (No space left on device)"
    _untouched(out, existed)
    assert (list(repo.iterdir()) == []) if repo_existed else not repo.exists()
    assert not _leftovers(tmp_path)


@pytest.mark.parametrize("existed", [False, True])
def test_rename_failure_while_committing_puts_back_what_was_there(src, tmp_path, monkeypatch, capsys, existed):
    """Every file is staged; X is renamed into place, then renaming config.pbtxt fails: X is put back."""
    import graphfix.output as output

    real_replace = os.replace
    renamed = []

    def replace(a, b):
        if os.path.basename(b) == "config.pbtxt":
            raise OSError(errno.EIO, os.strerror(errno.EIO), a)
        real_replace(a, b)
        renamed.append(os.path.basename(b))

    monkeypatch.setattr(output.os, "replace", replace)
    out = _out(tmp_path, existed)
    repo = tmp_path / "models"
    repo.mkdir()
    code = main(["export", str(src), "--target", "cpu", "-o", str(out), "--triton", str(repo), "--name", "t"])
    err = capsys.readouterr().err
    assert "x.onnx" in renamed  # the failure came after X was in place
    assert code == 1
    assert _one_line(err) == f"graphfix: error: {repo / 't' / 'config.pbtxt'}: cannot write (Input/output error)"
    _untouched(out, existed)
    assert list(repo.iterdir()) == [] and not _leftovers(tmp_path)


def test_success_writes_the_same_bytes_everywhere_every_time(src, tmp_path):
    """X and the served copy are the same bytes, run after run; -o alone writes those bytes too."""
    runs = []
    for i in range(2):
        out, repo = tmp_path / f"x{i}.onnx", tmp_path / f"models{i}"
        res = run_cli("export", src, "--target", "cpu", "-o", out, "--triton", repo, "--name", "t", "-q")
        assert res.returncode == 0, res.stderr
        assert sorted(_tree(repo)) == ["t", "t/1", "t/1/model.onnx", "t/config.pbtxt", "t/labels.txt"]
        runs.append((out.read_bytes(), _tree(repo)))
    assert runs[0] == runs[1]
    assert hashlib.sha256(runs[0][0]).hexdigest() == runs[0][1]["t/1/model.onnx"]
    alone = tmp_path / "alone.onnx"
    res = run_cli("export", src, "--target", "cpu", "-o", alone, "-q")
    assert res.returncode == 0, res.stderr
    assert alone.read_bytes() == runs[0][0] and not _leftovers(tmp_path)


@pytest.fixture
def int8_setup(tmp_path) -> Path:
    """A trained 6x6-image model `t.onnx` and `bad.csv`: five good rows and two bad images."""
    pil = pytest.importorskip("PIL.Image")
    import numpy as np

    from tests.tiny_heads import build_swapped

    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(5):
        pil.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(folder / f"im{i}.png")
    (folder / "bad.png").write_text("not a png\n")
    rows = ["path,labels"] + [f"im{i}.png,c{i % 3}" for i in range(5)]
    (folder / "good.csv").write_text("\n".join(rows) + "\n")
    (folder / "bad.csv").write_text("\n".join(rows + ["bad.png,c0", "gone.png,c1"]) + "\n")
    build_swapped(n_labels=3, size=6).save(folder / "m.onnx")
    assert main(["train-head", str(folder / "m.onnx"), "--train", str(folder / "good.csv"), "-o",
                 str(folder / "t.onnx"), "--no-cache", "-q"]) == 0
    return folder


@pytest.mark.parametrize("fail", [None, "config.pbtxt"])
def test_int8_skipped_rows_list_commits_with_the_rest(int8_setup, tmp_path, monkeypatch, capsys, fail):
    """--int8 --skip-bad -o X --triton R: X, X's skipped-rows list and R/t land together; a rename
    failing while the set is committed (after the list was staged) leaves none of them."""
    import graphfix.output as output

    real_replace = os.replace

    def replace(a, b):
        if os.path.basename(b) == fail:
            raise OSError(errno.EIO, os.strerror(errno.EIO), a)
        real_replace(a, b)

    monkeypatch.setattr(output.os, "replace", replace)
    out = tmp_path / "exports" / "x.onnx"
    out.parent.mkdir()
    repo = tmp_path / "models"
    capsys.readouterr()
    code = main(["export", str(int8_setup / "t.onnx"), "--target", "tensorrt", "--int8", "--calibration",
                 str(int8_setup / "bad.csv"), "--skip-bad", "--heldout", str(int8_setup / "good.csv"),
                 "--int8-budget", "1", "-o", str(out), "--triton", str(repo), "--name", "t",
                 *(["-q"] if fail is None else [])])  # a failure: no --skip-bad warning, the error is the only line
    err = capsys.readouterr().err
    if fail is None:
        assert code == 0 and err == "", err
        assert sorted(p.name for p in out.parent.iterdir()) == ["x.onnx", "x.skipped.csv"]
        assert (out.parent / "x.skipped.csv").read_text().count("\n") == 3  # header + two bad rows
        assert sorted(_tree(repo)) == ["t", "t/1", "t/1/model.onnx", "t/config.pbtxt", "t/labels.txt"]
    else:
        assert code == 1
        assert _one_line(err) == f"graphfix: error: {repo / 't' / fail}: cannot write (Input/output error)"
        assert list(out.parent.iterdir()) == [] and not repo.exists()
    assert not _leftovers(tmp_path)


def test_an_error_about_a_staged_file_names_its_destination(tmp_path):
    """A GraphfixError raised inside an OutputSet about one of its staged files (export's parity or
    readiness errors name the file they were given) names the destination the user asked for,
    and nothing is left behind."""
    from graphfix.errors import GraphfixError
    from graphfix.output import OutputSet

    dest = tmp_path / "x.onnx"
    with pytest.raises(GraphfixError) as err:
        with OutputSet([dest]) as files:
            staged = files.path(dest)
            with open(staged, "wb") as fh:
                fh.write(b"partial")
            raise GraphfixError("parity over tolerance", kind="parity", path=staged)
    assert err.value.path == str(dest)
    assert str(err.value) == f"{dest}: parity over tolerance"
    assert list(tmp_path.iterdir()) == []
