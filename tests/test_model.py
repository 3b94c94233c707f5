"""Model: loading errors, atomic deterministic save, IR/opset stamping, metadata."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
import numpy as np

import graphfix as gf
from graphfix.model import atomic_write, load_onnx
from tests.conftest import onnx_fixture


def _tiny(ir_version: int = 14, opset: int = 28) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir_version
    return m


def test_save_stamps_ir_version_in_band(tmp_path):
    m = gf.Model.from_proto(_tiny(ir_version=14, opset=17))
    m.save(tmp_path / "a.onnx")
    assert onnx.load(str(tmp_path / "a.onnx")).ir_version == 10  # clamped into 8..10
    m = gf.Model.from_proto(_tiny(ir_version=9, opset=17))
    m.save(tmp_path / "k.onnx")
    assert onnx.load(str(tmp_path / "k.onnx")).ir_version == 9  # kept
    m = gf.Model.from_proto(_tiny(ir_version=3, opset=11))
    m.save(tmp_path / "b.onnx")
    assert onnx.load(str(tmp_path / "b.onnx")).ir_version == 8
    # an opset newer than IR 10 allows keeps the minimum IR that opset needs
    m = gf.Model.from_proto(_tiny(ir_version=14, opset=21))
    m.save(tmp_path / "c.onnx")
    p = onnx.load(str(tmp_path / "c.onnx"))
    assert p.ir_version == 10 and p.opset_import[0].version == 21


def test_saved_bytes_parse_and_roundtrip_identically(tmp_path):
    src = load_onnx(onnx_fixture("squeezenet_conv_head"))
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    src.save(a)
    load_onnx(a).save(b)
    assert a.read_bytes() == b.read_bytes()
    assert src.to_bytes() == a.read_bytes()
    onnx.checker.check_model(str(a), full_check=True)
    ref = onnx.load(str(onnx_fixture("squeezenet_conv_head")))
    got = onnx.load(str(a))
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in ref.graph.initializer} == {
        t.name: numpy_helper.to_array(t).tobytes() for t in got.graph.initializer
    }


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_run_bare_array_and_metadata(tmp_path):
    m = gf.Model.from_proto(_tiny(ir_version=8, opset=17))
    out = m.run(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(out["y"], np.ones((2, 3), np.float32))
    m2 = m.with_metadata(labels=["a", "b"], preprocess={"mean": [1, 2, 3]})
    assert m2.labels == ["a", "b"] and m2.preprocess == {"mean": [1, 2, 3]}
    assert m.labels is None
    m2.save(tmp_path / "m.onnx")
    assert gf.load(tmp_path / "m.onnx").labels == ["a", "b"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"hello, this is a text file\n", "not"), (None, "not a valid ONNX")],
)
def test_load_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.onnx"
    if content is None:  # truncated real model
        content = onnx_fixture("cnn_softmax").read_bytes()[:500]
    path.write_bytes(content)
    with pytest.raises(gf.GraphfixError) as info:
        gf.load(path)
    assert message in info.value.message and info.value.path == str(path)


def test_load_missing_file(tmp_path):
    with pytest.raises(gf.GraphfixError, match="no such file"):
        gf.load(tmp_path / "missing.onnx")


def test_save_keeps_every_dtype_and_typed_fields(tmp_path):
    """Initializers stored as typed fields or raw_data, in several dtypes, survive save exactly."""
    arrays = {
        "f16": np.arange(6, dtype=np.float16).reshape(2, 3),
        "f64": np.linspace(0, 1, 5),
        "i64": np.array([0, -1, 2**40], np.int64),
        "i8": np.array([-3, 4], np.int8),
        "b": np.array([True, False]),
        "scalar": np.array(2.5, np.float32),
    }
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    inits.append(helper.make_tensor("typed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]))  # float_data, not raw
    inits.append(helper.make_tensor("names", TensorProto.STRING, [2], [b"a", b"bc"]))
    outputs = [helper.make_tensor_value_info(f"{t.name}_out", t.data_type, None) for t in inits]
    nodes = [helper.make_node("Identity", [t.name], [f"{t.name}_out"], name=f"id_{t.name}") for t in inits]
    graph = helper.make_graph(nodes, "g", [], outputs, inits)
    model = gf.Model.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    model.save(tmp_path / "t.onnx")
    got = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "t.onnx")).graph.initializer}
    for name, array in arrays.items():
        assert got[name].dtype == array.dtype and np.array_equal(got[name], array), name
    assert got["typed"].tolist() == [1.0, 2.0, 3.0]
    assert got["names"].tolist() == ["a", "bc"]


def test_save_does_not_change_the_model(tmp_path):
    m = gf.Model.from_proto(_tiny(ir_version=14, opset=17))
    m.save(tmp_path / "a.onnx")
    assert m.ir.ir_version == 14  # only the file is stamped
    assert m.to_proto().ir_version == 10 and onnx.load(str(tmp_path / "a.onnx")).ir_version == 10


def test_unsorted_graph_loads_and_swaps(tmp_path):
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    nodes = [helper.make_node("Softmax", ["fc"], ["p"], axis=1, name="sm"),
             helper.make_node("Gemm", ["r", "w"], ["fc"], transB=1, name="fc"),
             helper.make_node("Relu", ["x"], ["r"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    (tmp_path / "u.onnx").write_bytes(m.SerializeToString())
    new = gf.swap_head(gf.load(tmp_path / "u.onnx"), labels=2)
    assert new.run(np.ones((1, 3), np.float32))["logits"].shape == (1, 2)


@pytest.mark.parametrize("fixture", ["onnx/cnn_softmax.onnx", "mxnet/lenet/lenet-symbol.json"])
def test_deferred_source_hash_gives_the_same_bytes(tmp_path, fixture):
    """The source hash runs beside saving and is written last; reading it first changes nothing."""
    from tests.conftest import FIXTURES

    path = FIXTURES / fixture
    gf.load(path).save(tmp_path / "a.onnx")
    model = gf.load(path)
    source = model.metadata["source"]
    model.save(tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    import hashlib

    assert source["files"][path.name] == hashlib.sha256(path.read_bytes()).hexdigest()
    saved = {p.key: p.value for p in onnx.load(str(tmp_path / "a.onnx")).metadata_props}
    assert json.loads(saved["graphfix.source"]) == source
