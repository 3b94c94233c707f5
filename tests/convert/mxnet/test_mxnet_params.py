"""The params reader: every record version, dtypes, names, and corrupt files refused early."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphfix.convert.mxnet._params import read_params, write_params
from graphfix.errors import GraphfixError
from tests.convert.mxnet.mxnet_helpers import MODELS, model_files


@pytest.mark.parametrize("version", ["V0", "V1", "V2", "V3"])
def test_round_trip_every_version(tmp_path, version):
    arrays = {
        "arg:conv_weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
        "aux:bn_moving_var": np.array([1.5, 2.5], np.float32),
        "arg:fc_bias": np.array([1, 2, 3], np.float16),
        "arg:f64": np.array([[1e300]], np.float64),
        "arg:i8": np.array([-1, 2], np.int8),
        "arg:u8": np.array([255], np.uint8),
        "arg:i32": np.array([7], np.int32),
        "arg:i64": np.array([2**40], np.int64),
    }
    path = tmp_path / "x.params"
    write_params(path, arrays, version=version)
    pf = read_params(path)
    assert pf.version == version
    assert list(pf.arrays) == list(arrays)
    for name, arr in arrays.items():
        assert pf.arrays[name].dtype == arr.dtype
        np.testing.assert_array_equal(pf.arrays[name], arr)
    assert pf.lookup("conv_weight") is pf.arrays["arg:conv_weight"]
    assert pf.lookup("bn_moving_var") is pf.arrays["aux:bn_moving_var"]
    assert pf.lookup("missing") is None


def test_bfloat16_is_read(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    raw = np.array([1.0, -2.5], np.float32).astype(ml_dtypes.bfloat16)
    body = struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Iiiqiii", 0xF993FAC9, 0, 1, 2, 1, 0, 12)
    path = tmp_path / "b.params"
    path.write_bytes(body + raw.tobytes() + struct.pack("<QQ", 1, 5) + b"arg:b")
    np.testing.assert_array_equal(read_params(path).args["b"].astype(np.float32), [1.0, -2.5])


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=4), min_size=0, max_size=5),
    version=st.sampled_from(["V0", "V1", "V2", "V3"]),
    dtype=st.sampled_from(["float32", "float16", "float64", "int32", "int64", "uint8", "int8"]),
)
def test_round_trip_property(tmp_path_factory, shapes, version, dtype):
    rng = np.random.default_rng(len(shapes))
    arrays = {f"arg:a{i}": (rng.normal(size=s) * 10).astype(dtype) for i, s in enumerate(shapes)}
    path = tmp_path_factory.mktemp("p") / "x.params"
    write_params(path, arrays, version=version)
    pf = read_params(path)
    for name, arr in arrays.items():
        np.testing.assert_array_equal(pf.arrays[name], arr)


def test_real_mxnet_files_parse():
    """Files written by mxnet 1.9.1 (V2) and the hand-written V0 fixture."""
    for name in MODELS:
        pf = read_params(model_files(name)[1])
        assert pf.arrays and all(k.startswith(("arg:", "aux:")) for k in pf.arrays)
        assert pf.version == ("V0" if name == "legacy_0x" else "V2")


def _v2_header(ndim_dims, dtype=0):
    ndim = len(ndim_dims)
    return struct.pack(f"<Iii{ndim}q", 0xF993FAC9, 0, ndim, *ndim_dims) + struct.pack("<iii", 1, 0, dtype)


def test_declared_shape_beyond_file_is_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1) + _v2_header([1 << 20, 1 << 20, 1 << 10]) + b"\0" * 64)
    tracemalloc.start()
    with pytest.raises(GraphfixError, match="truncated|impossible shape") as exc:
        read_params(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1 << 20, f"allocated {peak} bytes for a corrupt header"
    assert exc.value.kind == "bad_input"


@pytest.mark.parametrize("cut", [3, 30, 60, -5])
def test_truncated_file(tmp_path, cut):
    src = model_files("lenet")[1].read_bytes()
    path = tmp_path / "cut.params"
    path.write_bytes(src[:cut] if cut > 0 else src[:cut])
    with pytest.raises(GraphfixError) as exc:
        read_params(path)
    assert exc.value.kind == "bad_input"


def test_huge_array_count_is_refused(tmp_path):
    path = tmp_path / "n.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1 << 60) + b"\0" * 16)
    with pytest.raises(GraphfixError, match="arrays declared"):
        read_params(path)


def test_not_params_and_trailing_bytes(tmp_path):
    bad = tmp_path / "x.params"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(GraphfixError, match="not an MXNet params file"):
        read_params(bad)
    good = tmp_path / "y.params"
    write_params(good, {"arg:a": np.ones(2, np.float32)})
    good.write_bytes(good.read_bytes() + b"xx")
    with pytest.raises(GraphfixError, match="trailing"):
        read_params(good)


@pytest.mark.parametrize("stype,kind", [(1, "row_sparse"), (2, "csr")])
def test_sparse_arrays_give_a_clear_error(tmp_path, stype, kind):
    path = tmp_path / "s.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1) + struct.pack("<Ii", 0xF993FAC9, stype) + b"\0" * 64)
    with pytest.raises(GraphfixError, match=f"sparse \\({kind}\\)"):
        read_params(path)


def test_unknown_dtype_and_bad_name_count(tmp_path):
    path = tmp_path / "d.params"
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1) + _v2_header([2], dtype=99) + b"\0" * 8 + struct.pack("<Q", 0))
    with pytest.raises(GraphfixError, match="dtype code 99"):
        read_params(path)
    path.write_bytes(struct.pack("<QQQ", 0x112, 0, 1) + _v2_header([1]) + b"\0" * 4 + struct.pack("<Q", 3))
    with pytest.raises(GraphfixError, match="3 names for 1 arrays"):
        read_params(path)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_corrupted_files_raise_only_graphfix_errors(tmp_path_factory, data):
    """Truncating or flipping bytes of a real checkpoint never crashes or over-allocates."""
    src = bytearray(model_files("inception_bn_block")[1].read_bytes())
    if data.draw(st.booleans()):
        src = src[: data.draw(st.integers(0, len(src) - 1))]
    for _ in range(data.draw(st.integers(0, 4))):
        if src:
            src[data.draw(st.integers(0, len(src) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("c") / "x.params"
    path.write_bytes(bytes(src))
    try:
        read_params(path)
    except GraphfixError as exc:
        assert exc.kind == "bad_input"
