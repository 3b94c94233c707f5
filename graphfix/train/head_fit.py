"""Head training on frozen features: a converged, standardised, cross-validated linear fit.

`fit_head(x, y, cfg)` solves the regularised problem of `graphfix.train.solver` to
convergence (L-BFGS on the standardised features, stopping on the gradient norm) and returns
the weights on the *raw* features (the standardisation folded in), so the ONNX head stays one
Gemm on the backbone's output.

The loss and the L2 strength (`weight_decay`, lambda in mean loss + lambda / 2 ||w||^2;
sklearn's C is 1 / (lambda n)) are chosen together, unless given:
1. `loss="auto"` (default) compares the `CANDIDATES` (bce, bce with balanced positive weights,
   asl, softmax with 1/k targets, least squares), each on its own regularisation path, by the
   selection score (`cv_metric`: mAP, or macro-/micro-F1 with each class cut at its best-F1
   threshold), and keeps the first one in that order whose score is within one standard error
   of the top score (the folds' spread / sqrt(k); Hastie, Tibshirani & Friedman, ESL 7.10): a
   later loss replaces bce only when it wins by more than the folds' noise (with validation data,
   one split: the top score). A named loss is the only candidate.
2. Without validation data, by k-fold cross-validation on the training set (`cv_folds` = 3,
   multi-label stratified folds, `graphfix.train.folds`): per fold a path over `LAMBDA_GRID`
   from strong to weak regularisation, each solve warm-started from the previous one, scored on
   the held-out fold and averaged over folds (spread: the folds' standard deviation); the path
   stops two grid steps after the best (the curve is unimodal in practice, and the weak end is
   the costly one). The final model is fitted on all training rows at the best lambda,
   warm-started from the folds' mean solution; the out-of-fold scores at the chosen point are
   kept (`HeadFit.oof_scores`).
3. With validation data, by the same paths on all the training rows scored on that data.
4. With more training rows than `compare_rows` (5,000) and several candidates, the candidates
   are compared on a stratified subsample of about that many rows (`stratified_subsample`); only
   the winner's path then runs on all rows, and chooses its lambda there: from one grid step
   stronger than its best on the subsample, warm-started from the subsample's solution at that
   point (more rows seldom want more regularisation; when the first point is the best, the whole
   path runs). The comparison's cost then no longer grows with N (a close call between losses
   may go either way).
5. A least-squares head (loss "squared") is fitted to the 0/1 targets; its scores become
   probabilities by per-class Platt scaling (`losses.platt_fit`) on the out-of-fold scores at the
   chosen point (else on the validation scores, else on the training scores), folded into the
   head's weight and bias, so the head stays one Gemm + Sigmoid (`history["platt"]`).
The standardisation statistics come from all training rows (also for the folds). The CV solves
stop at `CV_GTOL` (scikit-learn's default tolerance) with float32 matrix products; the final one
at `cfg.tol` in float64. Fixed chunking and seeded folds: the same inputs give the same bits.
"""

from __future__ import annotations

__all__ = [
    "LAMBDA_GRID", "CV_GTOL", "CANDIDATES", "CV_METRICS", "SCALES", "TrainConfig", "HeadFit", "fit_head", "planned_solves",
    "cv_score", "oof_scores",
]

import logging
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from graphfix.metrics import average_precision, cut_counts, mean_average_precision
from graphfix.train.folds import fold_positives, stratified_folds, stratified_subsample
from graphfix.train.losses import LOSSES, Loss, make_loss, platt, platt_fit
from graphfix.train.solver import CHUNK_ROWS, Problem, Standardization, raw_parameters, solve
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Candidate L2 strengths, strong to weak (half decades from 10 to 1e-7; small sets of a few
#: hundred rows often want more than 1, and the strong end is cheap).
LAMBDA_GRID = tuple(float(10.0 ** (-k / 2)) for k in range(-2, 15))
#: Gradient tolerance of the cross-validation solves: scikit-learn's default for the same mean loss
#: (the final fit uses `TrainConfig.tol`).
CV_GTOL = 1e-4
#: Grid steps past the best before the path stops.
PATIENCE = 2
#: Weight decay when the training set is too small to cross-validate (< 2 x folds samples).
SMALL_SET_WEIGHT_DECAY = 1e-2
#: The losses `loss="auto"` compares, in tie-break order: (name, loss, pos_weight).
CANDIDATES = (("bce", "bce", None), ("bce-balanced", "bce", "balanced"), ("asl", "asl", None),
              ("softmax", "softmax", None), ("squared", "squared", None))
#: How the features are scaled before the L2 penalty (`Standardization`), the default first.
SCALES = ("per-feature", "global")
#: Selection scores: name -> how it is printed.
CV_METRICS = {"map": "mAP", "macro-f1": "macro-F1", "micro-f1": "micro-F1"}


@dataclass
class TrainConfig:
    """Head-training settings (see `graphfix.train.train_head`)."""

    loss: str = "auto"
    weight_decay: float | str = "auto"
    pos_weight: str | None = None
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    count: bool = False
    cv_folds: int = 3
    #: With several losses and more training rows than this, the losses are compared on a
    #: stratified subsample of about this many rows; only the winner's path runs on all rows (0: never).
    compare_rows: int = 5_000
    cv_metric: str = "map"
    l2: str = "shared"
    tol: float = 1e-6
    max_iter: int = 1000
    seed: int = 0
    #: With loss "auto": compare only the losses whose head is Sigmoid(logits) (what write-back
    #: to MXNet and Caffe can hold), not softmax.
    sigmoid_only: bool = False
    #: The features' scale: "per-feature" std, "global" (one std for all), or "auto" (chosen by
    #: the squared loss's CV path under each, when the L2 strength or the loss is chosen).
    standardize: str = "auto"

    def validate(self) -> None:
        if self.loss not in LOSSES + ("auto",):
            raise GraphfixError(f"unknown loss {self.loss!r}", kind="usage", hint=f"choose from auto, {', '.join(LOSSES)}")
        if self.pos_weight not in (None, "balanced"):
            raise GraphfixError(f"unknown pos_weight {self.pos_weight!r}", kind="usage", hint="None or 'balanced'")
        if self.pos_weight and self.loss not in ("bce", "auto"):
            raise GraphfixError("pos_weight applies to the bce loss only", kind="usage")
        if self.count and self.loss not in ("softmax", "auto"):
            raise GraphfixError("the label-count head goes with the softmax loss", kind="usage")
        if self.l2 not in ("shared", "per-class"):
            raise GraphfixError(f"unknown l2 {self.l2!r}", kind="usage", hint="shared | per-class")
        if self.standardize not in SCALES + ("auto",):
            raise GraphfixError(f"unknown standardize {self.standardize!r}", kind="usage", hint="auto | " + " | ".join(SCALES))
        if self.cv_metric not in CV_METRICS:
            raise GraphfixError(f"unknown cv metric {self.cv_metric!r}", kind="usage", hint=" | ".join(CV_METRICS))
        if isinstance(self.weight_decay, str) and self.weight_decay != "auto":
            raise GraphfixError(f"weight decay {self.weight_decay!r}: a number or 'auto'", kind="usage")
        if not isinstance(self.weight_decay, str) and not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise GraphfixError("weight decay must be a number >= 0", kind="usage")
        if self.compare_rows < 0:
            raise GraphfixError("compare_rows must be >= 0", kind="usage")
        if self.cv_folds < 2:
            raise GraphfixError("cross-validation needs at least 2 folds", kind="usage")
        if not self.tol > 0 or self.max_iter < 1:
            raise GraphfixError("tol must be > 0 and max_iter >= 1", kind="usage")

    def candidates(self) -> list[tuple[str, str, str | None]]:
        """The (name, loss, pos_weight) candidates this config compares (one unless loss is auto)."""
        if self.pos_weight:  # --pos-weight names the loss: bce
            return [("bce-balanced", "bce", self.pos_weight)]
        if self.loss != "auto":
            return [(self.loss, self.loss, None)]
        return [c for c in CANDIDATES if not (self.sigmoid_only and c[1] == "softmax")]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeadFit:
    """A trained head on raw features: weight [K, F], bias [K] (K = labels, + 1 with the count).

    `oof_scores` [N, L] are the out-of-fold CV scores at the chosen loss and lambda (None
    without cross-validation).
    """

    weight: np.ndarray
    bias: np.ndarray
    history: dict[str, Any] = field(default_factory=dict)
    oof_scores: np.ndarray | None = None


def planned_solves(cfg: TrainConfig, n_rows: int, validation: bool) -> int:
    """The most solves `fit_head` makes (a progress bar's total; the paths may stop earlier)."""
    n_cand = len(cfg.candidates())
    grid = len(LAMBDA_GRID) if isinstance(cfg.weight_decay, str) else 1
    if grid == 1 and n_cand == 1:
        return 1
    if not validation and n_rows < 2 * cfg.cv_folds:
        return 1
    per_path = grid * (1 if validation else cfg.cv_folds)
    again = per_path if n_cand > 1 and 0 < cfg.compare_rows < n_rows else 0  # the winner's path on all rows
    probe = len(SCALES) * per_path if cfg.standardize == "auto" else 0  # the squared path under each scale
    return probe + n_cand * per_path + again + 1


def _make(cfg: TrainConfig, y: np.ndarray, loss: str, pos_weight: str | None) -> Loss:
    return make_loss(loss, y, pos_weight=pos_weight, asl_gamma_neg=cfg.asl_gamma_neg, asl_gamma_pos=cfg.asl_gamma_pos,
                     asl_clip=cfg.asl_clip, count=cfg.count and loss == "softmax")


def _scores(problem: Problem, theta: np.ndarray, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Class scores [n, L] for rows of `x` (streamed)."""
    n = len(x) if rows is None else len(rows)
    out = np.empty((n, problem.y.shape[1]), np.float64)
    for start in range(0, n, CHUNK_ROWS):
        part = slice(start, min(start + CHUNK_ROWS, n)) if rows is None else rows[start : start + CHUNK_ROWS]
        out[start : start + CHUNK_ROWS] = problem.loss.activate(problem.logits(theta, x[part]))
    return out


def _map(y: np.ndarray, scores: np.ndarray) -> float:
    value = mean_average_precision(y, scores)
    return -math.inf if math.isnan(value) else float(value)


def _best_f1_counts(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn, has_positive) per class at the cut that maximises the class's F1."""
    y = np.asarray(y) != 0
    n_cls = y.shape[1]
    tp, fp, fn = np.zeros(n_cls), np.zeros(n_cls), np.zeros(n_cls)
    has = y.any(axis=0)
    for j in np.flatnonzero(has):
        ctp, k, pos, _ = cut_counts(y[:, j], scores[:, j])
        b = int(np.argmax(2.0 * ctp / (k + pos)))
        tp[j], fp[j], fn[j] = ctp[b], k[b] - ctp[b], pos - ctp[b]
    return tp, fp, fn, has


def cv_score(metric: str, y: np.ndarray, scores: np.ndarray) -> float:
    """The selection score of `scores` [n, L] on `y`: mAP, or macro/micro F1 with each class cut
    at its best-F1 threshold on these rows, over the classes with a positive (-inf if none)."""
    if metric == "map":
        return _map(y, scores)
    tp, fp, fn, has = _best_f1_counts(y, scores)
    if not has.any():
        return -math.inf
    if metric == "macro-f1":
        return float(np.mean(2 * tp[has] / (2 * tp[has] + fp[has] + fn[has])))
    return float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))


def fit_head(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    *,
    progress: Any = None,
) -> HeadFit:
    """Train the head on features `x` [N, F] (float32, may be memory-mapped) for targets `y` [N, L].

    Args:
        progress: An object with `update(n)` (a tqdm bar), advanced once per solve.

    Returns:
        A `HeadFit`; its history holds the solver report (`iterations`, `grad_norm`,
        `objective`, `stopped`), the chosen `loss` (and `pos_weight`, `candidate`),
        `weight_decay`, `C`, `selected_by`, the chosen candidate's `cv` curve and, when losses
        were compared, every candidate's row and curve in `losses`.
    """
    cfg.validate()
    y = np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise GraphfixError(f"{len(x)} feature rows for {len(y)} target rows", kind="bad_input")
    candidates = cfg.candidates()
    grid = LAMBDA_GRID if isinstance(cfg.weight_decay, str) else (float(cfg.weight_decay),)
    metric = CV_METRICS[cfg.cv_metric]
    history: dict[str, Any] = {"solver": "lbfgs", "train_samples": int(len(x)), "cv_metric": cfg.cv_metric}
    theta0, oof, chosen, table, per_class, stats = None, None, candidates[0], None, None, None
    validation = x_val is not None and y_val is not None
    scale = "per-feature" if cfg.standardize == "auto" else cfg.standardize
    if len(grid) == 1 and len(candidates) == 1:
        lam = grid[0]
        history.update(selected_by="fixed")
    elif not validation and len(x) < 2 * cfg.cv_folds:
        chosen = candidates[0]
        lam = SMALL_SET_WEIGHT_DECAY if isinstance(cfg.weight_decay, str) else grid[0]
        history.update(selected_by=f"default ({len(x)} samples: too few for {cfg.cv_folds}-fold CV)")
        logger.warning("%d training samples: too few for %d-fold CV; loss %s, weight decay %g", len(x), cfg.cv_folds,
                       chosen[0], lam)
    else:
        if validation:
            y_val = np.asarray(y_val)
            splits_of = lambda rows: [(rows, x_val, None, y_val)]  # noqa: E731
        else:
            splits_of = lambda rows: _cv_splits(x, y, cfg, rows)  # noqa: E731
        sub = stratified_subsample(y, cfg.compare_rows, cfg.seed) if 0 < cfg.compare_rows < len(x) else None
        stats = Standardization.of(x, scale=scale)
        if cfg.standardize == "auto":
            scale, history["scale_choice"] = _choose_scale(x, y, cfg, stats, grid, splits_of(sub), progress)
            if sub is not None:
                history["scale_choice"]["compared_on"] = {"rows": int(len(sub)), "of": int(len(x))}
            stats = stats.with_scale(scale)
        if len(candidates) > 1 and sub is not None:
            # many rows: compare the losses on a stratified subsample, then only the winner's path on all rows
            best, table = _select(x, y, cfg, stats, candidates, grid, splits_of(sub), progress)
            history["compared_on"] = {"rows": int(len(sub)), "of": int(len(x)), "method": "stratified subsample"}
            # its path on all rows starts one step stronger than its best on the subsample, from the
            # subsample's solution there; if the best is that first point, the whole path runs
            start = max(0, best["point"] - 2)
            winner, warm = [best["candidate"]], best["thetas"][start]
            best, _ = _select(x, y, cfg, stats, winner, grid[start:], splits_of(None), progress, warm)
            if start > 0 and best["point"] == 1:
                best, _ = _select(x, y, cfg, stats, winner, grid, splits_of(None), progress)
        else:
            best, table = _select(x, y, cfg, stats, candidates, grid, splits_of(None), progress)
        chosen, lam, theta0, oof = best["candidate"], best["weight_decay"], best["theta"], best["oof"]
        per_class = best.get("per_class")
        if validation:
            history.update(selected_by=f"validation {metric}", cv=best["curve"])
        else:
            folds = stratified_folds(y, cfg.cv_folds, cfg.seed)
            per_fold = fold_positives(y, folds)
            short = [int(j) for j in np.flatnonzero(y.sum(axis=0) < cfg.cv_folds)]
            history.update(selected_by=f"{cfg.cv_folds}-fold CV {metric}", cv_folds=cfg.cv_folds, cv=best["curve"],
                           folds={"method": "iterative stratification", "rows": [len(f) for f in folds],
                                  "min_positives_per_fold": [int(v) for v in per_fold.min(axis=0)],
                                  "labels_with_fewer_positives_than_folds": short})
    if table is not None and len(candidates) > 1:
        history["losses"] = table
    if stats is None:  # nothing was chosen: the named (or default) scale
        stats = Standardization.of(x, scale=scale)
    history["standardize"] = scale
    name, loss_name, pos_weight = chosen
    history.update(loss=loss_name, pos_weight=pos_weight, candidate=name)
    problem = Problem(x, y, _make(cfg, y, loss_name, pos_weight), stats)
    final_lam: float | np.ndarray = lam
    if per_class is not None:
        final_lam = np.array(per_class["weight_decay"])
        history["l2"] = per_class
    elif cfg.l2 == "per-class":
        history["l2"] = {"shared": "softmax couples the classes" if loss_name == "softmax" else "no CV"}
    result = solve(problem, final_lam, theta0, gtol=cfg.tol, max_iter=cfg.max_iter)
    if progress is not None:
        progress.update(1)
    if not np.isfinite(result.theta).all():
        raise GraphfixError("training diverged (non-finite weights)", kind="failed", hint="set --weight-decay > 0")
    weight, bias = raw_parameters(result.theta, stats)
    if loss_name == "squared":  # least-squares scores -> probabilities: Platt scaling per class
        if oof is not None:
            on, s, y_s = "out-of-fold", oof, y
        elif validation:
            on, s, y_s = "validation", _scores(problem, result.theta, x_val), np.asarray(y_val)
        else:
            on, s, y_s = "training", _scores(problem, result.theta, x), y
        a, c = platt_fit(s, y_s)
        weight, bias = weight * a, bias * a + c
        if oof is not None:
            oof = platt(oof, a, c).astype(np.float32)
        history["platt"] = {"fitted_on": on, "a": [float(v) for v in a], "c": [float(v) for v in c]}
    history.update(weight_decay=lam, C=(1.0 / (lam * len(x)) if lam > 0 else None), **result.summary())
    history["converged"] = all(s in ("gtol", "ftol") for s in result.status)
    if not history["converged"]:
        logger.warning("head training stopped before convergence: %s", history["stopped"])
    if validation:
        history["val_mAP"] = round(_map(np.asarray(y_val), _scores(problem, result.theta, x_val)), 6)
    return HeadFit(weight=weight.T.astype(np.float32), bias=bias.astype(np.float32), history=history, oof_scores=oof)


def _cv_splits(x, y, cfg: TrainConfig, rows: np.ndarray | None) -> list[tuple]:
    """The CV splits (train rows, eval features, eval rows, eval targets) of `rows` (None: all)."""
    y_rows = y if rows is None else y[rows]
    folds = stratified_folds(y_rows, cfg.cv_folds, cfg.seed)
    if rows is not None:
        folds = [rows[f] for f in folds]
    splits = []
    for k, held in enumerate(folds):
        train_rows = np.sort(np.concatenate([f for i, f in enumerate(folds) if i != k]))
        splits.append((train_rows, x, held, y[held]))
    return splits


def oof_scores(x: np.ndarray, y: np.ndarray, cfg: TrainConfig, weight_decay: float | np.ndarray) -> np.ndarray:
    """Out-of-fold scores [N, L] of one loss (`cfg.loss`, not auto) at `weight_decay` (one lambda,
    or one per class): the CV folds of `fit_head` (same seed and k), each fold's head solved on the
    other folds as the CV does (float32 passes, `CV_GTOL`) and scored on its own rows."""
    cfg.validate()
    y = np.asarray(y)
    if cfg.loss == "auto" or len(x) != len(y) or len(x) < 2 * cfg.cv_folds:
        raise GraphfixError(f"out-of-fold scores need one loss and at least {2 * cfg.cv_folds} rows", kind="usage")
    _, loss_name, pos_weight = cfg.candidates()[0]
    stats = Standardization.of(x, scale="per-feature" if cfg.standardize == "auto" else cfg.standardize)
    out = np.zeros(y.shape, np.float32)
    for train_rows, _, held, _ in _cv_splits(x, y, cfg, None):
        problem = Problem(x, y, _make(cfg, y[train_rows], loss_name, pos_weight), stats, rows=train_rows,
                          dtype=np.float32)
        out[held] = _scores(problem, solve(problem, weight_decay, gtol=CV_GTOL).theta, x, held)
    return out


def _choose_scale(x, y, cfg: TrainConfig, stats: Standardization, grid, splits, progress) -> tuple[str, dict[str, Any]]:
    """`standardize="auto"`: the squared loss's path (cheap: its solves take one or two
    iterations) on `splits` under each of `SCALES`; a later scale replaces the default
    per-feature one only when its score beats it by more than one standard error (as the loss
    choice). (The chosen scale, its record for the history.)"""
    probe = replace(cfg, l2="shared")
    rows = {}
    for scale in SCALES:
        r = _path(x, y, probe, stats.with_scale(scale), ("squared", "squared", None), grid, splits, progress)
        rows[scale] = {"score": round(r["score"], 6), "spread": round(r["spread"], 6), "weight_decay": r["weight_decay"]}
    base = rows[SCALES[0]]
    margin = base["spread"] / math.sqrt(len(splits))
    chosen = next((sc for sc in SCALES[1:] if rows[sc]["score"] > base["score"] + margin), SCALES[0])
    for scale, row in rows.items():
        logger.info("scale %s: squared loss CV %s %.4f +- %.4f", scale, cfg.cv_metric, row["score"], row["spread"])
    return chosen, {"chosen": chosen, "by": "squared loss", "scales": rows}


def _select(x, y, cfg: TrainConfig, stats: Standardization, candidates, grid, splits, progress, theta0=None):
    """Every candidate's path over `grid` on `splits`; (the best candidate's path result, the table)."""
    results = [_path(x, y, cfg, stats, cand, grid, splits, progress, theta0) for cand in candidates]
    top = results[0]
    for r in results[1:]:
        if r["score"] > top["score"]:
            top = r
    # the one-standard-error rule: the first candidate within one standard error of the top score
    margin = top["spread"] / math.sqrt(len(splits))
    best = next(r for r in results if r["score"] >= top["score"] - margin)
    table = [{"loss": r["candidate"][0], "weight_decay": r["weight_decay"], "score": round(r["score"], 6),
              "spread": round(r["spread"], 6), "chosen": r is best, "curve": r["curve"]} for r in results]
    for row in table:
        logger.info("loss %s: lambda %g, CV %s %.4f +- %.4f", row["loss"], row["weight_decay"], cfg.cv_metric,
                    row["score"], row["spread"])
    return best, table


def _path(x, y, cfg: TrainConfig, stats: Standardization, cand, grid, splits, progress,
          theta0: np.ndarray | None = None) -> dict[str, Any]:
    """One candidate's regularisation path: warm-started solves over `grid` on each split
    (train rows, eval features, eval rows, eval targets; the first from `theta0` if given),
    scored by `cfg.cv_metric`; stops PATIENCE steps after the best. The result keeps each
    point's mean solution over the splits (`thetas`)."""
    _, loss_name, pos_weight = cand
    problems = []
    for train_rows, _, _, _ in splits:
        y_fit = y if train_rows is None else y[train_rows]
        problems.append(Problem(x, y, _make(cfg, y_fit, loss_name, pos_weight), stats, rows=train_rows,
                                dtype=np.float32))
    thetas: list[np.ndarray | None] = [theta0] * len(splits)
    means: list[np.ndarray] = []
    oof = np.zeros(y.shape, np.float32) if splits[0][2] is not None and len(splits) > 1 else None
    by_class = cfg.l2 == "per-class" and loss_name != "softmax"  # softmax couples its classes: shared
    class_stats: list[list[np.ndarray]] = []  # [point][split] per-class score terms
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for lam in grid:
        fold_scores, iters = [], []
        class_stats.append([])
        for k, (_, x_eval, rows_eval, y_eval) in enumerate(splits):
            res = solve(problems[k], lam, thetas[k], gtol=CV_GTOL)
            thetas[k] = res.theta
            iters.append(int(res.iterations.max()))
            s = _scores(problems[k], res.theta, x_eval, rows_eval)
            if oof is not None:
                oof[rows_eval] = s
            fold_scores.append(cv_score(cfg.cv_metric, y_eval, s))
            if by_class:
                class_stats[-1].append(_class_terms(cfg.cv_metric, y_eval, s))
            if progress is not None:
                progress.update(1)
        value = float(np.mean(fold_scores))
        spread = float(np.std(fold_scores))
        means.append(np.mean(thetas, axis=0))
        curve.append({"weight_decay": lam, "score": round(value, 6), "fold_scores": [round(v, 6) for v in fold_scores],
                      "iterations": iters})
        logger.info("loss %s, weight decay %g: %s %.6f", cand[0], lam, cfg.cv_metric, value)
        if best is None or value > best["score"]:
            best = {"candidate": cand, "weight_decay": lam, "score": value, "spread": spread,
                    "theta": means[-1], "oof": None if oof is None else oof.copy(), "point": len(curve)}
        elif len(curve) - best["point"] >= PATIENCE:
            break
    assert best is not None
    best["curve"], best["thetas"] = curve, means
    if by_class:
        _choose_per_class(best, cfg.cv_metric, grid, class_stats, [y_eval for _, _, _, y_eval in splits])
    return best


def _class_terms(metric: str, y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per-class terms of the selection score: AP [1, L] (NaN: no positive), or tp, fp, fn [3, L]."""
    if metric == "map":
        return average_precision(y, scores)[None]
    tp, fp, fn, has = _best_f1_counts(y, scores)
    return np.stack([np.where(has, tp, np.nan), fp, fn])


def _fold_score(metric: str, terms: np.ndarray) -> float:
    """`cv_score` from per-class terms (classes with a NaN first row have no positive)."""
    has = ~np.isnan(terms[0])
    if not has.any():
        return -math.inf
    if metric == "map":
        return float(terms[0, has].mean())
    tp, fp, fn = terms[0, has], terms[1, has], terms[2, has]
    if metric == "macro-f1":
        return float(np.mean(2 * tp / (2 * tp + fp + fn)))
    return float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))


def _choose_per_class(best: dict[str, Any], metric: str, grid, class_stats: list[list[np.ndarray]],
                      y_evals: list[np.ndarray]) -> None:
    """`--l2 per-class`: each label's lambda is the path point with its best mean score over the
    splits; a label with no positive in some split keeps the shared lambda. The candidate's score
    becomes the splits' mean score with those lambdas (chosen on the same splits: optimistic)."""
    terms = np.array(class_stats)  # [points, splits, rows, L]
    n_points = terms.shape[0]
    shared = best["point"] - 1
    present = np.stack([np.asarray(ye).any(axis=0) for ye in y_evals])  # [splits, L]
    everywhere = present.all(axis=0)
    if metric == "map":
        per = terms[:, :, 0].mean(axis=1)  # [points, L]
    else:
        tp, fp, fn = terms[:, :, 0], terms[:, :, 1], terms[:, :, 2]
        per = np.nanmean(2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), axis=1)
    idx = np.full(per.shape[1], shared)
    for j in np.flatnonzero(everywhere):
        idx[j] = int(np.nanargmax(per[:, j]))
    picked = terms[idx, :, :, np.arange(per.shape[1])]  # [L, splits, rows]
    fold_scores = [_fold_score(metric, picked[:, k, :].T) for k in range(terms.shape[1])]
    best["score"], best["spread"] = float(np.mean(fold_scores)), float(np.std(fold_scores))
    best["per_class"] = {"weight_decay": [float(grid[i]) for i in idx],
                         "shared": [int(j) for j in np.flatnonzero(~everywhere)],
                         "points": n_points, "score": round(best["score"], 6)}
