"""Head-training losses in NumPy (float64): value and gradient with respect to the logits.

Each loss maps logits `z` [n, K] and targets `y` [n, L] to per-group row sums and `dL/dz`.
A *group* is a set of output columns whose loss is coupled; groups are solved independently
(their own L-BFGS memory, line search and stopping test) by `graphfix.train.solver`.

1. `SigmoidLoss("bce")`: binary cross-entropy on logits, one group per class;
   `pos_weight` [L] weights the positives (class-balanced: negatives / positives).
2. `SigmoidLoss("asl")`: asymmetric loss (Ben-Baruch, Ridnik et al., ICCV 2021):
   L+ = -(1-p)^g+ log p, L- = -p_m^g- log(1-p_m), p_m = max(p - clip, 0); one group per class.
   Not convex for g- > 0: the solver stops at a stationary point.
3. `SquaredLoss`: least squares on the 0/1 targets, 1/2 (z - y)^2, one group per class (a
   ridge-regression probe; its fitted values are scores, not probabilities: `platt` maps them to
   probabilities by per-class Platt scaling, fitted after the solve by `graphfix.train.head_fit`).
   Its Hessian is the features' covariance, which the solver's preconditioner inverts exactly, so a
   solve takes one or two iterations.
4. `SoftmaxCountLoss`: softmax cross-entropy against 1/k targets over rows with k >= 1 labels
   (Mahajan et al., ECCV 2018), one group over the L class columns; with `count=True` one more
   column, a Poisson regression of k (log link: `label_count = exp(z)`), its own group.

Every loss is a mean over the rows it covers (`denominators`), so one L2 strength means the same
on any data-set size: objective = mean loss + lambda / 2 * ||w||^2 (sklearn: lambda = 1 / (C n)).
Logs are computed from the logits (softplus), never from clipped probabilities.
"""

from __future__ import annotations

__all__ = ["LOSSES", "Loss", "PerClassLoss", "SigmoidLoss", "SquaredLoss", "SoftmaxCountLoss", "make_loss", "platt", "platt_fit"]

import numpy as np

#: Loss names accepted by `train_head`.
LOSSES = ("bce", "asl", "squared", "softmax")


def _softplus_sigmoid(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log(1 + exp(z)), 1 / (1 + exp(-z))), stable for any z, with one exp and one log."""
    e = np.exp(-np.abs(z))
    softplus = np.maximum(z, 0.0) + np.log(1.0 + e)
    inv = 1.0 / (1.0 + e)
    return softplus, np.where(z >= 0, inv, e * inv)


def _power(a: np.ndarray, e: float) -> np.ndarray:
    """a ** e, by repeated products for a small whole e (ASL's gamma 4: 2-6x faster than pow)."""
    if e == int(e) and 1 <= e <= 8:
        out = a
        for _ in range(int(e) - 1):
            out = out * a
        return out
    return a**e


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return _softplus_sigmoid(z)[1]


class Loss:
    """Interface of a head loss (see module docstring)."""

    #: Output columns of the head the loss trains (L, or L + 1 with the count column).
    n_columns: int
    #: Group index of each column, [n_columns] ints in 0..n_groups-1.
    groups: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.groups.max()) + 1

    def denominators(self, y: np.ndarray) -> np.ndarray:
        """Rows each group's mean runs over, [n_groups] float (at least 1)."""
        raise NotImplementedError

    def evaluate(self, z: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per-group row sums of the loss [n_groups], dLoss/dz [n, len(cols)]) for logits of `cols`.

        `cols` always holds whole groups; groups not in `cols` get 0.
        """
        raise NotImplementedError

    def initial_bias(self, y: np.ndarray) -> np.ndarray:
        """The optimal bias with zero weights (or a close start), [n_columns]."""
        raise NotImplementedError

    def curvature(self, y: np.ndarray) -> np.ndarray:
        """Mean second derivative of the loss at the start, per column (for the preconditioner)."""
        raise NotImplementedError

    def activate(self, z: np.ndarray) -> np.ndarray:
        """Scores (probabilities) of the L class columns."""
        raise NotImplementedError


class PerClassLoss(Loss):
    """A loss of independent classes: one group per column, each a mean over all the rows."""

    def __init__(self, n_labels: int) -> None:
        self.n_columns = n_labels
        self.groups = np.arange(n_labels)

    def denominators(self, y: np.ndarray) -> np.ndarray:
        return np.full(self.n_columns, float(max(len(y), 1)))

    def evaluate(self, z: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        loss, dz = self._elementwise(z, y[:, cols].astype(np.float64), cols)
        sums = np.zeros(self.n_columns)
        sums[cols] = loss.sum(axis=0)
        return sums, dz

    def _elementwise(self, z: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(loss, dLoss/dz), both [n, len(cols)], for logits z and float targets y of `cols`."""
        raise NotImplementedError


class SigmoidLoss(PerClassLoss):
    """BCE (optionally positive-weighted) or ASL, one independent group per class."""

    def __init__(self, n_labels: int, kind: str = "bce", *, pos_weight: np.ndarray | None = None,
                 gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05) -> None:
        if kind not in ("bce", "asl"):
            raise ValueError(kind)
        super().__init__(n_labels)
        self.kind = kind
        self.pos_weight = None if pos_weight is None else np.asarray(pos_weight, np.float64)
        self.gamma_neg, self.gamma_pos, self.clip = float(gamma_neg), float(gamma_pos), float(clip)

    def _elementwise(self, z: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "bce":
            return self._bce(z, y, None if self.pos_weight is None else self.pos_weight[cols])
        return self._asl(z, y)

    @staticmethod
    def _bce(z: np.ndarray, y: np.ndarray, pw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        softplus, p = _softplus_sigmoid(z)
        wpos = y if pw is None else y * pw
        both = wpos + 1.0 - y
        return both * softplus - wpos * z, both * p - wpos

    def _asl(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        softplus, p = _softplus_sigmoid(z)
        gp, gn, clip = self.gamma_pos, self.gamma_neg, self.clip
        log_p = z - softplus
        q = 1.0 - p
        # positives: -(1-p)^g+ log p ; d/dz = g+ p (1-p)^g+ log p - (1-p)^(g+ + 1)
        qg = _power(q, gp) if gp else np.ones_like(q)
        loss_pos = -qg * log_p
        d_pos = gp * p * qg * log_p - qg * q
        # negatives: -p_m^g- log(1-p_m), p_m = max(p - clip, 0)
        if clip > 0:
            pm = np.maximum(p - clip, 0.0)
            log_1m = np.log(1.0 - pm)
            active = p > clip
        else:
            pm = p
            log_1m = -softplus
            active = np.ones(p.shape, bool)
        pmg = _power(pm, gn) if gn else np.ones_like(pm)
        loss_neg = -pmg * log_1m
        # d/dp = -g- p_m^(g- - 1) log(1-p_m) + p_m^g- / (1-p_m); times dp/dz = p(1-p)
        dpm = 0.0
        if gn:
            with np.errstate(divide="ignore", invalid="ignore"):
                dpm = np.where(pm > 0, gn * (_power(pm, gn - 1) if gn > 1 else pm ** (gn - 1)), 0.0)
        d_neg_dp = -dpm * log_1m + pmg / (1.0 - pm)
        d_neg = np.where(active, d_neg_dp * p * q, 0.0)
        loss = y * loss_pos + (1.0 - y) * loss_neg
        dz = y * d_pos + (1.0 - y) * d_neg
        return loss, dz

    def initial_bias(self, y: np.ndarray) -> np.ndarray:
        prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
        if self.pos_weight is not None and self.kind == "bce":
            prior = self.pos_weight * prior / (self.pos_weight * prior + 1.0 - prior)
        return np.log(prior / (1.0 - prior))

    def curvature(self, y: np.ndarray) -> np.ndarray:
        prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
        p0 = _sigmoid(self.initial_bias(y))
        rows = 1.0 if self.pos_weight is None or self.kind != "bce" else self.pos_weight * prior + 1.0 - prior
        return np.maximum(rows * p0 * (1.0 - p0), 1e-6)

    def activate(self, z: np.ndarray) -> np.ndarray:
        return _sigmoid(z)


class SquaredLoss(PerClassLoss):
    """1/2 (z - y)^2 per class: one independent group per class, curvature 1."""

    def _elementwise(self, z: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dz = z - y
        return 0.5 * dz * dz, dz

    def initial_bias(self, y: np.ndarray) -> np.ndarray:
        return y.mean(axis=0).astype(np.float64) if len(y) else np.zeros(self.n_columns)

    def curvature(self, y: np.ndarray) -> np.ndarray:
        return np.ones(self.n_columns)

    def activate(self, z: np.ndarray) -> np.ndarray:
        return z  # scores; `platt` makes them probabilities


def platt_fit(scores: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Per-class Platt scaling: (a [L], c [L]) with sigmoid(a s + c) fitted to the targets by
    Newton's method on the cross-entropy, with Platt's smoothed targets ((n+ + 1) / (n+ + 2) for
    a positive, 1 / (n- + 2) for a negative; Lin, Lin & Weng 2007), so separable scores still give
    a finite slope. A class with one kind of target gets a = 0 and its smoothed prior."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(y) != 0
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = len(y) - n_pos
    t = np.where(y, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a = np.zeros(s.shape[1])
    prior = t.mean(axis=0)
    c = np.log(prior / (1 - prior))
    both = (n_pos > 0) & (n_neg > 0)
    for _ in range(iterations):
        p = _sigmoid(a * s + c)
        r, w = p - t, np.maximum(p * (1 - p), 1e-12)
        ga, gc = (r * s).sum(axis=0), r.sum(axis=0)
        haa, hac, hcc = (w * s * s).sum(axis=0), (w * s).sum(axis=0), w.sum(axis=0)
        det = np.maximum(haa * hcc - hac * hac, 1e-300)
        da = np.where(both, (hcc * ga - hac * gc) / det, 0.0)
        dc = np.where(both, (haa * gc - hac * ga) / det, 0.0)
        step = np.ones_like(a)  # halve until the cross-entropy does not rise
        f0 = _xent(a * s + c, t)
        for _ in range(30):
            worse = _xent((a - step * da) * s + c - step * dc, t) > f0 + 1e-12
            if not worse.any():
                break
            step = np.where(worse, step / 2, step)
        a, c = a - step * da, c - step * dc
        if np.abs(step * da).max(initial=0.0) < 1e-12 and np.abs(step * dc).max(initial=0.0) < 1e-12:
            break
    return a, c


def _xent(z: np.ndarray, t: np.ndarray) -> np.ndarray:
    softplus, _ = _softplus_sigmoid(z)
    return (softplus - t * z).sum(axis=0)


def platt(scores: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Probabilities sigmoid(a s + c) of per-class scores [n, L]."""
    return _sigmoid(np.asarray(scores, np.float64) * a + c)


class SoftmaxCountLoss(Loss):
    """Softmax cross-entropy with 1/k targets (group 0), plus a Poisson label count (group 1)."""

    def __init__(self, n_labels: int, *, count: bool = False) -> None:
        self.n_labels = n_labels
        self.count = count
        self.n_columns = n_labels + (1 if count else 0)
        self.groups = np.zeros(self.n_columns, dtype=np.int64)
        if count:
            self.groups[-1] = 1

    def denominators(self, y: np.ndarray) -> np.ndarray:
        kept = float(max(int((y.sum(axis=1) > 0).sum()), 1))
        return np.array([kept, float(max(len(y), 1))][: self.n_groups])

    def evaluate(self, z: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sums = np.zeros(self.n_groups)
        dz = np.zeros_like(z)
        y = y.astype(np.float64)
        k = y.sum(axis=1)
        soft = cols < self.n_labels
        if soft.any():  # the whole softmax group is in `cols` or none of it is
            zs = z[:, soft]
            keep = k > 0
            zmax = zs.max(axis=1, keepdims=True)
            lse = zmax[:, 0] + np.log(np.exp(zs - zmax).sum(axis=1))
            t = y / np.maximum(k, 1.0)[:, None]
            row = np.where(keep, lse - (t * zs).sum(axis=1), 0.0)
            sums[0] = row.sum()
            prob = np.exp(zs - lse[:, None])
            dz[:, soft] = np.where(keep[:, None], prob - t, 0.0)
        if self.count and not soft.all():
            eta = np.minimum(z[:, ~soft][:, 0], 50.0)
            rate = np.exp(eta)
            sums[1] = (rate - k * eta).sum()
            dz[:, ~soft] = (rate - k)[:, None]
        return sums, dz

    def initial_bias(self, y: np.ndarray) -> np.ndarray:
        k = y.sum(axis=1, keepdims=True).astype(np.float64)
        share = (y / np.maximum(k, 1)).sum(axis=0) / max(int((k > 0).sum()), 1)
        bias = np.log(np.clip(share, 1e-4, 1.0))
        if self.count:
            bias = np.append(bias, np.log(max(float(k.mean()), 1e-3)))
        return bias

    def curvature(self, y: np.ndarray) -> np.ndarray:
        share = np.exp(self.initial_bias(y)[: self.n_labels])
        c = np.maximum(share * (1.0 - share), 1e-6)
        if self.count:
            c = np.append(c, max(float(y.sum(axis=1).mean()), 1e-3))
        return c

    def activate(self, z: np.ndarray) -> np.ndarray:
        zs = z[:, : self.n_labels]
        e = np.exp(zs - zs.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def make_loss(name: str, y: np.ndarray, *, pos_weight: str | None = None, asl_gamma_neg: float = 4.0,
              asl_gamma_pos: float = 0.0, asl_clip: float = 0.05, count: bool = False) -> Loss:
    """The loss `name` for targets `y` [n, L] (pos_weight "balanced": negatives / positives, 1..1000)."""
    n_labels = y.shape[1]
    if name == "softmax":
        return SoftmaxCountLoss(n_labels, count=count)
    if name == "squared":
        return SquaredLoss(n_labels)
    pw = None
    if pos_weight == "balanced":
        pos = y.sum(axis=0).astype(np.float64)
        pw = np.clip((len(y) - pos) / np.maximum(pos, 1.0), 1.0, 1000.0)
    return SigmoidLoss(n_labels, name, pos_weight=pw, gamma_neg=asl_gamma_neg, gamma_pos=asl_gamma_pos, clip=asl_clip)
