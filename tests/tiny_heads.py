"""Tiny swapped models built with onnx.helper, and the fixtures the data, train and calibrate tests share."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx.helper as oh
import pytest

from graphfix.convert._onnx import make_model
from graphfix.model import Model


def build_swapped(n_labels: int = 4, n_feat: int = 8, channels: int = 3, size: int = 6, seed: int = 0,
                  preprocess: dict | None = None) -> Model:
    """data [N,C,H,W] -> 1x1 Conv -> Relu -> GAP -> Flatten -> Gemm(graphfix_head) -> Sigmoid.

    Mirrors `graphfix.surgery.swap_head`'s output structure.
    """
    rng = np.random.default_rng(seed)
    conv_w = rng.standard_normal((n_feat, channels, 1, 1)).astype(np.float32)
    conv_b = rng.standard_normal(n_feat).astype(np.float32) * 0.1
    head_w = rng.standard_normal((n_labels, n_feat)).astype(np.float32) * 0.01
    head_b = np.zeros(n_labels, np.float32)
    nodes = [
        oh.make_node("Conv", ["data", "conv.w", "conv.b"], ["c1"], name="conv"),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu"),
        oh.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["features"], name="flatten"),
        oh.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                     name="graphfix_head", transB=1),
        oh.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    inits = [
        onnx.numpy_helper.from_array(conv_w, "conv.w"),
        onnx.numpy_helper.from_array(conv_b, "conv.b"),
        onnx.numpy_helper.from_array(head_w, "graphfix_head.weight"),
        onnx.numpy_helper.from_array(head_b, "graphfix_head.bias"),
    ]
    graph = oh.make_graph(
        nodes, "tiny",
        [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", channels, size, size])],
        [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", n_labels]),
         oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", n_labels])],
        inits,
    )
    proto = make_model(graph)
    labels = [f"c{j}" for j in range(n_labels)]
    onnx.helper.set_model_props(proto, {"graphfix.labels": json.dumps(labels)})
    if preprocess is not None:
        proto.metadata_props.add(key="graphfix.preprocess", value=json.dumps(preprocess))
    return Model.from_proto(proto)


def make_data(model: Model, n: int = 200, seed: int = 1, channels: int = 3, size: int = 6):
    """Inputs whose labels depend on the backbone features (learnable), x float32, y uint8."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, channels, size, size)).astype(np.float32)
    from graphfix.data.features import feature_model

    feats = feature_model(model).run(x)["features"]
    n_labels = len(model.labels)
    proj = np.random.default_rng(123).standard_normal((feats.shape[1], n_labels))
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6) @ proj
    y = (z + 0.3 * rng.standard_normal(z.shape) > 0.5).astype(np.uint8)
    return x, y


@pytest.fixture
def tiny_model() -> Model:
    return build_swapped()


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHFIX_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def build():
    """The `build_swapped` factory."""
    return build_swapped


@pytest.fixture
def make():
    """The `make_data` factory."""
    return make_data
