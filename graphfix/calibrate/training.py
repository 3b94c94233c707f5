"""Training the linear head on frozen features with torch (CPU), seeded and deterministic.

Features are standardised (per-feature mean and std of the training set) for the optimiser and
the standardisation is folded back into the weights, so the ONNX head reads raw features.
Weights start at 0 and the bias at the class prior (logit of the prior for sigmoid losses, log
prior for softmax), mini-batches are shuffled by a seeded `torch.Generator`, and Adam runs for a
fixed number of epochs on one torch thread; with the same inputs and torch build the result is
bit-identical whatever the core count.
The L2 penalty (`weight_decay`, on weights only) is chosen from `WEIGHT_DECAYS` by validation
mAP when validation features are given and `weight_decay="auto"`.
"""

from __future__ import annotations

__all__ = ["WEIGHT_DECAYS", "DEFAULT_WEIGHT_DECAY", "TrainConfig", "fit_linear", "fit_with_sweep"]

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from graphfix.calibrate.losses import LOSSES, asl_loss, bce_loss, softmax_loss
from graphfix.calibrate.metrics import mean_average_precision
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Candidates of the validation sweep.
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
#: Used when there is no validation set.
DEFAULT_WEIGHT_DECAY = 1e-4


@dataclass
class TrainConfig:
    """Head-training settings (see `graphfix.calibrate.train_head`)."""

    loss: str = "bce"
    epochs: int = 30
    lr: float = 0.01
    batch_size: int = 256
    weight_decay: float | str = "auto"
    pos_weight: str | None = None
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05
    seed: int = 0

    def validate(self) -> None:
        if self.loss not in LOSSES:
            raise GraphfixError(f"unknown loss {self.loss!r}", kind="usage", hint=f"choose from {', '.join(LOSSES)}")
        if self.pos_weight not in (None, "balanced"):
            raise GraphfixError(f"unknown pos_weight {self.pos_weight!r}", kind="usage", hint="None or 'balanced'")
        if self.pos_weight and self.loss != "bce":
            raise GraphfixError("pos_weight applies to the bce loss only", kind="usage")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise GraphfixError("epochs, batch size and learning rate must be positive", kind="usage")
        if isinstance(self.weight_decay, str) and self.weight_decay != "auto":
            raise GraphfixError(f"weight decay {self.weight_decay!r}: a number or 'auto'", kind="usage")
        if not isinstance(self.weight_decay, str) and not self.weight_decay >= 0:
            raise GraphfixError("weight decay must be >= 0", kind="usage")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise GraphfixError(
            "training the head needs torch", kind="usage",
            hint="pip install 'graphfix[train]' (the CPU wheel of torch is enough)",
        ) from exc
    return torch


def _loss_fn(cfg: TrainConfig, pos_weight: Any):
    if cfg.loss == "bce":
        return lambda z, y: bce_loss(z, y, pos_weight=pos_weight)
    if cfg.loss == "asl":
        return lambda z, y: asl_loss(z, y, gamma_neg=cfg.asl_gamma_neg, gamma_pos=cfg.asl_gamma_pos, clip=cfg.asl_clip)
    return softmax_loss


def fit_linear(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    weight_decay: float,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train one linear head on features `x` [N, F] for targets `y` [N, L].

    Returns:
        (weight [L, F] float32, bias [L] float32, history) where history holds per-epoch
        `train_loss` (and `val_loss`) and the final `val_mAP` when validation data is given.
    """
    torch = _import_torch()
    from graphfix.calibrate.features import activate

    x64 = x.astype(np.float64)
    mu = x64.mean(axis=0)
    sd = x64.std(axis=0)
    sd = np.where(sd > 1e-6, sd, 1.0)
    n, n_feat = x.shape
    n_cls = y.shape[1]
    yt = torch.from_numpy(y.astype(np.float32))
    xt = torch.from_numpy(((x64 - mu) / sd).astype(np.float32))
    prior = np.clip(y.mean(axis=0), 1e-4, 1 - 1e-4)
    if cfg.loss == "softmax":
        k = y.sum(axis=1, keepdims=True)
        share = (y / np.maximum(k, 1)).sum(axis=0) / max(int((k > 0).sum()), 1)
        bias0 = np.log(np.clip(share, 1e-4, 1.0))
    else:
        bias0 = np.log(prior / (1 - prior))
    w = torch.zeros((n_cls, n_feat), dtype=torch.float32, requires_grad=True)
    b = torch.tensor(bias0.astype(np.float32), requires_grad=True)
    pos_weight = None
    if cfg.pos_weight == "balanced":
        pos = y.sum(axis=0)
        pw = np.clip((n - pos) / np.maximum(pos, 1), 1.0, 1000.0)
        pos_weight = torch.tensor(pw.astype(np.float32))
    loss_fn = _loss_fn(cfg, pos_weight)
    opt = torch.optim.Adam([w, b], lr=cfg.lr)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    xv = yv = None
    if x_val is not None and y_val is not None:
        xv = torch.from_numpy(((x_val.astype(np.float64) - mu) / sd).astype(np.float32))
        yv = torch.from_numpy(y_val.astype(np.float32))
    history: dict[str, Any] = {"weight_decay": weight_decay, "train_loss": [], "val_loss": []}
    bs = min(cfg.batch_size, n)
    for _epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, bs):
            idx = order[i : i + bs]
            opt.zero_grad()
            data_loss = loss_fn(xt[idx] @ w.T + b, yt[idx])
            loss = data_loss + weight_decay * (w * w).sum() if weight_decay else data_loss
            loss.backward()
            opt.step()
            total += float(data_loss.detach()) * len(idx)
        history["train_loss"].append(round(total / n, 6))
        if xv is not None:
            with torch.no_grad():
                history["val_loss"].append(round(float(loss_fn(xv @ w.T + b, yv)), 6))
    if not all(math.isfinite(v) for v in history["train_loss"]):
        raise GraphfixError("training diverged (loss is not finite)", kind="failed", hint="lower --lr")
    w_np = w.detach().numpy().astype(np.float64)
    weight = (w_np / sd).astype(np.float32)
    bias = (b.detach().numpy().astype(np.float64) - (w_np / sd) @ mu).astype(np.float32)
    if x_val is not None and y_val is not None:
        scores = activate(x_val @ weight.T + bias, "Softmax" if cfg.loss == "softmax" else "Sigmoid")
        val_map = mean_average_precision(y_val, scores)
        history["val_mAP"] = None if math.isnan(val_map) else round(val_map, 6)
    if not history["val_loss"]:
        del history["val_loss"]
    return weight, bias, history


def fit_with_sweep(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """`fit_linear`, with the weight decay chosen by validation mAP when it is "auto".

    Returns:
        (weight, bias, history): history has `weight_decay` (the chosen one), `runs` (one entry
        per candidate, with its val mAP) and the chosen run's curves.
    """
    cfg.validate()
    torch = _import_torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical results whatever the machine's core count
    try:
        return _sweep(x, y, cfg, x_val, y_val)
    finally:
        torch.set_num_threads(threads)


def _sweep(
    x: np.ndarray, y: np.ndarray, cfg: TrainConfig, x_val: np.ndarray | None, y_val: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    if cfg.weight_decay != "auto":
        weight, bias, hist = fit_linear(x, y, cfg, float(cfg.weight_decay), x_val, y_val)
        return weight, bias, {**hist, "selected_by": "fixed"}
    if x_val is None or y_val is None:
        weight, bias, hist = fit_linear(x, y, cfg, DEFAULT_WEIGHT_DECAY)
        return weight, bias, {**hist, "selected_by": "default (no validation set)"}
    best = None
    runs = []
    for wd in WEIGHT_DECAYS:
        weight, bias, hist = fit_linear(x, y, cfg, wd, x_val, y_val)
        score = hist.get("val_mAP")
        score = -math.inf if score is None else score
        runs.append({"weight_decay": wd, "val_mAP": hist.get("val_mAP"), "final_val_loss": hist["val_loss"][-1]})
        logger.info("weight decay %g: val mAP %s", wd, hist.get("val_mAP"))
        if best is None or score > best[0]:
            best = (score, weight, bias, hist)
    assert best is not None
    _, weight, bias, hist = best
    return weight, bias, {**hist, "selected_by": "validation mAP", "runs": runs}
