"""The decision rules that turn scores into label sets, in NumPy (the graph's `labels` output
computes the same): per-class thresholds (optionally at least one label per image), the top k,
or the top round(label_count) by the count head.
"""

from __future__ import annotations

__all__ = ["decide", "stored_decision", "count_to_k"]

from typing import Any

import numpy as np

from graphfix.model import Model


def count_to_k(count: np.ndarray, n_classes: int) -> np.ndarray:
    """Labels to keep per row from a predicted count: clip(floor(count + 0.5), 1, L)."""
    return np.clip(np.floor(np.asarray(count, np.float32) + np.float32(0.5)), 1, n_classes).astype(np.int64)


def decide(
    scores: np.ndarray,
    thresholds: np.ndarray | float | None = None,
    *,
    at_least_one: bool = False,
    top_k: int | None = None,
    count: np.ndarray | None = None,
) -> np.ndarray:
    """Bool [N, L] decisions.

    - thresholds: `scores >= thresholds`; with `at_least_one`, a row with no label gets its
      highest-scoring class (ties: all maxima, as the ONNX `labels` output does).
    - top_k (an int) or count ([N] predicted label counts, k = `count_to_k`): the k highest
      scores per row; every class tied with the k-th score is kept too (as the graph does).
    """
    scores = np.asarray(scores, dtype=np.float32)
    if top_k is not None or count is not None:
        n_cls = scores.shape[1]
        if count is not None:
            k = count_to_k(count, n_cls)
        else:
            k = np.full(len(scores), min(max(int(top_k), 1), n_cls), np.int64)
        if n_cls == 0 or len(scores) == 0:
            return np.zeros(scores.shape, bool)
        ordered = -np.sort(-scores, axis=1)
        kth = np.take_along_axis(ordered, (k - 1)[:, None], axis=1)
        return scores >= kth
    pred = scores >= np.asarray(thresholds, dtype=np.float32)
    if at_least_one and scores.shape[1]:
        empty = ~pred.any(axis=1)
        pred[empty] = scores[empty] == scores[empty].max(axis=1, keepdims=True)
    return pred


def stored_decision(model: Model) -> dict[str, Any]:
    """How `predict` decides for this model: stored thresholds, top-k, count, or 0.5."""
    meta = model.metadata
    thr = meta.get("thresholds")
    calib = meta.get("calibration") or {}
    training = meta.get("training") or {}
    if thr:
        return {"rule": "thresholds", "thresholds": thr, "at_least_one": bool(calib.get("at_least_one"))}
    if training.get("decision") == "topk" and training.get("top_k"):
        return {"rule": "topk", "top_k": int(training["top_k"])}
    if training.get("decision") == "count":
        return {"rule": "count"}
    return {"rule": "default 0.5", "thresholds": 0.5, "at_least_one": False}
