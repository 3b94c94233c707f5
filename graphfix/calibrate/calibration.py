"""Per-class decision thresholds: fitting them (with the few-positive policy) and storing them.

- `fit_thresholds(model, heldout_set, objective="f1", ...)`: exact per-class thresholds (sort
  based) with an explicit policy for classes with few held-out positives. Returns `Thresholds`.
- `apply_thresholds(model, thresholds, labels_output=True)`: stores them in
  `graphfix.thresholds` and adds the bool `labels` output. Returns a new Model.

Few-positive policy (`min_positives`, default 3): a class with fewer held-out positives gets the
threshold fitted on the training scores when `train_set` is given and has enough positives of
that class ("fallback:train"), else the single micro-F1 threshold fitted on the held-out classes
that do have enough positives ("fallback:global"; 0.5 if none has). `Thresholds.fallbacks`
lists each such class with the reason; a class never ends up predicted everywhere silently:
a tuned threshold at or below every held-out score is listed in `Thresholds.warnings`.

Out-of-fold scores (`oof_scores`, `oof_y`; `training_oof_scores` makes them): the training rows
scored by the cross-validation's fold heads (each trained without that row; the loss and lambda
of the final head). A class with fewer than `oof_below` held-out positives gets its threshold
from its held-out scores pooled with its out-of-fold scores (source "heldout+oof"; a class with
too few positives in both still falls back to the global threshold). They replace the in-sample
training scores of "fallback:train", which overrate the head on the rows it was fitted to.
Each class's source (`Thresholds.sources`): "heldout", "heldout+oof", "train" or "global".
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MIN_POSITIVES",
    "DEFAULT_OOF_BELOW",
    "Thresholds",
    "training_oof_scores",
    "check_trained",
    "fit_thresholds",
    "fit_thresholds_from_scores",
    "apply_thresholds",
    "evaluate",
]

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from graphfix import metrics
from graphfix.data.datasets import Dataset
from graphfix.data.images import Preprocess
from graphfix.calibrate.decisions import decide
from graphfix.data.features import head_parameters
from graphfix.data.scores import model_labels, model_scores
from graphfix.calibrate.thresholds import parse_objective, search_thresholds
from graphfix.errors import GraphfixError
from graphfix.model import Model, set_metadata

#: Default minimum number of held-out positives for a class to get its own tuned threshold.
DEFAULT_MIN_POSITIVES = 3
#: Default: classes with fewer held-out positives than this pool in the out-of-fold scores. Off
#: (0): measured against held-out-only thresholds (benchmarks/bench_head_options.py --part oof)
#: it raised macro-F1 but lowered micro-F1 (K=10: +0.005 / -0.010 on average).
DEFAULT_OOF_BELOW = 0


@dataclass
class Thresholds:
    """Per-class thresholds (probability scale) and how each was chosen.

    Attributes:
        values: float32 [L]; predict class j when `probabilities[:, j] >= values[j]`.
        labels: Class names.
        objective: The objective spec (`f1`, `precision@0.9`, ...).
        methods: Per class: "tuned", "infeasible" (precision target not reached: the
            max-precision cut), "fallback:train", "fallback:global" or "global" (micro-f1).
        reasons: Per class: why a fallback or mark was used (None for plain tuned classes).
        positives: Held-out positives per class.
        global_threshold: The pooled micro-F1 threshold used by "fallback:global".
        min_positives: The few-positive limit.
        folds: k of the k-fold averaging, or None.
        at_least_one: Keep each image's top label even when below its threshold.
        heldout: Held-out metrics at these thresholds (`metrics.summarize`).
        warnings: Classes whose threshold predicts every held-out sample, and the like.
        sources: Per class, the scores its threshold was fitted on: "heldout", "heldout+oof",
            "train" (fallback:train) or "global".
        oof_below: The out-of-fold limit when out-of-fold scores were given, else None.
    """

    values: np.ndarray
    labels: list[str]
    objective: str
    methods: list[str]
    reasons: list[str | None]
    positives: list[int]
    global_threshold: float
    min_positives: int = DEFAULT_MIN_POSITIVES
    folds: int | None = None
    at_least_one: bool = False
    heldout: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    oof_below: int | None = None

    @property
    def fallbacks(self) -> list[dict[str, Any]]:
        """Classes not tuned on their own held-out scores, with the reason."""
        return [
            {"label": self.labels[j], "method": m, "reason": self.reasons[j], "threshold": float(self.values[j])}
            for j, m in enumerate(self.methods)
            if m not in ("tuned", "global")
        ]

    def summary(self) -> dict[str, Any]:
        """The compact form stored as `graphfix.calibration` metadata."""
        counts: dict[str, int] = {}
        for m in self.methods:
            counts[m] = counts.get(m, 0) + 1
        sources: dict[str, int] = {}
        for src in self.sources:
            sources[src] = sources.get(src, 0) + 1
        return {
            "objective": self.objective,
            "min_positives": self.min_positives,
            "oof_below": self.oof_below,
            "sources": sources,
            "heldout+oof": [self.labels[j] for j, src in enumerate(self.sources) if src == "heldout+oof"],
            "folds": self.folds,
            "at_least_one": self.at_least_one,
            "global_threshold": float(self.global_threshold),
            "methods": counts,
            "fallbacks": self.fallbacks,
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready."""
        return {
            **self.summary(),
            "thresholds": [float(v) for v in self.values],
            "labels": list(self.labels),
            "per_class": [
                {"label": self.labels[j], "threshold": float(self.values[j]), "method": self.methods[j],
                 "reason": self.reasons[j], "heldout_positives": self.positives[j], "source": self.sources[j]}
                for j in range(len(self.labels))
            ],
            "heldout": self.heldout,
            "warnings": list(self.warnings),
        }


def _policy(
    scores: np.ndarray,
    y: np.ndarray,
    objective: str,
    *,
    min_positives: int,
    train_scores: np.ndarray | None,
    train_y: np.ndarray | None,
    oof_scores: np.ndarray | None = None,
    oof_y: np.ndarray | None = None,
    oof_below: int = DEFAULT_OOF_BELOW,
) -> tuple[np.ndarray, list[str], list[str | None], np.ndarray, float, list[str]]:
    obj = parse_objective(objective)
    res = search_thresholds(scores, y, obj)
    positives = res.positives
    n_cls = scores.shape[1]
    if obj.kind == "micro-f1":
        methods = ["global"] * n_cls
        reasons: list[str | None] = [None if p else "no held-out positives; the global threshold applies" for p in positives]
        return res.thresholds, methods, reasons, positives, float(res.thresholds[0]) if n_cls else 0.5, ["global"] * n_cls
    enough = positives >= min_positives
    if enough.any():
        pooled = search_thresholds(scores[:, enough], y[:, enough], "micro-f1")
        global_t = float(pooled.thresholds[0])
    else:
        global_t = 0.5
    values = res.thresholds.copy()
    methods, reasons, sources = [], [], []
    pooled_lookup = {}
    if oof_scores is not None and oof_y is not None:  # held-out + out-of-fold scores for classes with few positives
        idx = np.flatnonzero(positives < oof_below)
        if len(idx):
            both = search_thresholds(np.concatenate([scores[:, idx], oof_scores[:, idx]]),
                                     np.concatenate([y[:, idx], oof_y[:, idx] != 0]), obj)
            pooled_lookup = {int(j): (both, k) for k, j in enumerate(idx)}
    train_lookup = {}
    if train_scores is not None and train_y is not None and (~enough).any() and oof_scores is None:
        idx = np.flatnonzero(~enough)
        tr = search_thresholds(train_scores[:, idx], train_y[:, idx], obj)
        train_lookup = {int(j): (tr.thresholds[k], int(tr.positives[k]), tr.status[k]) for k, j in enumerate(idx)}
    for j in range(n_cls):
        why = f"{int(positives[j])} held-out positive{'s' if positives[j] != 1 else ''}"
        if j in pooled_lookup and pooled_lookup[j][0].positives[pooled_lookup[j][1]] >= min_positives:
            both, k = pooled_lookup[j]
            values[j] = both.thresholds[k]
            n_oof = int(both.positives[k] - positives[j])
            infeasible = both.status[k] == "infeasible"
            methods.append("infeasible" if infeasible else "tuned")
            reasons.append(f"{why} (< {oof_below}); fitted on them and {n_oof} out-of-fold training positives"
                           + (f"; no cut reaches {obj.spec}" if infeasible else ""))
            sources.append("heldout+oof")
            continue
        if enough[j]:
            sources.append("heldout")
            if res.status[j] == "infeasible":
                methods.append("infeasible")
                reasons.append(f"no cut reaches {obj.spec}; the max-precision cut is used (precision {res.objective[j]:.3f})")
            else:
                methods.append("tuned")
                reasons.append(None)
            continue
        why += f" (< {min_positives})"
        if j in train_lookup and train_lookup[j][1] >= min_positives:
            values[j] = train_lookup[j][0]
            methods.append("fallback:train")
            sources.append("train")
            reasons.append(f"{why}; threshold fitted on {train_lookup[j][1]} training positives")
        else:
            values[j] = np.float32(global_t)
            methods.append("fallback:global")
            sources.append("global")
            if j in pooled_lookup:
                n_oof = int(pooled_lookup[j][0].positives[pooled_lookup[j][1]] - positives[j])
                reasons.append(f"{why}; only {n_oof} out-of-fold training positives: global micro-F1 threshold")
            elif train_scores is None and oof_scores is None:
                reasons.append(f"{why}; no training scores given: global micro-F1 threshold")
            else:
                n_tr = train_lookup.get(j, (0, 0, ""))[1]
                reasons.append(f"{why}; only {n_tr} training positives: global micro-F1 threshold")
    return values.astype(np.float32), methods, reasons, positives, global_t, sources


def fit_thresholds_from_scores(
    scores: np.ndarray,
    y: np.ndarray,
    objective: str = "f1",
    *,
    labels: Sequence[str] | None = None,
    train_scores: np.ndarray | None = None,
    train_y: np.ndarray | None = None,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    folds: int | None = None,
    at_least_one: bool = False,
    seed: int = 0,
    oof_scores: np.ndarray | None = None,
    oof_y: np.ndarray | None = None,
    oof_below: int = DEFAULT_OOF_BELOW,
) -> Thresholds:
    """`fit_thresholds` on given scores [N, L] and targets [N, L] (no model needed).

    Args:
        scores: Held-out probabilities (or any monotone score).
        y: Held-out 0/1 targets.
        objective: f1 | f2 | fbeta:B | precision@P | recall@R | micro-f1.
        labels: Class names (default "0".."L-1").
        train_scores, train_y: Training scores and targets for the few-positive fallback.
        min_positives: Fewer held-out positives than this -> fallback (>= 1).
        folds: Average the thresholds fitted on k folds' complements (k >= 2), each with the
            same policy (Fan & Lin's CV threshold smoothing).
        at_least_one: Stored with the thresholds; applied by `decide`/the `labels` output.
        seed: Fold assignment seed.
        oof_scores, oof_y: Out-of-fold training scores and targets (see the module docstring);
            with them, `train_scores` are not used.
        oof_below: Classes with fewer held-out positives pool in the out-of-fold scores (0: none).
    """
    obj = parse_objective(objective)
    scores = np.asarray(scores, dtype=np.float32)
    y = np.asarray(y)
    if scores.ndim != 2 or scores.shape != y.shape:
        raise GraphfixError(f"scores {scores.shape} and targets {y.shape} must both be [N, L]", kind="usage")
    if scores.shape[0] == 0:
        raise GraphfixError("the held-out set is empty", kind="bad_input")
    if min_positives < 1:
        raise GraphfixError("min_positives must be >= 1", kind="usage")
    y = y != 0
    n, n_cls = scores.shape
    names = list(labels) if labels is not None else [str(j) for j in range(n_cls)]
    if oof_below < 0:
        raise GraphfixError("oof_below must be >= 0", kind="usage")
    if oof_scores is not None and (oof_y is None or np.shape(oof_scores) != np.shape(oof_y)
                                   or np.shape(oof_scores)[1:] != (n_cls,)):
        raise GraphfixError(f"out-of-fold scores must be [N, {n_cls}] with targets of that shape", kind="usage")
    kw = dict(min_positives=min_positives, train_scores=train_scores, train_y=train_y, oof_scores=oof_scores,
              oof_y=oof_y, oof_below=oof_below)
    values, methods, reasons, positives, global_t, sources = _policy(scores, y, obj.spec, **kw)
    warnings: list[str] = []
    if folds is not None:
        if not 2 <= int(folds) <= n:
            raise GraphfixError(f"folds must be between 2 and the sample count ({n})", kind="usage")
        order = np.random.default_rng(seed).permutation(n)
        parts = np.array_split(order, int(folds))
        fold_values = []
        for part in parts:
            keep = np.setdiff1d(order, part)
            fv, *_ = _policy(scores[keep], y[keep], obj.spec, **kw)
            fold_values.append(fv.astype(np.float64))
        values = np.mean(fold_values, axis=0).astype(np.float32)
        spread = np.std(fold_values, axis=0)
        for j in np.flatnonzero(spread > 0.1):
            warnings.append(f"{names[j]}: fold thresholds vary widely (std {spread[j]:.3f})")
    mins = scores.min(axis=0)
    for j in range(n_cls):
        if methods[j] in ("tuned", "infeasible") and values[j] <= mins[j] and positives[j] < n:
            warnings.append(
                f"{names[j]}: threshold {float(values[j]):.4g} predicts every held-out sample "
                f"({int(positives[j])}/{n} positive): the scores do not separate this class"
            )
    pred = decide(scores, values, at_least_one=at_least_one)
    heldout = metrics.summarize(y, scores, values, names, pred=pred)
    return Thresholds(
        values=values, labels=names, objective=obj.spec, methods=methods, reasons=reasons,
        positives=[int(p) for p in positives], global_threshold=global_t, min_positives=min_positives,
        folds=int(folds) if folds else None, at_least_one=at_least_one, heldout=heldout, warnings=warnings,
        sources=sources, oof_below=oof_below if oof_scores is not None else None,
    )


def training_oof_scores(
    model: Model,
    train_set: Dataset | str | os.PathLike,
    *,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(out-of-fold scores [N, L], targets [N, L]) of the training rows, or None.

    The CV of the model's `graphfix.training` record (its loss, lambda(s), k folds and seed) is
    solved again on `train_set`'s features (`graphfix.train.head_fit.oof_scores`: k head-only
    solves). None for a head that was not fitted that way: untrained, fine-tuned
    (`--train-from`: the backbone changed), or fewer than 2k rows.
    """
    from graphfix.data.features import extract_features
    from graphfix.data.scores import as_dataset
    from graphfix.train.head_fit import TrainConfig, oof_scores
    from graphfix.train.losses import LOSSES

    t = model.metadata.get("training") or {}
    if t.get("loss") not in LOSSES or t.get("train_from") or "cv_folds" not in t:
        return None
    data = as_dataset(model, train_set, preprocess)
    folds = int(t["cv_folds"])
    if len(data) < 2 * folds:
        return None
    x = extract_features(model, data, batch_size=batch_size, cache=cache, progress=progress)
    d = TrainConfig  # the defaults of what the record may leave out
    cfg = TrainConfig(loss=t["loss"], pos_weight=t.get("pos_weight"),
                      asl_gamma_neg=float(t.get("asl_gamma_neg", d.asl_gamma_neg)),
                      asl_gamma_pos=float(t.get("asl_gamma_pos", d.asl_gamma_pos)),
                      asl_clip=float(t.get("asl_clip", d.asl_clip)), count=bool(t.get("count")), cv_folds=folds,
                      seed=int(t.get("seed", d.seed)), standardize=t.get("standardize", "per-feature"))
    per_class = (t.get("l2_per_class") or {}).get("weight_decay")
    lam = np.array(per_class, np.float64) if per_class else float(t["weight_decay"])
    scores = oof_scores(x, data.y, cfg, lam)
    if t.get("platt"):  # a least-squares head: its scores as the head's probabilities
        from graphfix.train.losses import platt

        scores = platt(scores, np.array(t["platt"]["a"]), np.array(t["platt"]["c"])).astype(np.float32)
    return scores, np.asarray(data.y)


def check_trained(model: Model, untrained: bool = False, path: str | None = None) -> None:
    """Refuse (usage) an untrained head, one from swap-head with no `graphfix.training`: its
    weights are random, so thresholds fitted on it mean nothing. `untrained=True` allows it
    (`calibrate --untrained`)."""
    from graphfix.model import head_state

    if head_state(model) == "untrained" and not untrained:
        raise GraphfixError(
            "the head is untrained (no graphfix.training: random weights from swap-head); thresholds fitted on it "
            "mean nothing", kind="usage", path=path or model.path,
            hint="run `graphfix train-head MODEL --train DATA` first, or pass --untrained to calibrate it anyway")


def fit_thresholds(
    model: Model,
    heldout_set: Dataset | str | os.PathLike,
    objective: str = "f1",
    *,
    train_set: Dataset | str | os.PathLike | None = None,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    folds: int | None = None,
    at_least_one: bool = False,
    seed: int = 0,
    oof_below: int = DEFAULT_OOF_BELOW,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool | None = None,
    preprocess: Preprocess | None = None,
    untrained: bool = False,
) -> Thresholds:
    """Fit per-class thresholds on held-out data (see `fit_thresholds_from_scores`).

    Args:
        model: A trained swapped model.
        heldout_set: Held-out data (Dataset, CSV or NPZ path).
        objective: f1 | f2 | fbeta:B | precision@P | recall@R | micro-f1.
        train_set: Training data: its out-of-fold scores (`training_oof_scores`) for classes
            with fewer than `oof_below` held-out positives; for a head without them, its
            in-sample scores for the few-positive fallback.
        oof_below: See `fit_thresholds_from_scores` (0: never pool; use the fallback).
        batch_size, cache, progress, preprocess: feature extraction settings.
        untrained: Fit on an untrained head anyway (refused by default: see `check_trained`).
    """
    check_trained(model, untrained)
    kw = dict(batch_size=batch_size, cache=cache, progress=progress, preprocess=preprocess)
    scores, y = model_scores(model, heldout_set, **kw)
    train_scores = train_y = oof = None
    if train_set is not None:
        oof = training_oof_scores(model, train_set, **kw) if oof_below > 0 else None
        if oof is None:
            train_scores, train_y = model_scores(model, train_set, **kw)
    return fit_thresholds_from_scores(
        scores, y, objective, labels=model_labels(model), train_scores=train_scores, train_y=train_y,
        min_positives=min_positives, folds=folds, at_least_one=at_least_one, seed=seed,
        oof_scores=None if oof is None else oof[0], oof_y=None if oof is None else oof[1], oof_below=oof_below,
    )


def apply_thresholds(
    model: Model,
    thresholds: Thresholds | Sequence[float] | np.ndarray,
    labels_output: bool = True,
    *,
    at_least_one: bool | None = None,
) -> Model:
    """A new Model with `graphfix.thresholds` (and `graphfix.calibration`) metadata set.

    Args:
        model: A trained swapped model (not changed).
        thresholds: A `Thresholds` or L floats (probability scale).
        labels_output: Add the bool `labels` output (replacing an earlier one).
        at_least_one: Keep each image's top label (default: the Thresholds' setting).
    """
    from graphfix.train.head_graph import add_labels_output, remove_labels_output

    if isinstance(thresholds, Thresholds):
        values = thresholds.values
        summary = thresholds.summary()
        keep_one = thresholds.at_least_one if at_least_one is None else at_least_one
    else:
        values = np.asarray(thresholds, dtype=np.float32).reshape(-1)
        keep_one = bool(at_least_one)
        summary = {"objective": "given", "at_least_one": keep_one}
    summary["at_least_one"] = keep_one
    n_cls = head_parameters(model)[0].shape[0]
    if len(values) != n_cls:
        raise GraphfixError(f"{len(values)} thresholds for {n_cls} classes", kind="usage", path=model.path)
    if not np.isfinite(values).all():
        raise GraphfixError("thresholds must be finite numbers", kind="usage")
    new = model.copy()
    if labels_output:
        add_labels_output(new, values, at_least_one=keep_one)
    else:
        remove_labels_output(new)
    set_metadata(new.ir, thresholds=[float(v) for v in np.asarray(values, np.float32)], calibration=summary)
    return new


def evaluate(scores: np.ndarray, y: np.ndarray, thresholds: Thresholds | np.ndarray | float, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """`metrics.summarize` at the given thresholds (with the Thresholds' at-least-one rule)."""
    keep_one = thresholds.at_least_one if isinstance(thresholds, Thresholds) else False
    values = thresholds.values if isinstance(thresholds, Thresholds) else thresholds
    pred = decide(scores, values, at_least_one=keep_one)
    return metrics.summarize(y, scores, values, list(labels) if labels else None, pred=pred)
