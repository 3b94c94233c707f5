"""Bad inputs through the CLI: exit 2, one clear line on stderr, no output file."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from tests.convert.mxnet.mxnet_helpers import SymbolBuilder, model_files, run_cli


def _lenet_copy(tmp_path):
    sym, params, _ = model_files("lenet")
    shutil.copy(sym, tmp_path / "m-symbol.json")
    shutil.copy(params, tmp_path / "m-0000.params")
    return tmp_path / "m-symbol.json", tmp_path / "m-0000.params"


def _assert_refused(tmp_path, sym, *extra, match: str):
    out = tmp_path / "out.onnx"
    proc = run_cli("convert", sym, "-o", out, *extra)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("graphfix: error: "), lines[0]
    assert match in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.onnx")]
    return lines[0]


def test_truncated_params(tmp_path):
    sym, params = _lenet_copy(tmp_path)
    params.write_bytes(params.read_bytes()[:-1000])
    _assert_refused(tmp_path, sym, match="truncated")


def test_declared_shape_exceeds_file(tmp_path):
    sym, params = _lenet_copy(tmp_path)
    huge = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iii4q", 0xF993FAC9, 0, 4, 1 << 20, 1 << 20, 1 << 20, 8)
    params.write_bytes(huge + struct.pack("<iii", 1, 0, 0) + b"\0" * 100)
    _assert_refused(tmp_path, sym, match="impossible shape")


@pytest.mark.parametrize("text", ['{"hello": "world"}', "[1, 2, 3]", "{not json"])
def test_json_that_is_not_a_symbol(tmp_path, text):
    sym = tmp_path / "m-symbol.json"
    sym.write_text(text)
    _assert_refused(tmp_path, sym, match="not an MXNet symbol file")


def test_node_refers_to_missing_node(tmp_path):
    sym, _ = _lenet_copy(tmp_path)
    doc = json.loads(sym.read_text())
    doc["nodes"][3]["inputs"][0][0] = 999
    sym.write_text(json.dumps(doc))
    _assert_refused(tmp_path, sym, match="refers to missing node 999")


def test_weight_missing_from_params(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.var("fc_weight", np.ones((3, 4)))
    b.var("fc_bias")  # not in params
    b.op("FullyConnected", "fc", ["data", "fc_weight", "fc_bias"], num_hidden=3)
    sym = b.save(tmp_path, ["fc"], name="m")
    line = _assert_refused(tmp_path, sym, "--input-shape", "data:1,4", match="'fc_bias' is missing from params")
    assert "node fc (FullyConnected)" in line


def test_weight_shape_disagrees_with_graph(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.var("c_weight", np.ones((4, 3, 5, 5)))
    b.var("c_bias", np.ones(4))
    b.op("Convolution", "c", ["data", "c_weight", "c_bias"], kernel=(3, 3), num_filter=4)
    sym = b.save(tmp_path, ["c"], name="m")
    _assert_refused(tmp_path, sym, "--input-shape", "data:1,3,8,8",
                    match="'c_weight' has shape (4, 3, 5, 5) but the graph needs (4, 3, 3, 3)")


def test_unsupported_ops_are_listed_together(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("ROIPooling", "roi1", ["data"])
    b.op("ROIPooling", "roi2", ["roi1"])
    b.op("Correlation", "corr", ["roi2"])
    b.op("Activation", "ok", ["corr"], act_type="relu")
    b.op("_contrib_MultiBoxPrior", "", ["ok"])
    b.ids["mbp"] = len(b.nodes) - 1  # the unnamed node
    sym = b.save(tmp_path, ["mbp"], name="m")
    line = _assert_refused(tmp_path, sym, match="3 unsupported MXNet ops")
    assert "ROIPooling (roi1, roi2)" in line and "Correlation (corr)" in line and "_contrib_MultiBoxPrior (#5)" in line


def test_params_file_passed_as_model(tmp_path):
    _, params = _lenet_copy(tmp_path)
    _assert_refused(tmp_path, params, match="weights file")


def test_good_convert_writes_the_file(tmp_path):
    sym, _ = _lenet_copy(tmp_path)
    out = tmp_path / "ok.onnx"
    proc = run_cli("convert", sym, "-o", out, "--input-shape", "data:1,1,28,28", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["inputs"][0]["shape"] == ["batch", 1, 28, 28]
    assert out.exists()
