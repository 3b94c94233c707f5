"""Label names for swap-head (`--labels FILE`, `labels=[...]`): a BOM is dropped; a separator, a BOM
inside a name and duplicates are refused with their lines, by the same check the CSV reader uses."""

from __future__ import annotations

import pytest

import graphfix as gf
from graphfix.errors import GraphfixError
from graphfix.surgery.labels import parse_labels_arg, resolve_labels
from tests.conftest import onnx_fixture, run_cli


def test_bom_in_a_label_file_is_not_part_of_the_first_label(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeffzero\r\none\n# comment\n\ntwo\n".encode("utf-8"))
    assert parse_labels_arg(str(path)) == ["zero", "one", "two"]
    out = tmp_path / "out.onnx"
    res = run_cli("swap-head", onnx_fixture("cnn_softmax"), "--labels", path, "-o", out, "-q")
    assert res.returncode == 0, res.stderr
    assert gf.load(out).labels == ["zero", "one", "two"]


def test_label_file_problems_named_with_their_lines(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog;bird\n\n# a comment\ncat\nfi\ufeffsh\n")
    with pytest.raises(GraphfixError) as err:
        parse_labels_arg(str(path))
    assert err.value.exit_code == 2
    assert str(err.value) == (
        f"{path}: 3 bad label names: line 2: label 'dog;bird' contains the separator ';'; "
        "line 5: duplicate label 'cat' (first at line 1); line 6: label 'fi\\ufeffsh' contains a byte order mark (U+FEFF)"
    )


def test_label_file_problem_through_the_cli(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("cat\ndog\ncat\n")
    out = tmp_path / "out.onnx"
    res = run_cli("swap-head", onnx_fixture("cnn_softmax"), "--labels", path, "-o", out)
    assert res.returncode == 2 and not out.exists()
    assert res.stderr == f"graphfix: error: {path}: 1 bad label name: line 3: duplicate label 'cat' (first at line 1)\n"


def test_label_list_in_the_api_is_checked_the_same_way():
    with pytest.raises(GraphfixError) as err:
        resolve_labels(["a", "b;c"])
    assert str(err.value) == "1 bad label name: label 2: label 'b;c' contains the separator ';'"
    assert err.value.exit_code == 2
