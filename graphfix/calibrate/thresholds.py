"""Exact per-class threshold search by sorting, and the policies around it.

The search (Yang's SCut, exact): for one class with scores `s` and labels `y`, predicting
`s >= t` for a cut between two *distinct* neighbouring scores is the only legal decision (tied
scores are never split). Every objective here is best at a cut just below a distinct *positive*
score (lowering the cut to a negative-only score adds false positives and no true positive), so
the search:

1. sorts the class's positives, and all its scores (all classes of a chunk in one `np.sort`,
   classes in chunks to bound memory; the chunk is transposed in cache-sized blocks);
2. for each distinct positive score `v`: TP(v) = positives >= v, FP(v) = (scores >= v) - TP(v)
   (by `searchsorted` in the sorted scores, keys ascending);
3. picks the best `v` (ties: the largest `v`, i.e. the fewest predictions) and returns the float32
   midpoint between `v` and the next lower distinct score of the class (`v` itself when no lower
   score exists), so `score >= t` reproduces the chosen cut exactly in float32.

Objectives: F-beta (`f1`, `f2`, `fbeta:B`), `precision@p` (largest recall with precision >= p;
infeasible when no cut reaches p: the max-precision cut is used and the class is marked),
`recall@r` (largest precision with recall >= r), and `micro-f1` (one global threshold: the same
search over all scores pooled). A class with no positives has no legal cut: its threshold is NaN
and `status` is "no_positives"; `fit_thresholds` (in `graphfix.calibrate`) replaces it by policy.
"""

from __future__ import annotations

__all__ = ["Objective", "parse_objective", "search_thresholds", "SearchResult", "midpoint32"]

import logging
import math
from dataclasses import dataclass

import numpy as np

from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Classes per chunk: bounds the working memory to about chunk * n * 5 bytes.
DEFAULT_CHUNK = 64


@dataclass(frozen=True)
class Objective:
    """A parsed `--objective`.

    Attributes:
        kind: "fbeta", "precision", "recall" or "micro-f1".
        value: beta for "fbeta", the target for "precision"/"recall", 1.0 for "micro-f1".
        spec: The text it was parsed from (normalised).
    """

    kind: str
    value: float
    spec: str


def parse_objective(spec: str | Objective) -> Objective:
    """Parse `f1`, `f2`, `fbeta:B`, `precision@P`, `recall@R` or `micro-f1`.

    Raises:
        GraphfixError: (usage) for anything else.
    """
    if isinstance(spec, Objective):
        return spec
    text = str(spec).strip().lower()
    try:
        if text in ("micro-f1", "micro_f1", "microf1"):
            return Objective("micro-f1", 1.0, "micro-f1")
        if text in ("f1", "f2"):
            return Objective("fbeta", float(text[1]), text)
        if text.startswith("fbeta:"):
            beta = float(text.split(":", 1)[1])
            if beta > 0 and math.isfinite(beta):
                return Objective("fbeta", beta, f"fbeta:{beta:g}")
        for kind in ("precision", "recall"):
            if text.startswith(kind + "@"):
                target = float(text.split("@", 1)[1])
                if 0.0 < target <= 1.0:
                    return Objective(kind, target, f"{kind}@{target:g}")
    except ValueError:
        pass
    raise GraphfixError(
        f"unknown objective {spec!r}",
        kind="usage",
        hint="expected f1, f2, fbeta:B (B > 0), precision@P, recall@R (0 < P, R <= 1) or micro-f1",
    )


@dataclass
class SearchResult:
    """Per-class outcome of `search_thresholds` (arrays of length L).

    Attributes:
        thresholds: float32 cut per class (`score >= t` is positive); NaN for classes without
            positives.
        objective: The objective's value at the cut (F-beta, or precision/recall of the cut).
        tp, fp, positives, n: Counts at the cut, positives per class, and the sample count.
        status: "ok", "no_positives" or "infeasible" (precision target not reached) per class.
    """

    thresholds: np.ndarray
    objective: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    positives: np.ndarray
    n: int
    status: list[str]

    @property
    def precision(self) -> np.ndarray:
        pred = self.tp + self.fp
        return np.divide(self.tp, pred, out=np.zeros(len(pred)), where=pred > 0)

    @property
    def recall(self) -> np.ndarray:
        return np.divide(self.tp, self.positives, out=np.zeros(len(self.tp)), where=self.positives > 0)

    @property
    def f1(self) -> np.ndarray:
        den = self.positives + self.tp + self.fp
        return np.divide(2.0 * self.tp, den, out=np.zeros(len(den)), where=den > 0)


def midpoint32(lo: float, hi: float) -> np.float32:
    """A float32 `t` with `lo < t <= hi` (the midpoint, or `hi` when none fits between)."""
    lo32, hi32 = np.float32(lo), np.float32(hi)
    t = np.float32((float(lo32) + float(hi32)) / 2.0)
    if not t > lo32:
        t = hi32
    return t


def _check_inputs(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores)
    y = np.asarray(y)
    if scores.ndim == 1:
        scores = scores[:, None]
    if y.ndim == 1:
        y = y[:, None]
    if scores.shape != y.shape or scores.ndim != 2:
        raise GraphfixError(f"scores {scores.shape} and labels {y.shape} differ in shape", kind="usage")
    if scores.shape[0] == 0:
        raise GraphfixError("no samples to fit thresholds on", kind="bad_input")
    if scores.dtype != np.float32:
        scores = scores.astype(np.float32)
    if y.dtype != np.bool_:
        y = y != 0
    return scores, y


def _pick(kind: str, value: float, tp: np.ndarray, fp: np.ndarray, positives: int) -> tuple[int, float, bool]:
    """Index of the best candidate (candidates ordered by descending score) and its objective.

    Returns:
        (index, objective value, feasible).
    """
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    if kind == "fbeta":
        b2 = value * value
        obj = (1.0 + b2) * tp / (b2 * positives + tp + fp)
        i = int(np.argmax(obj))
        return i, float(obj[i]), True
    precision = tp / (tp + fp)
    if kind == "precision":
        ok = precision >= value
        if not ok.any():
            i = int(np.argmax(precision))
            return i, float(precision[i]), False
        i = int(np.flatnonzero(ok)[-1])  # most recall among feasible cuts (recall grows with i)
        return i, float(precision[i]), True
    if kind == "recall":
        ok = tp >= value * positives
        masked = np.where(ok, precision, -1.0)
        i = int(np.argmax(masked))
        return i, float(tp[i] / positives), True
    raise ValueError(kind)


def _search_one(
    all_sorted: np.ndarray, pos_sorted: np.ndarray, kind: str, value: float
) -> tuple[np.float32, float, int, int, str]:
    """One class: all its scores and its positives, both sorted ascending -> (t, obj, tp, fp, status)."""
    n_pos = len(pos_sorted)
    if n_pos == 0:
        return np.float32(np.nan), 0.0, 0, 0, "no_positives"
    first = np.empty(n_pos, dtype=bool)
    first[0] = True
    np.not_equal(pos_sorted[1:], pos_sorted[:-1], out=first[1:])
    first_idx = np.flatnonzero(first)
    below = np.searchsorted(all_sorted, pos_sorted[first_idx], side="left")  # ascending keys: fast
    first_idx = first_idx[::-1]  # distinct positives, descending score
    below = below[::-1]
    tp = n_pos - first_idx
    fp = (len(all_sorted) - below) - tp
    i, obj, feasible = _pick(kind, value, tp, fp, n_pos)
    v = pos_sorted[first_idx[i]]
    t = np.float32(v) if below[i] == 0 else midpoint32(all_sorted[below[i] - 1], v)
    return t, obj, int(tp[i]), int(fp[i]), "ok" if feasible else "infeasible"


def search_thresholds(
    scores: np.ndarray,
    y: np.ndarray,
    objective: str | Objective = "f1",
    *,
    chunk: int = DEFAULT_CHUNK,
) -> SearchResult:
    """Exact best cut per class (or one global cut for `micro-f1`) by sorting.

    Args:
        scores: [N, L] scores (any monotone scale; float32 is used).
        y: [N, L] 0/1 labels.
        objective: See `parse_objective`.
        chunk: Classes sorted together; memory is about `chunk * N * 5` bytes.

    Returns:
        A `SearchResult`; for `micro-f1` every class gets the same threshold and the counts
        are per class at that threshold.
    """
    obj = parse_objective(objective)
    scores, y = _check_inputs(scores, y)
    n, n_cls = scores.shape
    if obj.kind == "micro-f1":
        flat = search_thresholds(scores.reshape(-1, 1), y.reshape(-1, 1), "f1", chunk=1)
        t = flat.thresholds[0]
        if np.isnan(t):
            t = np.float32(0.5)  # no positive anywhere: nothing to tune
        pred = scores >= t
        tp = (pred & y).sum(0)
        fp = (pred & ~y).sum(0)
        positives = y.sum(0)
        den = positives + tp + fp
        f1 = np.divide(2.0 * tp, den, out=np.zeros(n_cls), where=den > 0)
        return SearchResult(
            np.full(n_cls, t, np.float32), f1, tp, fp, positives, n,
            ["ok" if p else "no_positives" for p in positives],
        )
    thresholds = np.empty(n_cls, np.float32)
    values = np.zeros(n_cls)
    tps = np.zeros(n_cls, np.int64)
    fps = np.zeros(n_cls, np.int64)
    positives = np.zeros(n_cls, np.int64)
    status: list[str] = []
    chunk = max(1, int(chunk))
    block = 512  # rows per transposed block: fits the cache, far fewer misses than a plain .T copy
    s_t = np.empty((min(chunk, n_cls), n), np.float32)
    y_t = np.empty((min(chunk, n_cls), n), bool)
    for j0 in range(0, n_cls, chunk):
        j1 = min(j0 + chunk, n_cls)
        c = j1 - j0
        sc, yc = s_t[:c], y_t[:c]
        for i0 in range(0, n, block):
            sc[:, i0 : i0 + block] = scores[i0 : i0 + block, j0:j1].T
            yc[:, i0 : i0 + block] = y[i0 : i0 + block, j0:j1].T
        n_pos = np.count_nonzero(yc, axis=1)
        offsets = np.concatenate([[0], np.cumsum(n_pos)])
        pos_all = sc[yc]  # positives of every class of the chunk, row after row
        sc.sort(axis=1)
        if not (np.isfinite(sc[:, 0]).all() and np.isfinite(sc[:, -1]).all()):
            raise GraphfixError("scores contain NaN or infinity", kind="bad_input")
        for k in range(c):
            pos_sorted = np.sort(pos_all[offsets[k] : offsets[k + 1]])
            t, v, tp, fp, st = _search_one(sc[k], pos_sorted, obj.kind, obj.value)
            j = j0 + k
            thresholds[j], values[j], tps[j], fps[j], positives[j] = t, v, tp, fp, n_pos[k]
            status.append(st)
    return SearchResult(thresholds, values, tps, fps, positives, n, status)
