"""Head training (torch): quality, determinism, losses, the written graph."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.calibrate import Dataset, model_scores, train_head
from graphfix.calibrate.metrics import mean_average_precision
from graphfix.errors import GraphfixError

torch = pytest.importorskip("torch")


@pytest.fixture
def split(tiny_model, make):
    x, y = make(tiny_model, 300)
    labels = tiny_model.labels
    return (Dataset.from_arrays(x[:200], y[:200], labels), Dataset.from_arrays(x[200:], y[200:], labels))


def test_training_learns_and_leaves_input(tiny_model, split):
    train, val = split
    before = tiny_model.to_bytes()
    base_scores, y = model_scores(tiny_model, val)
    new, hist = train_head(tiny_model, train, val, epochs=20)
    assert tiny_model.to_bytes() == before
    scores, _ = model_scores(new, val)
    assert mean_average_precision(y, scores) > mean_average_precision(y, base_scores) + 0.1
    assert hist["selected_by"] == "validation mAP" and len(hist["runs"]) == 5
    assert len(hist["train_loss"]) == 20 and hist["train_loss"][-1] < hist["train_loss"][0]
    meta = new.metadata["training"]
    assert meta["loss"] == "bce" and meta["weight_decay"] == hist["weight_decay"] and meta["val_mAP"] is not None
    # ORT on the written model equals the NumPy head on cached features
    ort = new.run(val.x)["probabilities"]
    np.testing.assert_allclose(ort, scores, rtol=1e-5, atol=1e-6)


def test_deterministic_bytes(tiny_model, split):
    train, val = split
    a, _ = train_head(tiny_model, train, val, epochs=5, seed=3)
    b, _ = train_head(tiny_model, train, val, epochs=5, seed=3, cache=False)
    assert a.to_bytes() == b.to_bytes()
    c, _ = train_head(tiny_model, train, val, epochs=5, seed=4)
    assert c.to_bytes() != a.to_bytes()


@pytest.mark.parametrize("kw", [
    {"loss": "asl"},
    {"loss": "bce", "pos_weight": "balanced", "weight_decay": 0.0},
    {"loss": "asl", "asl_gamma_pos": 1.0, "asl_clip": 0.0},
])
def test_other_losses(tiny_model, split, kw):
    train, val = split
    new, hist = train_head(tiny_model, train, epochs=10, **kw)
    scores, y = model_scores(new, val)
    assert mean_average_precision(y, scores) > 0.6
    assert hist["selected_by"] in ("default (no validation set)", "fixed")


def test_softmax_targets_make_softmax_probabilities(tiny_model, split):
    train, val = split
    new, hist = train_head(tiny_model, train, epochs=10, loss="softmax", decision="topk")
    probs = new.run(val.x)["probabilities"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert new.metadata["training"]["top_k"] >= 1
    scores, _ = model_scores(new, val)
    np.testing.assert_allclose(scores, probs, rtol=1e-5, atol=1e-6)


def test_retraining_drops_stale_thresholds(tiny_model, split):
    from graphfix.calibrate import apply_thresholds

    train, _ = split
    calibrated = apply_thresholds(tiny_model, [0.5] * 4)
    assert "labels" in calibrated.output_names
    new, _ = train_head(calibrated, train, epochs=2)
    assert "labels" not in new.output_names and new.thresholds is None


@pytest.mark.parametrize("kw,match", [
    ({"loss": "hinge"}, "unknown loss"),
    ({"pos_weight": "balanced", "loss": "asl"}, "bce loss only"),
    ({"epochs": 0}, "positive"),
    ({"weight_decay": "lots"}, "weight decay"),
    ({"decision": "maybe"}, "unknown decision"),
])
def test_bad_settings(tiny_model, split, kw, match):
    with pytest.raises(GraphfixError, match=match):
        train_head(tiny_model, split[0], **kw)


def test_missing_torch_is_clear(tiny_model, split, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(GraphfixError, match=r"graphfix\[train\]"):
        train_head(tiny_model, split[0], epochs=1)
