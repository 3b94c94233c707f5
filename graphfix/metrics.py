"""Multi-label metrics with exact, stated definitions.

Notation: Y, P in {0,1}^{n x L} (truth, predictions), S the scores. Classes or samples whose
ratio is 0/0 count as 0 unless said otherwise.

- per-class precision TP/(TP+FP), recall TP/(TP+FN), F1 2TP/(2TP+FP+FN).
- micro-F1 = 2 sum TP / (2 sum TP + sum FP + sum FN) over all (i, j).
- macro-F1 = mean over all L classes of the per-class F1 (sklearn `average="macro"`,
  zero_division=0). This is not COCO's CF1 (harmonic mean of averaged P and R).
- AP_j (non-interpolated) = sum over distinct score levels k (descending) of
  (R_k - R_{k-1}) * P_k: the precision at each cut weighted by the recall it adds; tied scores
  form one cut (= sklearn `average_precision_score`). Undefined (NaN) without positives.
- mAP = mean of AP_j over classes with >= 1 positive.
- VOC07 AP = (1/11) sum over r in {0, 0.1, ..., 1} of max precision at recall >= r.
- subset accuracy = share of samples whose predicted label set equals the true set.
- Hamming loss = share of (i, j) entries predicted wrong.
- samples-F1 = mean over samples of 2|Y_i & P_i| / (|Y_i| + |P_i|), empty/empty counted 1.
"""

from __future__ import annotations

__all__ = [
    "cut_counts",
    "confusion_counts",
    "precision_recall_f1",
    "micro_f1",
    "macro_f1",
    "subset_accuracy",
    "hamming_loss",
    "samples_f1",
    "average_precision",
    "voc07_average_precision",
    "mean_average_precision",
    "precision_recall_curve",
    "summarize",
]

import numpy as np


def _bool(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[:, None]
    return a if a.dtype == np.bool_ else a != 0


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def confusion_counts(y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class TP, FP, FN, TN (int64 arrays of length L)."""
    y, pred = _bool(y), _bool(pred)
    tp = np.count_nonzero(y & pred, axis=0)
    fp = np.count_nonzero(~y & pred, axis=0)
    fn = np.count_nonzero(y & ~pred, axis=0)
    tn = y.shape[0] - tp - fp - fn
    return {"tp": tp, "fp": fp, "fn": fn, "tn": tn}


def precision_recall_f1(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall and F1 (0 where undefined)."""
    c = confusion_counts(y, pred)
    return (
        _div(c["tp"], c["tp"] + c["fp"]),
        _div(c["tp"], c["tp"] + c["fn"]),
        _div(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"]),
    )


def micro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """2 sum TP / (2 sum TP + sum FP + sum FN); 0 when nothing is positive anywhere."""
    c = confusion_counts(y, pred)
    tp, fp, fn = c["tp"].sum(), c["fp"].sum(), c["fn"].sum()
    return float(_div(2 * tp, 2 * tp + fp + fn))


def macro_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class F1 over all classes (0 for a class with no positives and no predictions)."""
    return float(np.mean(precision_recall_f1(y, pred)[2]))


def subset_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of samples whose whole label set is right."""
    y, pred = _bool(y), _bool(pred)
    return float(np.mean(np.all(y == pred, axis=1)))


def hamming_loss(y: np.ndarray, pred: np.ndarray) -> float:
    """Share of wrong (sample, class) entries."""
    y, pred = _bool(y), _bool(pred)
    return float(np.mean(y != pred))


def samples_f1(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-sample F1; a sample with no true and no predicted label scores 1."""
    y, pred = _bool(y), _bool(pred)
    inter = np.count_nonzero(y & pred, axis=1)
    den = np.count_nonzero(y, axis=1) + np.count_nonzero(pred, axis=1)
    per = np.where(den > 0, 2.0 * inter / np.maximum(den, 1), 1.0)
    return float(per.mean())


def cut_counts(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """One class, at each distinct score, highest first: (true positives, rows predicted
    positive, positives, threshold). The cut at threshold `t[k]` predicts `score >= t[k]`;
    tied scores form one cut."""
    y = np.asarray(y).reshape(-1) != 0
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), len(s) - 1]  # last index of each tie group
    return np.cumsum(y)[last], last + 1, int(y.sum()), s[last]


def precision_recall_curve(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One class: precision, recall and threshold at each distinct score, highest score first
    (the cuts of `cut_counts`)."""
    tp, k, positives, thresholds = cut_counts(y, scores)
    return _div(tp, k), _div(tp, positives) if positives else np.zeros(len(k)), thresholds


def _per_class_ap(y: np.ndarray, scores: np.ndarray, ap) -> np.ndarray:
    """`ap(precision, recall)` of each class's PR curve (NaN for classes with no positives)."""
    y, scores = _bool(y), np.asarray(scores)
    if scores.ndim == 1:
        scores = scores[:, None]
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        if not y[:, j].any():
            continue
        prec, rec, _ = precision_recall_curve(y[:, j], scores[:, j])
        out[j] = float(ap(prec, rec))
    return out


def average_precision(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Non-interpolated AP per class (NaN for classes with no positives)."""
    return _per_class_ap(y, scores, lambda prec, rec: np.sum(np.diff(np.r_[0.0, rec]) * prec))


def voc07_average_precision(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """VOC2007 11-point interpolated AP per class (NaN for classes with no positives)."""
    return _per_class_ap(
        y, scores,
        lambda prec, rec: np.mean([prec[rec >= r].max() if (rec >= r).any() else 0.0 for r in np.linspace(0, 1, 11)]),
    )


def mean_average_precision(y: np.ndarray, scores: np.ndarray, *, voc07: bool = False) -> float:
    """Mean AP over classes with at least one positive (NaN if there are none)."""
    ap = voc07_average_precision(y, scores) if voc07 else average_precision(y, scores)
    ap = ap[~np.isnan(ap)]
    return float(ap.mean()) if len(ap) else float("nan")


def summarize(
    y: np.ndarray,
    scores: np.ndarray,
    thresholds: np.ndarray | float,
    labels: list[str] | None = None,
    *,
    pred: np.ndarray | None = None,
) -> dict:
    """Every metric above for `pred` (default `scores >= thresholds`), plus a per-class table.

    Returns:
        {"n", "micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss", "mAP",
        "mAP_voc07", "per_class": [{label, positives, predicted, precision, recall, f1, ap,
        threshold}]} (NaN APs become None).
    """
    y = _bool(y)
    scores = np.asarray(scores)
    thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float32), (y.shape[1],))
    pred = scores >= thr if pred is None else _bool(pred)
    prec, rec, f1 = precision_recall_f1(y, pred)
    ap = average_precision(y, scores)
    ap07 = voc07_average_precision(y, scores)
    names = labels or [str(j) for j in range(y.shape[1])]

    def num(v: float) -> float | None:
        return None if np.isnan(v) else round(float(v), 6)

    per_class = [
        {
            "label": names[j],
            "positives": int(y[:, j].sum()),
            "predicted": int(pred[:, j].sum()),
            "precision": num(prec[j]),
            "recall": num(rec[j]),
            "f1": num(f1[j]),
            "ap": num(ap[j]),
            "threshold": float(thr[j]),
        }
        for j in range(y.shape[1])
    ]
    valid = ap[~np.isnan(ap)]
    valid07 = ap07[~np.isnan(ap07)]
    return {
        "n": int(y.shape[0]),
        "micro_f1": num(micro_f1(y, pred)),
        "macro_f1": num(float(f1.mean())),
        "samples_f1": num(samples_f1(y, pred)),
        "subset_accuracy": num(subset_accuracy(y, pred)),
        "hamming_loss": num(hamming_loss(y, pred)),
        "mAP": num(valid.mean()) if len(valid) else None,
        "mAP_voc07": num(valid07.mean()) if len(valid07) else None,
        "per_class": per_class,
    }
