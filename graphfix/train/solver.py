"""Full-batch, preconditioned L-BFGS for a linear head on standardised features (NumPy, float64).

The problem, for each group g of output columns (see `graphfix.train.losses`):

    min  mean loss_g(Xs W + b) + lambda / 2 * ||W_g||^2,    Xs = (X - mu) / sd

with the bias unpenalised. lambda is one number, or one per output column (`--l2 per-class`). `X` is never standardised or copied whole: every pass streams it in
fixed-size row chunks (`CHUNK_ROWS`), and the standardisation is applied to the weights instead
(`X (W / sd) + (b - mu / sd . W)`), so the features may be an in-memory array or a memory-mapped
cache file. A fixed chunk size keeps the summation order, and so the result, independent of the
data's size in memory. The two matrix products of a pass run in `Problem.dtype`: float64 (a
float64 copy of each chunk) or float32 (the features as they are, about twice as fast; what the
cross-validation solves use, whose tolerance is 10x looser than float32's rounding of the
gradient); the loss, the sums over chunks and the solver's own state are always float64.

Solver (Nocedal & Wright, Numerical Optimization, 2nd ed., alg. 7.4 and 3.5):
1. One L-BFGS per group, vectorised across groups: own memory pairs, own step, own stopping test;
   converged groups leave the active set, so later passes only compute the remaining columns.
2. Initial inverse Hessian gamma * P with the preconditioner P = (c_j Cov + lambda I)^-1 for the
   weights of column j (Cov the standardised features' covariance, eigen-decomposed once; c_j the loss's
   curvature at the start) and 1 / c_j for the bias: the exact inverse Hessian of a quadratic
   model of the loss, so steps are well scaled for any feature scaling or correlation.
3. A weak-Wolfe line search per group (Armijo c1 = 1e-4, curvature c2 = 0.9): step 1 first,
   quadratic interpolation when the step is too long, doubling when it is too short.
4. Stops a group when max |gradient| <= `gtol` ("gtol"), when the relative decrease of its
   objective falls below 64 machine epsilons ("ftol"), when no step decreases it ("line search")
   or after `max_iter` iterations ("max_iter").
"""

from __future__ import annotations

__all__ = ["CHUNK_ROWS", "Standardization", "Problem", "SolveResult", "solve"]

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graphfix.train.losses import Loss

logger = logging.getLogger(__name__)

#: Rows per streamed pass chunk (fixed: results do not depend on memory size).
CHUNK_ROWS = 4096
_C1, _C2 = 1e-4, 0.9
_FTOL = 64 * np.finfo(np.float64).eps


def _chunks(n: int, rows: np.ndarray | None):
    for start in range(0, n if rows is None else len(rows), CHUNK_ROWS):
        if rows is None:
            yield slice(start, min(start + CHUNK_ROWS, n))
        else:
            yield rows[start : start + CHUNK_ROWS]


@dataclass
class Standardization:
    """Per-feature mean and scale, the constant features (scale 1, never weighted) and the
    eigenbasis of the other features' covariance in that scale.

    `scale` "per-feature": each feature's own std (the covariance becomes the correlation
    matrix); "global": one std for all the non-constant features (the root mean of their
    variances), which keeps the features' relative scales: an L2 penalty then shrinks
    low-variance features more, as on raw features (see `graphfix.train.head_fit`)."""

    mean: np.ndarray
    std: np.ndarray
    constant: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    scale: str = "per-feature"
    #: The non-constant features' covariance in raw units (for `with_scale`).
    cov: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def of(cls, x: np.ndarray, rows: np.ndarray | None = None, scale: str = "per-feature") -> "Standardization":
        """Statistics of `x` [n, F] (float64 accumulation, streamed)."""
        n_feat = x.shape[1]
        total = np.zeros(n_feat)
        gram = np.zeros((n_feat, n_feat))
        count = 0
        for part in _chunks(len(x), rows):
            xc = np.asarray(x[part], dtype=np.float64)
            total += xc.sum(axis=0)
            gram += xc.T @ xc
            count += len(xc)
        mean = total / max(count, 1)
        cov = gram / max(count, 1) - np.outer(mean, mean)
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        const = std <= 1e-6 * np.maximum(np.abs(mean), 1.0)
        keep = ~const
        cov = cov[np.ix_(keep, keep)]
        return cls._scaled(mean, const, (cov + cov.T) / 2, scale)

    def with_scale(self, scale: str) -> "Standardization":
        """The same statistics under `scale` ("per-feature" or "global"; no pass over the data)."""
        return self if scale == self.scale else Standardization._scaled(self.mean, self.constant, self.cov, scale)

    @classmethod
    def _scaled(cls, mean: np.ndarray, const: np.ndarray, cov: np.ndarray, scale: str) -> "Standardization":
        """The statistics under `scale`, from the non-constant features' covariance `cov` (raw units)."""
        if scale not in ("per-feature", "global"):
            raise ValueError(scale)
        keep = ~const
        own = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        std = np.ones_like(mean)
        std[keep] = own if scale == "per-feature" else float(np.sqrt(np.mean(own**2))) if keep.any() else 1.0
        eigvals, eigvecs = np.linalg.eigh(cov / np.outer(std[keep], std[keep]))
        return cls(mean=mean, std=std, constant=const, eigvals=np.clip(eigvals, 0.0, None), eigvecs=eigvecs,
                    scale=scale, cov=cov)


class Problem:
    """The regularised objective of a loss on rows of `x`, evaluated by streamed passes."""

    def __init__(self, x: np.ndarray, y: np.ndarray, loss: Loss, stats: Standardization,
                 rows: np.ndarray | None = None, dtype: type = np.float64) -> None:
        self.x, self.y, self.loss, self.stats = x, y, loss, stats
        self.dtype = np.dtype(dtype)
        self._eigvecs: np.ndarray | None = None
        self.rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        y_rows = y if self.rows is None else y[self.rows]
        self.group_denominators = loss.denominators(y_rows)
        self.curvature = loss.curvature(y_rows)
        self.initial_bias = loss.initial_bias(y_rows)
        self.passes = 0

    @property
    def n_features(self) -> int:
        return self.x.shape[1]

    def logits(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Logits of raw features `x` for standardised parameters theta [F+1, K]."""
        w_raw, b_raw = raw_parameters(theta, self.stats)
        return np.asarray(x, dtype=np.float64) @ w_raw + b_raw

    def value_grad(self, theta: np.ndarray, cols: np.ndarray, lam: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(objective per group [G] (0 for groups not in cols), gradient [F+1, len(cols)]).

        `theta` [F+1, len(cols)] holds the parameters of the columns `cols` (whole groups).
        """
        self.passes += 1
        mu, sd = self.stats.mean, self.stats.std
        w_raw, b_raw = raw_parameters(theta, self.stats)
        sums = np.zeros(self.loss.n_groups)
        g_raw = np.zeros((self.n_features, len(cols)))
        g_bias = np.zeros(len(cols))
        w_mat = w_raw.astype(self.dtype)
        for part in _chunks(len(self.x), self.rows):
            xc = np.asarray(self.x[part], dtype=self.dtype)
            z = xc @ w_mat + b_raw  # float64 (b_raw is)
            s, dz = self.loss.evaluate(z, self.y[part], cols)
            sums += s
            g_raw += xc.T @ dz.astype(self.dtype, copy=False)
            g_bias += dz.sum(axis=0)
        denom_cols = self.group_denominators[self.loss.groups[cols]]
        g_raw /= denom_cols
        g_bias /= denom_cols
        grad = np.empty((self.n_features + 1, len(cols)))
        w = theta[:-1]
        lam = _per_column(lam, cols)
        grad[:-1] = (g_raw - np.outer(mu, g_bias)) / sd[:, None] + lam * w
        grad[:-1][self.stats.constant] = (lam * w)[self.stats.constant]  # no information, only rounding
        grad[-1] = g_bias
        values = sums / self.group_denominators
        values += np.bincount(self.loss.groups[cols], lam / 2 * (w * w).sum(axis=0), self.loss.n_groups)
        return values, grad

    def precondition(self, q: np.ndarray, cols: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
        """P q: (c_j Cov + lambda I)^-1 on the weights, 1 / c_j on the bias, per column (the
        products in `dtype`: P is a metric, not a result, and float32 rounding only bends it)."""
        v, s, const = self.stats.eigvecs, self.stats.eigvals, self.stats.constant
        c = self.curvature[cols]
        lam = np.broadcast_to(_per_column(lam, cols), c.shape)[None, :]
        denom = c[None, :] * s[:, None] + lam
        floor = 1e-10 * c[None, :] * max(float(s.max(initial=0.0)), 1.0)
        out = np.empty_like(q)
        w = q[:-1]
        if self.dtype != v.dtype:  # the eigenbasis in the passes' precision (float32 for the CV solves)
            if self._eigvecs is None:
                self._eigvecs = v.astype(self.dtype)
            v = self._eigvecs
        scaled = (v.T @ w[~const].astype(v.dtype, copy=False)) / np.maximum(denom, floor).astype(v.dtype)
        out[:-1][~const] = v @ scaled
        out[:-1][const] = w[const] / np.maximum(lam, floor[:1])
        out[-1] = q[-1] / c
        return out

    def start(self) -> np.ndarray:
        """Zero weights, the loss's optimal bias."""
        theta = np.zeros((self.n_features + 1, self.loss.n_columns))
        theta[-1] = self.initial_bias
        return theta


def _per_column(lam: float | np.ndarray, cols: np.ndarray) -> float | np.ndarray:
    """lambda of the columns `cols` (a number stays a number)."""
    return lam[cols] if isinstance(lam, np.ndarray) else lam


def raw_parameters(theta: np.ndarray, stats: Standardization) -> tuple[np.ndarray, np.ndarray]:
    """(weight [F, K], bias [K]) on the raw features for standardised theta [F+1, K]."""
    w = theta[:-1] / stats.std[:, None]
    return w, theta[-1] - stats.mean @ w


@dataclass
class SolveResult:
    """The solution and how the solver got there (per group)."""

    theta: np.ndarray
    objective: np.ndarray
    grad_max: np.ndarray
    iterations: np.ndarray
    status: list[str]
    passes: int = 0

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for s in self.status:
            counts[s] = counts.get(s, 0) + 1
        return {
            "iterations": int(self.iterations.max()) if len(self.iterations) else 0,
            "iterations_mean": round(float(self.iterations.mean()), 2) if len(self.iterations) else 0.0,
            "grad_norm": float(self.grad_max.max()) if len(self.grad_max) else 0.0,
            "objective": float(self.objective.sum()),
            "stopped": counts,
            "data_passes": self.passes,
        }


@dataclass
class _Memory:
    size: int
    s: list[np.ndarray] = field(default_factory=list)
    y: list[np.ndarray] = field(default_factory=list)
    rho: list[np.ndarray] = field(default_factory=list)


def _group_sum(groups: np.ndarray, col_values: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(groups, col_values, n_groups)


def solve(problem: Problem, lam: float | np.ndarray, theta0: np.ndarray | None = None, *, gtol: float = 1e-6,
          max_iter: int = 1000, memory: int = 10) -> SolveResult:
    """Minimise the problem's objective at L2 strength `lam` (see module docstring)."""
    loss = problem.loss
    groups, n_groups = loss.groups, loss.n_groups
    theta = problem.start() if theta0 is None else np.array(theta0, dtype=np.float64)
    passes0 = problem.passes
    all_cols = np.arange(loss.n_columns)
    f, g = problem.value_grad(theta, all_cols, lam)
    grad = g
    iters = np.zeros(n_groups, dtype=np.int64)
    status = [""] * n_groups
    gmax = np.zeros(n_groups)
    np.maximum.at(gmax, groups, np.abs(grad).max(axis=0))
    active = gmax > gtol
    for j in np.flatnonzero(~active):
        status[j] = "gtol"
    mem = _Memory(memory)
    gamma = np.ones(n_groups)
    while active.any():
        cols = np.flatnonzero(active[groups])
        gcols = groups[cols]
        q = grad[:, cols].copy()
        alphas = []
        for s_i, y_i, rho_i in zip(reversed(mem.s), reversed(mem.y), reversed(mem.rho)):
            a = rho_i * _group_sum(gcols, (s_i[:, cols] * q).sum(axis=0), n_groups)
            q -= a[gcols] * y_i[:, cols]
            alphas.append(a)
        r = gamma[gcols] * problem.precondition(q, cols, lam)
        for s_i, y_i, rho_i, a in zip(mem.s, mem.y, mem.rho, reversed(alphas)):
            beta = rho_i * _group_sum(gcols, (y_i[:, cols] * r).sum(axis=0), n_groups)
            r += (a - beta)[gcols] * s_i[:, cols]
        d = -r
        dphi0 = _group_sum(gcols, (grad[:, cols] * d).sum(axis=0), n_groups)
        bad = active & ~(dphi0 < 0)
        if bad.any():  # not a descent direction (non-convex loss, rounding): steepest preconditioned
            bc = np.flatnonzero(bad[gcols])
            d[:, bc] = -problem.precondition(grad[:, cols[bc]], cols[bc], lam)
            dphi0 = _group_sum(gcols, (grad[:, cols] * d).sum(axis=0), n_groups)
        step, f_new, g_new, ok = _line_search(problem, lam, theta, cols, d, f, dphi0, active)
        moved = active & ok
        for j in np.flatnonzero(active & ~ok):
            status[j] = "line search"
        active &= ok
        mcols = np.flatnonzero(moved[groups])
        if len(mcols) == 0:
            break
        dfull = np.zeros_like(theta)
        dfull[:, cols] = d
        s_new = np.zeros_like(theta)
        s_new[:, mcols] = step[groups[mcols]] * dfull[:, mcols]
        y_new = np.zeros_like(theta)
        y_new[:, mcols] = g_new[:, mcols] - grad[:, mcols]
        theta[:, mcols] += s_new[:, mcols]
        f_old = f.copy()
        f[moved] = f_new[moved]
        grad[:, mcols] = g_new[:, mcols]
        iters[moved] += 1
        sy = _group_sum(groups, (s_new * y_new).sum(axis=0), n_groups)
        yy_p = _group_sum(groups[mcols], (y_new[:, mcols] * problem.precondition(y_new[:, mcols], mcols, lam)).sum(axis=0), n_groups)
        good = moved & (sy > 1e-12 * np.maximum(yy_p, 1e-300))
        rho = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        gamma = np.where(good, sy / np.where(good, yy_p, 1.0), gamma)
        mem.s.append(s_new)
        mem.y.append(y_new)
        mem.rho.append(rho)
        if len(mem.s) > mem.size:
            del mem.s[0], mem.y[0], mem.rho[0]
        gmax = np.zeros(n_groups)
        np.maximum.at(gmax, groups, np.abs(grad).max(axis=0))
        rel = (f_old - f) / np.maximum(np.maximum(np.abs(f_old), np.abs(f)), 1.0)
        for j in np.flatnonzero(moved):
            if gmax[j] <= gtol:
                status[j], active[j] = "gtol", False
            elif rel[j] <= _FTOL:
                status[j], active[j] = "ftol", False
            elif iters[j] >= max_iter:
                status[j], active[j] = "max_iter", False
    gmax = np.zeros(n_groups)
    np.maximum.at(gmax, groups, np.abs(grad).max(axis=0))
    return SolveResult(theta=theta, objective=f, grad_max=gmax, iterations=iters, status=status,
                       passes=problem.passes - passes0)


def _line_search(problem: Problem, lam: float, theta: np.ndarray, cols: np.ndarray, d: np.ndarray,
                 f0: np.ndarray, dphi0: np.ndarray, active: np.ndarray, max_trials: int = 40):
    """Weak-Wolfe steps per group: (step [G], f at step [G], gradient at step [F+1, K], found [G])."""
    groups, n_groups = problem.loss.groups, problem.loss.n_groups
    gcols = groups[cols]
    step = np.ones(n_groups)
    lo = np.zeros(n_groups)
    hi = np.full(n_groups, np.inf)
    f_at = f0.copy()
    g_at = np.zeros_like(theta)
    found = np.zeros(n_groups, bool)
    pending = active.copy()
    for _ in range(max_trials):
        if not pending.any():
            break
        sel = pending[gcols]
        pc = cols[sel]
        trial = theta[:, pc] + step[groups[pc]] * d[:, sel]
        f_t, g_t = problem.value_grad(trial, pc, lam)
        dphi = _group_sum(groups[pc], (g_t * d[:, sel]).sum(axis=0), n_groups)
        armijo = f_t <= f0 + _C1 * step * dphi0
        curv = dphi >= _C2 * dphi0
        accept = pending & armijo & curv
        if accept.any():
            acols = np.flatnonzero(accept[groups[pc]])
            g_at[:, pc[acols]] = g_t[:, acols]
            f_at[accept] = f_t[accept]
            found |= accept
        long = pending & ~armijo
        short = pending & armijo & ~curv
        # too long: shrink (quadratic fit through f0, dphi0, f(step) when lo == 0, else bisect)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            quad = -dphi0 * step**2 / (2.0 * (f_t - f0 - dphi0 * step))
        hi = np.where(long, step, hi)
        shrunk = np.where(lo == 0, np.clip(np.nan_to_num(quad, nan=0.5 * step), 0.1 * step, 0.5 * step), (lo + step) / 2)
        lo = np.where(short, step, lo)
        grown = np.where(np.isinf(hi), 2.0 * step, (step + hi) / 2)
        step = np.where(long, shrunk, np.where(short, grown, step))
        pending &= ~accept
        pending &= step > 1e-20
    return step, f_at, g_at, found
