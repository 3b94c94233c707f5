"""Feature extraction: the cut model, batching, the on-disk cache."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.data import Dataset, model_scores
from graphfix.data.features import cache_dir, extract_features, feature_model, scores_from_features
from graphfix.errors import GraphfixError


def test_feature_model_drops_head(tiny_model):
    fm = feature_model(tiny_model)
    assert fm.output_names == ["features"]
    assert not any(n.op_type in ("Gemm", "Sigmoid") for n in fm.ir.graph)
    assert "graphfix_head.weight" not in fm.ir.graph.initializers
    assert tiny_model.output_names == ["logits", "probabilities"]  # input untouched


def test_features_match_full_model_and_batching(tiny_model):
    x = np.random.default_rng(0).standard_normal((13, 3, 6, 6)).astype(np.float32)
    ds = Dataset.from_arrays(x, np.zeros((13, 4)), tiny_model.labels)
    feats = extract_features(tiny_model, ds, batch_size=4, cache=False)
    assert feats.shape == (13, 8)
    full = tiny_model.run(x)
    np.testing.assert_allclose(scores_from_features(tiny_model, feats), full["probabilities"], rtol=1e-5, atol=1e-6)


def test_cache_written_and_reused(tiny_model, monkeypatch):
    x = np.random.default_rng(0).standard_normal((5, 3, 6, 6)).astype(np.float32)
    ds = Dataset.from_arrays(x, np.zeros((5, 4)), tiny_model.labels)
    feats = extract_features(tiny_model, ds)
    files = list((cache_dir() / "features").glob("*.npy"))
    assert len(files) == 1
    # a different head (same backbone) hits the same cache entry
    from graphfix.train.head_graph import set_head

    other = tiny_model.copy()
    set_head(other, np.ones((4, 8), np.float32), np.zeros(4, np.float32))
    calls = []
    import graphfix.data.features as F

    monkeypatch.setattr(F, "_run_batches", lambda *a, **k: calls.append(1))
    np.testing.assert_array_equal(extract_features(other, ds), feats)
    assert not calls


def test_no_head_error(build):
    m = build()
    gemm = next(n for n in m.ir.graph if n.op_type == "Gemm")
    gemm.name = "fc"
    with pytest.raises(GraphfixError, match="swap-head") as err:
        feature_model(m)
    assert err.value.kind == "no_head"


def test_wrong_input_shape_is_clear(tiny_model):
    ds = Dataset.from_arrays(np.zeros((2, 1, 6, 6)), np.zeros((2, 4)), tiny_model.labels)
    with pytest.raises(GraphfixError, match="rejects inputs of shape"):
        extract_features(tiny_model, ds, cache=False)


def test_label_count_mismatch(tiny_model):
    ds = Dataset.from_arrays(np.zeros((2, 3, 6, 6)), np.zeros((2, 5)))
    with pytest.raises(GraphfixError, match="5 labels but the model has 4"):
        model_scores(tiny_model, ds)
