"""Bad inputs: each exits 2 through the CLI with one clear line on stderr and writes no file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from caffe_helpers import REPO, caffe_writer

from graphfix.convert.caffe import load_caffe
from graphfix.errors import GraphfixError

LENET = """name: "t"
input: "data"
input_dim: 1
input_dim: 1
input_dim: 8
input_dim: 8
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def _weights(conv_out: int = 4) -> list:
    rng = np.random.RandomState(0)
    return [
        caffe_writer.WLayer("conv1", "Convolution", [rng.randn(conv_out, 1, 3, 3), rng.randn(conv_out)]),
        caffe_writer.WLayer("ip1", "InnerProduct", [rng.randn(3, 4 * 36), rng.randn(3)]),
    ]


def _net(tmp_path: Path, proto: str = LENET, layers: list | None = None) -> tuple[Path, Path]:
    p, w = tmp_path / "net.prototxt", tmp_path / "net.caffemodel"
    p.write_text(proto)
    caffe_writer.write_caffemodel(str(w), _weights() if layers is None else layers)
    return p, w


def _cli(proto: Path, weights: Path | None, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [sys.executable, "-m", "graphfix.cli", "convert", str(proto)]
    if weights is not None:
        args += ["--weights", str(weights)]
    return subprocess.run([*args, "-o", str(out), *extra], capture_output=True, text=True, env=env, timeout=120)


def _expect_exit2(tmp_path: Path, proto: Path, weights: Path | None, *needles: str, extra: tuple = ()) -> str:
    out = tmp_path / "out.onnx"
    res = _cli(proto, weights, out, *extra)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("graphfix: error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".out.onnx")], "temp file left behind"
    return lines[0]


def test_good_net_converts_through_cli(tmp_path):
    proto, weights = _net(tmp_path)
    res = _cli(proto, weights, tmp_path / "out.onnx")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out.onnx").stat().st_size > 0


def test_truncated_caffemodel(tmp_path):
    proto, weights = _net(tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    _expect_exit2(tmp_path, proto, weights, "net.caffemodel", "truncated")


def test_prototxt_syntax_error_names_the_line(tmp_path):
    bad = LENET.replace(
        'layer { name: "relu1"', 'layer { name: "relu1" type: "ReLU" bottom: "conv1" }}\nlayer { name: "x"', 1
    )
    proto, weights = _net(tmp_path, bad)
    line = _expect_exit2(tmp_path, proto, weights, "net.prototxt", "line 9")
    assert "syntax" in line


def test_prototxt_unterminated_block(tmp_path):
    proto, weights = _net(tmp_path, LENET + 'layer { name: "x"\n')
    with pytest.raises(GraphfixError, match="line 12: unexpected end of file, missing '}'") as info:
        load_caffe(proto, weights)
    assert info.value.exit_code == 2


def test_unsupported_layers_all_listed_at_once(tmp_path):
    bad = LENET.replace(
        'layer { name: "prob"',
        'layer { name: "up" type: "Upsample" bottom: "ip1" top: "up" upsample_param { scale: 2 } }\n'
        'layer { name: "roi" type: "ROIPooling" bottom: "up" top: "roi" }\n'
        'layer { name: "pb" type: "PriorBox" bottom: "roi" top: "pb" }\n'
        'layer { name: "py" type: "Python" bottom: "pb" top: "py" python_param { module: "evil" layer: "X" } }\n'
        'layer { name: "prob"',
    )
    line = _expect_exit2(
        tmp_path, *_net(tmp_path, bad), "Upsample", "ROIPooling", "PriorBox", "Python", "--outputs prob"
    )
    assert "up" in line and "roi" in line and "pb" in line


def test_outputs_cut_before_a_layer_with_no_onnx_meaning(tmp_path):
    bad = LENET + 'layer { name: "pb" type: "PriorBox" bottom: "prob" bottom: "data" top: "pb" }\n'
    proto, weights = _net(tmp_path, bad)
    with pytest.raises(GraphfixError, match="PriorBox"):
        load_caffe(proto, weights)
    res = _cli(proto, weights, tmp_path / "out.onnx", "--outputs", "prob")
    assert res.returncode == 0, res.stderr
    assert load_caffe(proto, weights, outputs=["prob"]).output_names == ["prob"]


def test_blob_size_disagrees_with_prototxt(tmp_path):
    proto, weights = _net(tmp_path, layers=_weights(conv_out=5))
    _expect_exit2(tmp_path, proto, weights, "conv1", "45 values", "4x1x3x3 = 36")


def test_deploy_layer_without_weights(tmp_path):
    proto, weights = _net(tmp_path, layers=_weights()[1:])
    _expect_exit2(tmp_path, proto, weights, "conv1", "no weights")


def test_blob_declaring_1e12_elements_in_a_1kb_file(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(LENET)
    weights = tmp_path / "net.caffemodel"
    blob = caffe_writer.ld(7, caffe_writer.packed_varints(1, [10**6, 10**6])) + caffe_writer.ld(
        5, np.zeros(16, "<f4").tobytes()
    )
    layer = caffe_writer.ld(1, b"conv1") + caffe_writer.ld(2, b"Convolution") + caffe_writer.ld(7, blob)
    weights.write_bytes(caffe_writer.ld(100, layer) + b"\0" * 0)
    assert weights.stat().st_size < 1024
    _expect_exit2(tmp_path, proto, weights, "1000000x1000000", "stores 16")


def test_packed_length_larger_than_the_file(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(LENET)
    weights = tmp_path / "net.caffemodel"
    blob = caffe_writer.key(5, 2) + caffe_writer.varint(4 * 10**12)  # claims 4 TB of floats
    layer = caffe_writer.ld(1, b"conv1") + caffe_writer.key(7, 2) + caffe_writer.varint(len(blob)) + blob
    weights.write_bytes(caffe_writer.key(100, 2) + caffe_writer.varint(len(layer)) + layer)
    with pytest.raises(GraphfixError, match="runs past the end") as info:
        load_caffe(proto, weights)
    assert info.value.exit_code == 2


def test_empty_caffemodel_and_prototxt_as_weights(tmp_path):
    proto, weights = _net(tmp_path)
    weights.write_bytes(b"")
    with pytest.raises(GraphfixError, match="empty"):
        load_caffe(proto, weights)
    with pytest.raises(GraphfixError, match="not a valid caffemodel|no layers"):
        load_caffe(proto, proto)


def test_missing_weights_for_a_net_that_needs_them(tmp_path):
    proto = tmp_path / "net.prototxt"
    proto.write_text(LENET)
    with pytest.raises(GraphfixError, match=r"layer 'conv1' \(Convolution\) needs weights but no caffemodel") as info:
        load_caffe(proto)
    assert info.value.exit_code == 2


def test_python_layer_refused_by_name(tmp_path):
    bad = LENET.replace('type: "ReLU"', 'type: "Python" python_param { module: "os" layer: "system" }')
    with pytest.raises(GraphfixError, match=r"Python x1 \(runs arbitrary Python code \(refused\)\): relu1") as info:
        load_caffe(*_net(tmp_path, bad))
    assert info.value.kind == "unsupported_op" and info.value.exit_code == 2


def test_unknown_fields_and_unneeded_fork_layers_are_skipped_with_a_warning(tmp_path, caplog):
    tolerant = LENET.replace("convolution_param {", "convolution_param { fork_only_field: 3 fork_block { a: 1 }") + (
        'layer { name: "side" type: "Upsample" bottom: "conv1" top: "side" upsample_param { scale: 2 } }\n'
    )
    model = load_caffe(*_net(tmp_path, tolerant), outputs=["prob"])
    assert model.output_names == ["prob"]
    assert "unknown field" in caplog.text and "fork_only_field" in caplog.text


def test_reading_a_blob_never_copies_the_weights(tmp_path):
    from graphfix.convert.caffe._caffemodel import read_caffemodel

    _, weights = _net(tmp_path)
    blobs = read_caffemodel(weights).blobs["conv1"]
    assert not blobs[0].flags.owndata and not blobs[0].flags.writeable  # a view of the mapped file


SSD_TAIL = """
layer { name: "loc" type: "Convolution" bottom: "conv1" top: "mbox_loc" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "conf" type: "Convolution" bottom: "conv1" top: "conf" convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf" top: "mbox_conf_flatten" }
layer { name: "prior" type: "PriorBox" bottom: "conv1" bottom: "data" top: "mbox_priorbox" }
layer { name: "det" type: "DetectionOutput" bottom: "mbox_loc" bottom: "mbox_conf_flatten" bottom: "mbox_priorbox" top: "det" }
"""


def test_outputs_hint_is_the_inputs_of_the_refused_layers(tmp_path):
    """SSD-style tail: the suggested cut is what DetectionOutput reads from supported layers,
    not PriorBox's feature map (read by supported layers too) nor the net input."""
    proto = LENET.split('layer { name: "ip1"')[0] + SSD_TAIL
    (tmp_path / "ssd.prototxt").write_text(proto)
    with pytest.raises(GraphfixError) as info:
        load_caffe(str(tmp_path / "ssd.prototxt"), weights=None)
    assert "--outputs mbox_loc,mbox_conf_flatten)" in info.value.one_line(), info.value.one_line()
