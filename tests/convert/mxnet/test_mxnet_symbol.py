"""The symbol JSON reader: three layouts, the v0.8 aux upgrade, names, hidden attributes."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest

from graphfix.convert.mxnet import find_params, load_mxnet
from graphfix.convert.mxnet._symbol import parse_symbol, read_symbol
from graphfix.errors import GraphfixError
from tests.convert.mxnet.mxnet_helpers import SymbolBuilder, assert_parity, model_files

RNG = np.random.default_rng(1)


def test_0x_layout_and_v08_upgrade():
    sym = read_symbol(model_files("legacy_0x")[0])
    assert sym.layout == "0.x" and sym.version == 800
    bn = next(n for n in sym.nodes if n.op == "BatchNorm")
    names = [sym.nodes[i].name for i, _ in bn.inputs]
    assert names == ["conv1", "bn1_gamma", "bn1_beta", "bn1_moving_mean", "bn1_moving_var"]
    conv2 = next(n for n in sym.nodes if n.name == "conv2")
    assert "lr_mult" in conv2.attrs  # 0.x `attr` keys are kept as MXNet keeps them
    assert any(n.op == "_Plus" and n.name == "" for n in sym.nodes)


def test_09_layout_attr_key():
    doc = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                     {"op": "Activation", "name": "a", "attr": {"act_type": "tanh"}, "inputs": [[0, 0, 0]]}],
           "arg_nodes": [0], "heads": [[1, 0, 0]], "attrs": {"mxnet_version": ["int", 901]}}
    sym = parse_symbol(doc)
    assert sym.layout == "0.9" and sym.nodes[1].attrs == {"act_type": "tanh"}


def test_hidden_attributes_are_ignored_but_shape_is_used(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("Activation", "a", ["data"], act_type="relu", __lr_mult__="2", __ctx_group__="x")
    doc = b.doc(["a"])
    doc["nodes"][0]["attrs"] = {"__shape__": "(1, 3, 5)", "__dtype__": "0", "__init__": "zeros"}
    sym = parse_symbol(doc)
    assert sym.nodes[1].attrs == {"act_type": "relu"}
    (tmp_path / "t-symbol.json").write_text(json.dumps(doc))
    model = load_mxnet(tmp_path / "t-symbol.json")
    assert model.io_info()["inputs"][0]["shape"] == ["batch", 3, 5]


def test_empty_and_duplicated_names_get_unique_onnx_names(tmp_path):
    b = SymbolBuilder()
    b.var("data")
    b.op("Activation", "", ["data"], act_type="relu")
    b.nodes[-1]["name"] = ""
    b.ids["r0"] = 1
    b.op("Activation", "dup", ["r0"], act_type="tanh")
    b.ids["t"] = 2
    b.op("_Plus", "dup", ["t", "r0"])
    b.ids["p"] = 3
    b.op("_Plus", "", ["p", "t"])
    b.ids["q"] = 4
    sym = b.save(tmp_path, ["q"])
    model = load_mxnet(sym, input_shape={"": (1, 3)})
    names = [n.name for n in model.ir.graph]
    assert all(names) and len(set(names)) == len(names)
    values = [v.name for n in model.ir.graph for v in n.outputs]
    assert all(values) and len(set(values)) == len(values)
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    r = np.maximum(x, 0)
    t = np.tanh(r)
    np.testing.assert_allclose(next(iter(model.run(x).values())), t + r + t, atol=1e-6)


@pytest.mark.parametrize("doc,match", [
    ({"foo": 1}, "not an MXNet symbol"),
    ([1, 2], "not an MXNet symbol"),
    ({"nodes": [], "heads": []}, "no nodes"),
    ({"nodes": [{"name": "x"}], "heads": [[0, 0]]}, "has no 'op'"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": []}, "'heads' is empty"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": []}, {"op": "relu", "name": "r", "inputs": [[5, 0]]}],
      "heads": [[1, 0]]}, "refers to missing node 5"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": []}, {"op": "relu", "name": "r", "inputs": [[1, 0]]}],
      "heads": [[1, 0]]}, "does not come before it"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": [[3, 0]]}, "missing node 3"),
    ({"nodes": [{"op": "null", "name": "x", "inputs": [["a"]]}], "heads": [[0, 0]]}, "malformed input"),
])
def test_bad_symbols(doc, match):
    with pytest.raises(GraphfixError, match=match) as exc:
        parse_symbol(doc, path="x-symbol.json")
    assert exc.value.kind == "bad_input"


def test_invalid_json(tmp_path):
    path = tmp_path / "x-symbol.json"
    path.write_text("{nodes: ")
    with pytest.raises(GraphfixError, match="invalid JSON"):
        read_symbol(path)


def test_params_discovery_takes_the_highest_epoch_and_warns(tmp_path, caplog):
    sym, params, ref = model_files("lenet")
    shutil.copy(sym, tmp_path / "lenet-symbol.json")
    shutil.copy(params, tmp_path / "lenet-0010.params")
    (tmp_path / "lenet-0002.params").write_bytes(b"junk")
    (tmp_path / "lenetx-0099.params").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="graphfix.convert.mxnet"):
        assert find_params(tmp_path / "lenet-symbol.json") == str(tmp_path / "lenet-0010.params")
        model = load_mxnet(tmp_path / "lenet-symbol.json", input_shape={"data": (1, 1, 28, 28)})
    assert "lenet-0010.params" in caplog.text and "epochs 2, 10" in caplog.text
    assert_parity(model, ref, "lenet with discovered params")
    assert set(model.metadata["source"]["files"]) == {"lenet-symbol.json", "lenet-0010.params"}


def test_explicit_params_argument(tmp_path):
    sym, params, ref = model_files("lenet")
    shutil.copy(params, tmp_path / "weights.params")
    model = load_mxnet(sym, params=tmp_path / "weights.params", input_shape={"": (1, 1, 28, 28)})
    assert_parity(model, ref, "lenet with params=")


def test_no_params_file_found_names_the_fix(tmp_path):
    sym = model_files("lenet")[0]
    shutil.copy(sym, tmp_path / "lenet-symbol.json")
    with pytest.raises(GraphfixError, match="pass --params"):
        load_mxnet(tmp_path / "lenet-symbol.json")


def test_input_shape_for_an_unknown_input_is_a_usage_error():
    sym, params, _ = model_files("lenet")
    with pytest.raises(GraphfixError, match="names datta") as exc:
        load_mxnet(sym, params, {"datta": (1, 1, 28, 28)})
    assert exc.value.kind == "usage"


def test_input_shape_without_name_needs_a_single_data_input(tmp_path):
    b = SymbolBuilder()
    b.var("a")
    b.var("b")
    b.op("elemwise_add", "s", ["a", "b"])
    sym = b.save(tmp_path, ["s"])
    with pytest.raises(GraphfixError, match="several data inputs"):
        load_mxnet(sym, input_shape={"": (1, 3)})
    model = load_mxnet(sym, input_shape={"a": (1, 3), "b": (1, 3)})
    x = RNG.normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_allclose(model.run({"a": x, "b": 2 * x})["s_output"], 3 * x, atol=1e-6)


@pytest.mark.parametrize("attrs,match", [
    ({"kernel": "abc", "num_filter": "4"}, "is not a tuple"),
    ({"kernel": "(3,3)", "num_filter": "four"}, "is not a number"),
    ({"kernel": "(3,3)", "num_filter": "4", "no_bias": "maybe"}, "is not a boolean"),
    ({"kernel": "(3,3)", "num_filter": "4", "stride": "(1,1,1)"}, "does not match a 2-d kernel"),
])
def test_malformed_attributes_are_bad_input(tmp_path, attrs, match):
    b = SymbolBuilder()
    b.var("data")
    b.var("c_weight", np.ones((4, 3, 3, 3)))
    b.var("c_bias", np.ones(4))
    b.op("Convolution", "c", ["data", "c_weight", "c_bias"])
    b.nodes[-1]["attrs"] = attrs
    sym = b.save(tmp_path, ["c"])
    with pytest.raises(GraphfixError, match=match) as exc:
        load_mxnet(sym, input_shape={"": (1, 3, 8, 8)})
    assert exc.value.kind == "bad_input" and "node c (Convolution)" in str(exc.value)
