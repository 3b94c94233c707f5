"""swap_head on every fixture: valid, runnable, features bit-identical, deterministic."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import graphfix as gf
from graphfix.surgery.swap import LOGITS, NEW_HEAD, PROBABILITIES
from tests.conftest import ONNX_FIXTURES, onnx_fixture, random_input, with_outputs

HEADED = sorted(k for k, v in ONNX_FIXTURES.items() if "kind" in v)


def _features_name(model, head):
    return head.features


@pytest.mark.parametrize("name", HEADED)
def test_swap_head_20_labels(name, tmp_path):
    src = gf.load(onnx_fixture(name))
    head = gf.find_head(src)
    new = gf.swap_head(src, labels=20)
    out = tmp_path / "out.onnx"
    new.save(out)
    onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out))
    assert 8 <= proto.ir_version <= 10
    assert [o.name for o in proto.graph.output] == [LOGITS, PROBABILITIES]
    for o in proto.graph.output:
        dims = o.type.tensor_type.shape.dim
        assert dims[0].dim_param, "batch dimension must stay symbolic"
        assert dims[1].dim_value == 20
    inits = {t.name for t in proto.graph.initializer}
    assert {f"{NEW_HEAD}.weight", f"{NEW_HEAD}.bias"} <= inits
    old_nodes = set(head.removed)
    assert not old_nodes & {n.name for n in proto.graph.node}, "old head nodes must be gone"
    input_names = {i.name for i in proto.graph.input}
    used = {i for n in proto.graph.node for i in n.input}
    assert inits <= used, f"unused initializers left: {sorted(inits - used)}"
    assert not input_names & inits

    reloaded = gf.load(out)
    for batch in (1, 7):
        feeds = random_input(src, batch, seed=batch)
        ref = with_outputs(src, [head.features]).run(feeds)[head.features]
        got = with_outputs(reloaded, [head.features]).run(feeds)
        assert np.array_equal(ref, got[head.features]), (
            f"features differ, max abs diff {np.abs(ref - got[head.features]).max()}"
        )
        assert got[LOGITS].shape == (batch, 20)
        probs = got[PROBABILITIES]
        assert np.allclose(probs, 1 / (1 + np.exp(-got[LOGITS])), atol=1e-6)
        # the head is exactly Gemm(features): check against numpy
        w = reloaded.ir.graph.initializers[f"{NEW_HEAD}.weight"].const_value.numpy()
        b = reloaded.ir.graph.initializers[f"{NEW_HEAD}.bias"].const_value.numpy()
        feat = ref.mean(axis=(2, 3)) if head.needs_pooling else ref
        np.testing.assert_allclose(got[LOGITS], feat @ w.T + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", HEADED)
def test_swap_head_is_deterministic(name, tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    gf.swap_head(gf.load(onnx_fixture(name)), labels=20, seed=3).save(a)
    gf.swap_head(gf.load(onnx_fixture(name)), labels=20, seed=3).save(b)
    assert a.read_bytes() == b.read_bytes()
    gf.swap_head(gf.load(onnx_fixture(name)), labels=20, seed=4).save(b)
    assert a.read_bytes() != b.read_bytes()


def test_swap_head_leaves_input_model_unchanged():
    src = gf.load(onnx_fixture("cnn_softmax"))
    before = src.to_bytes()
    gf.swap_head(src, labels=5)
    assert src.to_bytes() == before


def test_glorot_init_and_zero_bias():
    new = gf.swap_head(gf.load(onnx_fixture("cnn_softmax")), labels=20, seed=0)
    w = new.ir.graph.initializers[f"{NEW_HEAD}.weight"].const_value.numpy()
    b = new.ir.graph.initializers[f"{NEW_HEAD}.bias"].const_value.numpy()
    limit = np.sqrt(6 / (16 + 20))
    assert w.shape == (20, 16) and np.abs(w).max() <= limit and np.abs(w).max() > 0.8 * limit
    assert not b.any()


def test_metadata_written():
    new = gf.swap_head(gf.load(onnx_fixture("squeezenet_conv_head")), labels=["cat", "dog", "car"])
    meta = new.metadata
    assert meta["labels"] == ["cat", "dog", "car"]
    assert meta["head"]["num_features"] == 24 and meta["head"]["old_kind"] == "conv"
    assert meta["source"]["format"] == "onnx"
    assert meta["version"] == gf.__version__
    assert "thresholds" not in meta


@pytest.mark.parametrize("name", ["cnn_softmax", "mlp_matmul_add", "no_softmax"])
def test_init_from_old_copies_old_rows(name, tmp_path):
    src = gf.load(onnx_fixture(name))
    head = gf.find_head(src)
    mapping = {"b": 2, "c": 0}
    new = gf.swap_head(src, labels=["a", "b", "c"], init_from_old=mapping)
    feeds = random_input(src, 4)
    # logits of the old classifier = its pre-softmax tensor
    pre = src.ir.graph.outputs[0].producer()
    old_logits_name = pre.inputs[0].name if pre.op_type in ("Softmax", "LogSoftmax") else pre.outputs[0].name
    old = with_outputs(src, [old_logits_name]).run(feeds)[old_logits_name]
    got = new.run(feeds)[LOGITS]
    np.testing.assert_allclose(got[:, 1], old[:, 2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[:, 2], old[:, 0], rtol=1e-5, atol=1e-5)
    assert head.num_classes and new.metadata["head"]["init"] == "glorot_uniform+old_rows(2)"


def test_init_from_old_file_and_errors(tmp_path):
    src = gf.load(onnx_fixture("cnn_softmax"))
    m = tmp_path / "map.txt"
    m.write_text("# new old\nb 2\nc: 0\n")
    new = gf.swap_head(src, labels=["a", "b", "c"], init_from_old=m)
    assert new.metadata["head"]["init"] == "glorot_uniform+old_rows(2)"
    (tmp_path / "bad.json").write_text(json.dumps({"b": 99}))
    with pytest.raises(gf.GraphfixError, match="outside the old classifier"):
        gf.swap_head(src, labels=["a", "b"], init_from_old=tmp_path / "bad.json")
    with pytest.raises(gf.GraphfixError, match="unknown label"):
        gf.swap_head(src, labels=["a", "b"], init_from_old={"zzz": 1})


def test_swap_twice_replaces_the_multilabel_head():
    once = gf.swap_head(gf.load(onnx_fixture("cnn_softmax")), labels=20)
    twice = gf.swap_head(once, labels=4)
    assert twice.output_names == [LOGITS, PROBABILITIES]
    assert twice.op_histogram().get("Gemm") == 1 and twice.op_histogram().get("Sigmoid") == 1
    assert twice.run(random_input(twice, 2))[PROBABILITIES].shape == (2, 4)


def test_features_override_replaces_all_dependent_outputs():
    src = gf.load(onnx_fixture("two_softmax"))
    new = gf.swap_head(src, labels=6, features="flatten")
    assert new.output_names == [LOGITS, PROBABILITIES]
    assert new.run(random_input(new, 3))[LOGITS].shape == (3, 6)


def test_features_override_on_spatial_map_pools():
    new = gf.swap_head(gf.load(onnx_fixture("no_head")), labels=3, features="relu2")
    assert new.metadata["head"]["num_features"] == 16
    assert "GlobalAveragePool" in new.op_histogram()


def test_training_only_label_input_is_dropped():
    """An MXNet-style `softmax_label` input read only by the old head disappears."""
    from onnx import TensorProto, helper, numpy_helper
    from graphfix.convert._onnx import make_model

    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["fc"], transB=1, name="fc"),
         helper.make_node("Softmax", ["fc"], ["sm"], axis=1, name="sm"),
         helper.make_node("Identity", ["softmax_label"], ["label_copy"], name="label_id"),
         helper.make_node("Mul", ["sm", "label_copy"], ["out"], name="use_label")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("softmax_label", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3])], [w],
    )
    src = gf.Model.from_proto(make_model(graph))
    new = gf.swap_head(src, labels=2, features="x")
    assert new.input_names == ["x"]
    assert new.metadata["head"]["dropped_inputs"] == ["softmax_label"]
