"""Metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix import metrics

sk = pytest.importorskip("sklearn.metrics")


def _data(seed=0, n=120, n_cls=5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_cls)) < 0.3).astype(int)
    s = np.round(0.5 * y + rng.random((n, n_cls)), 1)  # rounded: ties
    return y, s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn(seed):
    y, s = _data(seed)
    y[:, 4] = 0  # a class with no positives
    pred = s >= 0.6
    assert metrics.micro_f1(y, pred) == pytest.approx(sk.f1_score(y, pred, average="micro", zero_division=0))
    assert metrics.macro_f1(y, pred) == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    assert metrics.hamming_loss(y, pred) == pytest.approx(sk.hamming_loss(y, pred))
    assert metrics.subset_accuracy(y, pred) == pytest.approx(sk.accuracy_score(y, pred))
    ap = metrics.average_precision(y, s)
    for j in range(4):
        assert ap[j] == pytest.approx(sk.average_precision_score(y[:, j], s[:, j]))
    assert np.isnan(ap[4])
    assert metrics.mean_average_precision(y, s) == pytest.approx(np.mean(ap[:4]))


def test_voc07_hand_example():
    y = np.array([[1], [0], [1], [0]])
    s = np.array([[0.9], [0.8], [0.7], [0.1]])
    # cuts: P=1,R=.5 | P=.5,R=.5 | P=2/3,R=1 | P=.5,R=1 -> r<=.5: 1.0 (6 points), r>.5: 2/3 (5 points)
    assert metrics.voc07_average_precision(y, s)[0] == pytest.approx((6 * 1.0 + 5 * (2 / 3)) / 11)
    assert metrics.average_precision(y, s)[0] == pytest.approx(0.5 * 1.0 + 0.5 * (2 / 3))


def test_samples_f1_and_summary():
    y = np.array([[1, 0], [0, 0]])
    pred = np.array([[1, 1], [0, 0]])
    assert metrics.samples_f1(y, pred) == pytest.approx((2 / 3 + 1.0) / 2)
    summ = metrics.summarize(y, pred.astype(float), 0.5, ["a", "b"])
    assert summ["per_class"][1]["ap"] is None and summ["mAP"] == 1.0
    assert summ["n"] == 2
