"""Multi-label stratified folds (iterative stratification) and the selection scores."""

from __future__ import annotations

import numpy as np
import pytest

from graphfix.train.folds import fold_positives, stratified_folds
from graphfix.train.head_fit import cv_score


def _long_tail(n: int = 600, n_cls: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    priors = np.geomspace(0.004, 0.3, n_cls)
    y = (rng.random((n, n_cls)) < priors).astype(np.uint8)
    y[:2, 0], y[2:, 0] = 1, 0  # exactly 2 positives: fewer than 3 folds
    return y


def test_every_label_spread_over_the_folds():
    y = _long_tail()
    folds = stratified_folds(y, 3, seed=0)
    rows = np.sort(np.concatenate(folds))
    assert np.array_equal(rows, np.arange(len(y)))  # a partition
    assert max(len(f) for f in folds) - min(len(f) for f in folds) <= 2
    per = fold_positives(y, folds)
    total = y.sum(axis=0)
    ok = total >= 3
    # each label's positives split as evenly as integers allow
    assert (per[:, ok].max(axis=0) - per[:, ok].min(axis=0) <= 1).all(), per
    # a label with 2 positives has them in 2 different folds, one each
    assert sorted(per[:, 0]) == [0, 1, 1]
    # shuffled folds (the old split) leave some rare label unevenly spread; stratified ones do not
    order = np.random.default_rng(0).permutation(len(y))
    plain = fold_positives(y, np.array_split(order, 3))
    assert (plain[:, ok].max(axis=0) - plain[:, ok].min(axis=0)).max() >= 2


def test_folds_are_seeded():
    y = _long_tail(seed=1)
    a, b, c = stratified_folds(y, 4, 7), stratified_folds(y, 4, 7), stratified_folds(y, 4, 8)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c))


@pytest.mark.parametrize("metric", ["macro-f1", "micro-f1"])
def test_f1_scores_equal_sklearn_at_the_best_cuts(metric):
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    y = (rng.random((200, 5)) < 0.3).astype(np.uint8)
    y[:, 4] = 0  # no positive: left out
    scores = np.round(rng.random((200, 5)) + 0.5 * y, 2)  # ties
    pred = np.zeros_like(y)
    for j in range(4):  # brute force: the best-F1 cut of each class
        cuts = np.unique(scores[:, j])
        f1s = [f1_score(y[:, j], scores[:, j] >= t) for t in cuts]
        pred[:, j] = scores[:, j] >= cuts[int(np.argmax(f1s))]
    expected = f1_score(y[:, :4], pred[:, :4], average="macro" if metric == "macro-f1" else "micro")
    assert cv_score(metric, y, scores) == pytest.approx(expected, abs=1e-12)


def test_stratified_subsample_keeps_each_labels_share():
    from graphfix.train.folds import stratified_subsample

    y = _long_tail(n=1200, seed=2)
    sub = stratified_subsample(y, 400, seed=0)
    assert len(sub) == 400 and np.array_equal(sub, np.unique(sub))
    share = y[sub].sum(axis=0)
    expected = y.sum(axis=0) / 3
    assert (np.abs(share - expected) <= 1).all(), (share, expected)  # each label a third of its positives
    assert np.array_equal(stratified_subsample(y, 5000), np.arange(len(y)))  # fewer rows than asked: all
