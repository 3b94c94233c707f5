"""Hostile or broken files: each gets exit 2 and one line, in under 2 s and 200 MB (issue 7).

Each case runs `graphfix convert` in a fresh process that reports, after the command, the time
the command took (imports excluded) and the process's peak resident memory (VmHWM).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import FIXTURES, ROOT

sys.path.insert(0, str(FIXTURES / "caffe"))
import caffe_writer  # noqa: E402

MEASURE = """
import json, sys, time
from graphfix.cli import main
import graphfix.commands.convert, graphfix.convert.caffe, graphfix.convert.mxnet  # imports are lazy; keep them out of the timing
start = time.perf_counter()
rc = main(sys.argv[1:])
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - start, "peak_mb": hwm / 1024}), file=sys.__stdout__)
sys.exit(rc)
"""

LENET = (FIXTURES / "caffe" / "lenet.prototxt").read_text()


def _run(*args) -> tuple[dict, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", MEASURE, "convert", *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _assert_refused(tmp_path, args, needle: str) -> None:
    out = tmp_path / "out.onnx"
    stats, stderr = _run(*args, "-o", out)
    lines = stderr.strip().splitlines()
    assert stats["rc"] == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("graphfix: error: ") and needle in lines[0], stderr
    assert stats["seconds"] < 2, stats
    assert stats["peak_mb"] < 200, stats
    assert not out.exists()


def test_caffemodel_blob_of_1e12_elements_in_1kb(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(LENET)
    blob = caffe_writer.ld(7, caffe_writer.packed_varints(1, [10**6, 10**6])) + caffe_writer.ld(5, np.zeros(16, "<f4").tobytes())
    layer = caffe_writer.ld(1, b"conv1") + caffe_writer.ld(2, b"Convolution") + caffe_writer.ld(7, blob)
    weights = tmp_path / "net.caffemodel"
    weights.write_bytes(caffe_writer.ld(100, layer))
    assert weights.stat().st_size < 1024
    _assert_refused(tmp_path, [proto, "--weights", weights], "1000000x1000000")


def test_params_record_of_1e12_elements_in_1kb(tmp_path):
    sym = FIXTURES / "mxnet" / "lenet" / "lenet-symbol.json"
    (tmp_path / "lenet-symbol.json").write_bytes(sym.read_bytes())
    record = struct.pack("<Ii", 0xF993FAC9, 0) + struct.pack("<i2q", 2, 10**6, 10**6) + struct.pack("<iii", 1, 0, 0) + b"\0" * 64
    name = b"arg:conv1_weight"
    data = struct.pack("<QQQ", 0x112, 0, 1) + record + struct.pack("<QQ", 1, len(name)) + name
    (tmp_path / "lenet-0000.params").write_bytes(data)
    _assert_refused(tmp_path, [tmp_path / "lenet-symbol.json"], "truncated")


def test_three_gb_sparse_params_file(tmp_path):
    sym = FIXTURES / "mxnet" / "lenet" / "lenet-symbol.json"
    (tmp_path / "lenet-symbol.json").write_bytes(sym.read_bytes())
    with open(tmp_path / "lenet-0000.params", "wb") as fh:
        fh.truncate(3 * 1024**3)  # a hole: 3 GB of zeros, no disk blocks
    _assert_refused(tmp_path, [tmp_path / "lenet-symbol.json"], "params")


def test_deeply_nested_prototxt(tmp_path):
    proto = tmp_path / "deep.prototxt"
    proto.write_text("layer { " * 100_000 + "}" * 100_000)
    _assert_refused(tmp_path, [proto], "deep.prototxt")


def test_symbol_json_with_a_cycle(tmp_path):
    doc = {
        "nodes": [
            {"op": "null", "name": "data", "inputs": []},
            {"op": "Activation", "name": "a", "attrs": {"act_type": "relu"}, "inputs": [[2, 0, 0]]},
            {"op": "Activation", "name": "b", "attrs": {"act_type": "relu"}, "inputs": [[1, 0, 0]]},
        ],
        "arg_nodes": [0], "heads": [[2, 0, 0]], "attrs": {"mxnet_version": ["int", 10901]},
    }
    path = tmp_path / "cyc-symbol.json"
    path.write_text(json.dumps(doc))
    _assert_refused(tmp_path, [path, "--input-shape", "data:1,3,8,8"], "cyc-symbol.json")


@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd"])
def test_onnx_external_data_outside_the_folder(tmp_path, location):
    from onnx import TensorProto, helper

    from graphfix.convert._onnx import make_model

    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 4], data_location=TensorProto.EXTERNAL)
    e = w.external_data.add()
    e.key, e.value = "location", location
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])
    path = tmp_path / "m.onnx"
    path.write_bytes(make_model(g).SerializeToString())
    _assert_refused(tmp_path, [path], "external data location")


def test_prototxt_with_a_python_layer(tmp_path):
    proto = tmp_path / "py.prototxt"
    proto.write_text(LENET + '\nlayer { name: "evil" type: "Python" bottom: "prob" top: "evil" python_param { module: "os" layer: "system" } }\n')
    weights = FIXTURES / "caffe" / "lenet.caffemodel"
    _assert_refused(tmp_path, [proto, "--weights", weights], "evil")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"nodes": [{"op": "null", "name": "' + "a" * 100_000 + '", "inputs": []}], "heads": [[0, 0, 0]]}', "longer than"),
        (json.dumps({"nodes": [{"op": "null", "name": f"v{i}", "inputs": []} for i in range(100_001)], "heads": [[0, 0, 0]]}),
         "more than 100000"),
    ],
    ids=["deep-json", "long-name", "too-many-nodes"],
)
def test_symbol_json_bounds(tmp_path, content, needle):
    path = tmp_path / "x-symbol.json"
    path.write_text(content)
    _assert_refused(tmp_path, [path, "--input-shape", "data:1,3,8,8"], needle)
