"""Head training on frozen features: a converged, standardised, cross-validated linear fit.

`fit_head(x, y, cfg)` solves the regularised problem of `graphfix.train.solver` to
convergence (L-BFGS on the standardised features, stopping on the gradient norm) and returns
the weights on the *raw* features (the standardisation folded in), so the ONNX head stays one
Gemm on the backbone's output.

The L2 strength (`weight_decay`, lambda in mean loss + lambda / 2 ||w||^2; sklearn's C is
1 / (lambda n)) is chosen, unless given:
1. by k-fold cross-validation on the training set (default, `cv_folds` = 3): for each fold, a
   path over `LAMBDA_GRID` from strong to weak regularisation, each solve warm-started from the
   previous one, scored by the held-out fold's mAP (mean over classes with a positive in it) and
   averaged over folds; the path stops two grid steps after the best (the curve is unimodal in
   practice, and the weak end is the costly one). The final model is fitted on all the training
   rows at the best lambda, warm-started from the folds' mean solution.
2. with validation data, by the same path on all the training rows scored on that data.
The standardisation statistics come from all training rows (also for the folds). The CV solves
stop at `CV_GTOL`; the final one at `cfg.tol`. Everything is NumPy float64 with fixed chunking
and seeded folds: the same inputs give the same bits.
"""

from __future__ import annotations

__all__ = ["LAMBDA_GRID", "CV_GTOL", "TrainConfig", "HeadFit", "fit_head", "planned_solves"]

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from graphfix.metrics import mean_average_precision
from graphfix.train.losses import LOSSES, Loss, make_loss
from graphfix.train.solver import CHUNK_ROWS, Problem, Standardization, raw_parameters, solve
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Candidate L2 strengths, strong to weak (half decades from 1 to 1e-7).
LAMBDA_GRID = tuple(float(10.0 ** (-k / 2)) for k in range(15))
#: Gradient tolerance of the cross-validation solves (the final fit uses `TrainConfig.tol`).
CV_GTOL = 1e-5
#: Grid steps past the best before the path stops.
PATIENCE = 2
#: Weight decay when the training set is too small to cross-validate (< 2 x folds samples).
SMALL_SET_WEIGHT_DECAY = 1e-2


@dataclass
class TrainConfig:
    """Head-training settings (see `graphfix.train.train_head`)."""

    loss: str = "bce"
    weight_decay: float | str = "auto"
    pos_weight: str | None = None
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    count: bool = False
    cv_folds: int = 3
    tol: float = 1e-6
    max_iter: int = 1000
    seed: int = 0

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise GraphfixError(f"unknown loss {self.loss!r}", kind="usage", hint=f"choose from {', '.join(LOSSES)}")
        if self.pos_weight not in (None, "balanced"):
            raise GraphfixError(f"unknown pos_weight {self.pos_weight!r}", kind="usage", hint="None or 'balanced'")
        if self.pos_weight and self.loss != "bce":
            raise GraphfixError("pos_weight applies to the bce loss only", kind="usage")
        if self.count and self.loss != "softmax":
            raise GraphfixError("the label-count head goes with the softmax loss", kind="usage")
        if isinstance(self.weight_decay, str) and self.weight_decay != "auto":
            raise GraphfixError(f"weight decay {self.weight_decay!r}: a number or 'auto'", kind="usage")
        if not isinstance(self.weight_decay, str) and not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise GraphfixError("weight decay must be a number >= 0", kind="usage")
        if self.cv_folds < 2:
            raise GraphfixError("cross-validation needs at least 2 folds", kind="usage")
        if not self.tol > 0 or self.max_iter < 1:
            raise GraphfixError("tol must be > 0 and max_iter >= 1", kind="usage")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class HeadFit:
    """A trained head on raw features: weight [K, F], bias [K] (K = labels, + 1 with the count)."""

    weight: np.ndarray
    bias: np.ndarray
    history: dict[str, Any] = field(default_factory=dict)


def planned_solves(cfg: TrainConfig, n_rows: int, validation: bool) -> int:
    """The most solves `fit_head` makes (a progress bar's total; the path may stop earlier)."""
    if not isinstance(cfg.weight_decay, str):
        return 1
    if validation:
        return len(LAMBDA_GRID) + 1
    if n_rows < 2 * cfg.cv_folds:
        return 1
    return len(LAMBDA_GRID) * cfg.cv_folds + 1


def _loss_for(cfg: TrainConfig, y: np.ndarray) -> Loss:
    return make_loss(cfg.loss, y, pos_weight=cfg.pos_weight, asl_gamma_neg=cfg.asl_gamma_neg,
                     asl_gamma_pos=cfg.asl_gamma_pos, asl_clip=cfg.asl_clip, count=cfg.count)


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
        `objective`, `stopped`), `weight_decay`, `C`, `selected_by` and the whole `cv` curve.
    """
    cfg.validate()
    y = np.asarray(y)
    if len(x) != len(y) or len(x) == 0:
        raise GraphfixError(f"{len(x)} feature rows for {len(y)} target rows", kind="bad_input")
    stats = Standardization.of(x)
    loss = _loss_for(cfg, y)
    problem = Problem(x, y, loss, stats)
    history: dict[str, Any] = {"solver": "lbfgs", "standardized": True, "train_samples": int(len(x))}
    theta0 = None
    if not isinstance(cfg.weight_decay, str):
        lam = float(cfg.weight_decay)
        history.update(selected_by="fixed")
    elif x_val is not None and y_val is not None:
        lam, theta0, curve = _validation_path(problem, x_val, np.asarray(y_val), progress)
        history.update(selected_by="validation mAP", cv=curve)
    elif len(x) < 2 * cfg.cv_folds:
        lam = SMALL_SET_WEIGHT_DECAY
        history.update(selected_by=f"default ({len(x)} samples: too few for {cfg.cv_folds}-fold CV)")
        logger.warning("%d training samples: too few for %d-fold CV; weight decay %g", len(x), cfg.cv_folds, lam)
    else:
        lam, theta0, curve = _cv_path(x, y, cfg, stats, cfg.cv_folds, progress)
        history.update(selected_by=f"{cfg.cv_folds}-fold CV mAP", cv_folds=cfg.cv_folds, cv=curve)
    result = solve(problem, lam, theta0, gtol=cfg.tol, max_iter=cfg.max_iter)
    if progress is not None:
        progress.update(1)
    if not np.isfinite(result.theta).all():
        raise GraphfixError("training diverged (non-finite weights)", kind="failed", hint="set --weight-decay > 0")
    weight, bias = raw_parameters(result.theta, stats)
    history.update(weight_decay=lam, C=(1.0 / (lam * len(x)) if lam > 0 else None), **result.summary())
    history["converged"] = all(s in ("gtol", "ftol") for s in result.status)
    if not history["converged"]:
        logger.warning("head training stopped before convergence: %s", history["stopped"])
    if x_val is not None and y_val is not None:
        history["val_mAP"] = round(_map(np.asarray(y_val), _scores(problem, result.theta, x_val)), 6)
    return HeadFit(weight=weight.T.astype(np.float32), bias=bias.astype(np.float32), history=history)


def _path(problem: Problem, start: np.ndarray | None, score, progress: Any):
    """Solve along LAMBDA_GRID (warm-started), yielding (lambda, result, score)."""
    theta = start
    for lam in LAMBDA_GRID:
        res = solve(problem, lam, theta, gtol=CV_GTOL)
        theta = res.theta
        if progress is not None:
            progress.update(1)
        yield lam, res, score(res)


def _validation_path(problem: Problem, x_val: np.ndarray, y_val: np.ndarray, progress: Any):
    curve = []
    best = None
    for lam, res, value in _path(problem, None, lambda r: _map(y_val, _scores(problem, r.theta, x_val)), progress):
        curve.append({"weight_decay": lam, "mAP": round(value, 6), "iterations": int(res.iterations.max())})
        if best is None or value > best[0]:
            best = (value, lam, res.theta.copy(), len(curve))
        elif len(curve) - best[3] >= PATIENCE:
            break
    assert best is not None
    return best[1], best[2], curve


def _cv_path(x: np.ndarray, y: np.ndarray, cfg: TrainConfig, stats: Standardization, folds: int, progress: Any):
    order = np.random.default_rng(cfg.seed).permutation(len(x))
    parts = [np.sort(p) for p in np.array_split(order, folds)]
    problems, held = [], []
    for k in range(folds):
        train_rows = np.sort(np.concatenate([parts[i] for i in range(folds) if i != k]))
        problems.append(Problem(x, y, _loss_for(cfg, y[train_rows]), stats, rows=train_rows))
        held.append(parts[k])
    thetas: list[np.ndarray | None] = [None] * folds
    curve = []
    best = None
    for lam in LAMBDA_GRID:
        fold_scores, iters = [], []
        for k in range(folds):
            res = solve(problems[k], lam, thetas[k], gtol=CV_GTOL)
            thetas[k] = res.theta
            iters.append(int(res.iterations.max()))
            fold_scores.append(_map(y[held[k]], _scores(problems[k], res.theta, x, held[k])))
            if progress is not None:
                progress.update(1)
        value = float(np.mean(fold_scores))
        curve.append({"weight_decay": lam, "mAP": round(value, 6), "fold_mAP": [round(v, 6) for v in fold_scores],
                      "iterations": iters})
        logger.info("weight decay %g: CV mAP %.6f", lam, value)
        if best is None or value > best[0]:
            best = (value, lam, np.mean(thetas, axis=0), len(curve))
        elif len(curve) - best[3] >= PATIENCE:
            break
    assert best is not None
    return best[1], best[2], curve
