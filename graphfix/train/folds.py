"""Multi-label stratified folds: iterative stratification (Sechidis, Tsoumakas & Vlahavas, ECML 2011).

Plain shuffled folds leave a rare label's few positives wherever they fall: with 6 positives
and 3 folds, one fold often has none, so that fold cannot score the label and the other folds
train on all of them. Iterative stratification spreads every label's positives over the folds:

1. Each fold wants n / k rows, and of each label l, D_l / k positives.
2. Repeatedly take the label with the fewest positives not yet placed (rarest first, so the
   rare labels are dealt before the common ones fill the folds); deal each of its rows to the
   fold that still wants most of that label, ties to the fold that wants most rows, then at
   random (seeded); every label of the row counts as placed in that fold.
3. Rows with no label go to the folds that want most rows.

A label with p < k positives has them in p different folds (one each): the other k - p
folds have none of it, so those folds leave the label out of their score (mAP and F1 run over
the labels with a positive), and `--l2 per-class` keeps the shared lambda for it.
"""

from __future__ import annotations

__all__ = ["stratified_folds", "stratified_subsample", "fold_positives"]

import numpy as np


def stratified_folds(y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """Split the rows of `y` [n, L] (0/1) into `k` folds; each fold's sorted row indices."""
    y = np.asarray(y) != 0
    n = len(y)
    rng = np.random.default_rng(seed)
    fold_of = np.full(n, -1, dtype=np.int64)
    want_rows = np.full(k, n / k)
    want = np.tile(y.sum(axis=0) / k, (k, 1))  # [k, L]
    left = y.sum(axis=0).astype(np.int64)  # positives of each label not yet placed
    order = rng.permutation(n)  # a seeded order of the rows inside each label
    ys = y[order]
    while True:
        live = np.flatnonzero(left > 0)
        if not len(live):
            break
        label = live[np.argmin(left[live])]
        for i in order[(ys[:, label]) & (fold_of[order] < 0)]:
            col = want[:, label]
            best = np.flatnonzero(col == col.max())
            if len(best) > 1:
                rows = want_rows[best]
                best = best[rows == rows.max()]
            f = int(best[0] if len(best) == 1 else rng.choice(best))
            fold_of[i] = f
            want[f] -= y[i]
            want_rows[f] -= 1
            left -= y[i]
    for i in order[fold_of[order] < 0]:  # unlabelled rows
        best = np.flatnonzero(want_rows == want_rows.max())
        f = int(best[0] if len(best) == 1 else rng.choice(best))
        fold_of[i] = f
        want_rows[f] -= 1
    return [np.flatnonzero(fold_of == f) for f in range(k)]


def fold_positives(y: np.ndarray, folds: list[np.ndarray]) -> np.ndarray:
    """Positives of each label in each fold, [k, L]."""
    y = np.asarray(y) != 0
    return np.stack([y[f].sum(axis=0) for f in folds])


def stratified_subsample(y: np.ndarray, n_rows: int, seed: int = 0) -> np.ndarray:
    """About `n_rows` rows of `y` [n, L] (n / ceil(n / n_rows), give or take the folds' rounding),
    every label's positives in proportion: the first of ceil(n / n_rows) stratified folds. Sorted
    row indices."""
    k = -(-len(y) // max(int(n_rows), 1))
    return np.arange(len(y)) if k <= 1 else stratified_folds(y, k, seed)[0]
