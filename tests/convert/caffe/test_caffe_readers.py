"""The wire-format reader, the prototxt parser and the V1 -> V2 upgrade, on their own."""

from __future__ import annotations

import numpy as np
import pytest
from caffe_helpers import caffe_writer as cw
from hypothesis import given, settings
from hypothesis import strategies as st

from graphfix.convert.caffe._caffemodel import blob_to_array, read_binaryproto, read_caffemodel
from graphfix.convert.caffe._prototxt import PrototxtError, parse_prototxt
from graphfix.convert.caffe._upgrade import net_layers
from graphfix.convert.caffe._wire import MAX_DEPTH, WireError, decode
from graphfix.errors import GraphfixError

# ----- wire format -------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    legacy=st.booleans(),
    unpacked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_blob_round_trip(tmp_path_factory, shape, legacy, unpacked, seed):
    arr = np.random.RandomState(seed).randn(*shape).astype(np.float32)
    path = tmp_path_factory.mktemp("w") / "m.caffemodel"
    if legacy and len(shape) > 4:
        return
    cw.write_caffemodel(str(path), [cw.WLayer("l", "Convolution", [arr])], v1=legacy, unpacked=unpacked)
    got = read_caffemodel(path).blobs["l"][0]
    expect_shape = tuple([1] * (4 - len(shape)) + shape) if legacy else tuple(shape)
    assert got.shape == expect_shape and got.dtype == np.float32
    assert np.array_equal(got.reshape(arr.shape), arr)


def test_negative_varints_and_unknown_fields():
    shape = cw.packed_varints(1, [-1, 3])
    blob = cw.ld(7, shape) + cw.ld(999, b"junk") + cw.key(1000, 1) + b"\0" * 8 + cw.key(1001, 5) + b"\0" * 4
    msg = decode(blob, "BlobProto")
    assert msg.shape.dim == [-1, 3]
    assert "data" not in msg


def test_groups_are_skipped():
    data = cw.key(50, 3) + cw.vfield(1, 5) + cw.key(50, 4) + cw.ld(1, b"layername")
    assert decode(data, "LayerParameter").name == "layername"


@pytest.mark.parametrize(
    "data,match",
    [
        (b"\x0a\x05abc", "runs past the end"),  # name: length 5, 3 bytes left
        (b"\x08", "truncated varint"),
        (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
        (b"\x0f", "invalid wire type"),
        (b"\x00\x01", "field number 0"),
        (cw.key(5, 2) + cw.varint(3) + b"abc", "not a multiple of 4"),
    ],
)
def test_malformed_wire_data(data, match):
    with pytest.raises(WireError, match=match):
        decode(data, "LayerParameter" if not data.startswith(cw.key(5, 2)) else "BlobProto")


def test_recursion_is_bounded():
    inner = b""
    for _ in range(MAX_DEPTH + 5):  # NetStateRule has no sub-messages, so nest groups
        inner = cw.key(60, 3) + inner + cw.key(60, 4)
    with pytest.raises(WireError, match="too deeply"):
        decode(inner, "LayerParameter")


def test_blob_count_checked_before_use():
    msg = decode(cw.ld(7, cw.packed_varints(1, [10**6, 10**6])) + cw.ld(5, b"\0" * 8), "BlobProto")
    with pytest.raises(GraphfixError, match="1000000x1000000 = 1000000000000 values but stores 2"):
        blob_to_array(msg, "blob")


def test_double_data_blob():
    payload = cw.ld(7, cw.packed_varints(1, [2])) + cw.ld(8, np.array([1.5, -2.0]).astype("<f8").tobytes())
    arr = blob_to_array(decode(payload, "BlobProto"), "blob")
    assert arr.dtype == np.float32 and arr.tolist() == [1.5, -2.0]


def test_binaryproto_mean(tmp_path):
    mean = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    cw.write_binaryproto(str(tmp_path / "m.binaryproto"), mean)
    assert np.array_equal(read_binaryproto(tmp_path / "m.binaryproto"), mean)


# ----- prototxt ----------------------------------------------------------------------------------


def test_prototxt_syntax_variants():
    text = """# comment
name: 'net' # trailing comment
input: "data" input_dim: [1, 3, 4, 4]
layer <
  name: "a\\"b" "c"   # adjacent strings concatenate, escapes decoded
  type: "Pooling"; bottom: "data" top: "p"
  pooling_param: { pool: AVE kernel_size: 2 stride: 2 }
  include { phase: TEST }
>
layer { name: "s" type: "Softmax" bottom: "p" top: "s" softmax_param { axis: -1 engine: CAFFE } }
"""
    net = parse_prototxt(text)
    assert net.name == "net" and net.input == ["data"] and net.input_dim == [1, 3, 4, 4]
    a, s = net.layer
    assert a.name == 'a"bc' and a.pooling_param.pool == 1 and a.pooling_param.kernel_size == 2
    assert a.pooling_param.stride == 2 and a.pooling_param.pad == 0  # default
    assert s.softmax_param.axis == -1
    assert a["_line"] == 4 and s["_line"] == 10


@pytest.mark.parametrize(
    "text,line,match",
    [
        ('name: "x"\nlayer {\n  name: "a"\n  type: }\n', 4, "expected a value"),
        ('layer {\n  name: "a"\n}\n}\n', 4, "expected a field name"),
        ("layer {\n  convolution_param { num_output: abc }\n}\n", 2, "bad value 'abc'"),
        ('layer {\n  name: "a\n}\n', 2, "unexpected character"),
        ("input_dim: 1.5\n", 1, "bad value"),
        ("layer {\n  convolution_param { bias_term: maybe }\n}", 2, "bool"),
        ('layer { name: "a" }\nlayer { name: "b" type: "X" ', 2, "missing '}'"),
        ("layer {\n" + "a {" * 5000 + "}" * 5000 + "\n}", 2, "nested deeper than 64"),
    ],
)
def test_prototxt_errors_name_the_line(text, line, match):
    with pytest.raises(PrototxtError, match=match) as info:
        parse_prototxt(text)
    assert info.value.line == line
    assert str(info.value).startswith(f"line {line}:")


def test_unknown_fields_are_collected_per_layer(caplog):
    net = parse_prototxt('weird_top: 1\nlayer {\n name: "a"\n upsample_param { scale: 2 }\n param { lr_mult: 1 }\n}\n')
    assert net.layer[0]["_unknown"] == [("layer.upsample_param", 4)]
    assert "weird_top" in caplog.text  # outside any layer: warned at once


def test_v1_prototxt_upgrade_and_phase_filter():
    net = parse_prototxt(
        """layers { name: "d" type: DATA top: "data" include { phase: TRAIN } }
layers { name: "c" type: CONVOLUTION bottom: "data" top: "c" blobs_lr: 1 convolution_param { num_output: 2 kernel_size: 1 } }
layers { name: "r" type: RELU bottom: "c" top: "c" }
layers { name: "t" type: TANH bottom: "c" top: "t" exclude { phase: TEST } }
layers { name: "l" type: SOFTMAX_LOSS bottom: "c" top: "l" }
"""
    )
    layers = net_layers(net)
    assert [(lay.name, lay.type) for lay in layers] == [("c", "Convolution"), ("r", "ReLU"), ("l", "SoftmaxWithLoss")]
    assert layers[0].v1 and layers[0].param("convolution_param").num_output == 2
    assert layers[0].line == 2


def test_v1_binary_upgrade(tmp_path):
    path = tmp_path / "m.caffemodel"
    cw.write_caffemodel(
        str(path),
        [cw.WLayer("ip", "InnerProduct", [np.ones((3, 5), np.float32)]), cw.WLayer("loss", "SoftmaxWithLoss")],
        v1=True,
    )
    model = read_caffemodel(path)
    assert model.types == {"ip": "InnerProduct"}
    assert model.blobs["ip"][0].shape == (1, 1, 3, 5)  # legacy 4-D dims; converters reshape by count


# ----- fuzzing: malformed input fails with the reader's own error, never anything else ------------


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=200))
def test_wire_reader_fuzz(data):
    try:
        decode(data, "NetParameter")
    except WireError:
        pass


@settings(max_examples=60, deadline=None)
@given(cut=st.integers(0, 10_000), flip=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_corrupted_caffemodel_fuzz(tmp_path_factory, cut, flip, bit):
    from caffe_helpers import FIXTURES

    data = bytearray((FIXTURES / "mtcnn_like.caffemodel").read_bytes())
    data[flip % len(data)] ^= 1 << bit
    path = tmp_path_factory.mktemp("fz") / "m.caffemodel"
    path.write_bytes(bytes(data[: len(data) - cut % 64]))
    try:
        read_caffemodel(path)
    except GraphfixError:
        pass


@settings(max_examples=150, deadline=None)
@given(text=st.text(alphabet="layer{}<>[]:;,\"'# \n_abcname0123456789.-+eE\\", max_size=120))
def test_prototxt_parser_fuzz(text):
    try:
        parse_prototxt(text)
    except PrototxtError:
        pass
