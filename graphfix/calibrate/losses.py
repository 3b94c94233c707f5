"""Head-training losses (torch is imported by the caller; these take torch tensors).

- `bce`: binary cross-entropy on logits, mean over all entries; optional per-class `pos_weight`
  (class-balanced: negatives / positives of the training set).
- `asl`: asymmetric loss (Ben-Baruch, Ridnik et al., ICCV 2021):
  L+ = (1-p)^g+ log p, L- = p_m^g- log(1-p_m), p_m = max(p - clip, 0); defaults g- = 4,
  g+ = 0, clip = 0.05 (the authors' COCO settings), mean over all entries.
- `softmax`: softmax cross-entropy against 1/k targets (an image with k labels gets 1/k on each;
  Mahajan et al., ECCV 2018); images with no label are left out of the loss.
"""

from __future__ import annotations

__all__ = ["LOSSES", "bce_loss", "asl_loss", "softmax_loss"]

from typing import Any

#: Loss names accepted by `train_head`.
LOSSES = ("bce", "asl", "softmax")


def bce_loss(logits: Any, y: Any, *, pos_weight: Any = None) -> Any:
    """Mean binary cross-entropy with logits."""
    import torch.nn.functional as F

    return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pos_weight)


def asl_loss(logits: Any, y: Any, *, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> Any:
    """Mean asymmetric loss (see module docstring)."""
    import torch

    p = torch.sigmoid(logits)
    p_m = (p - clip).clamp(min=0) if clip > 0 else p
    loss_pos = y * torch.log(p.clamp(min=eps))
    loss_neg = (1 - y) * torch.log((1 - p_m).clamp(min=eps))
    if gamma_pos:
        loss_pos = loss_pos * (1 - p).pow(gamma_pos)
    if gamma_neg:
        loss_neg = loss_neg * p_m.pow(gamma_neg)
    return -(loss_pos + loss_neg).mean()


def softmax_loss(logits: Any, y: Any) -> Any:
    """Cross-entropy of softmax(logits) against y / k, over rows with k >= 1 (0 if none)."""
    import torch

    k = y.sum(dim=1)
    keep = k > 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    targets = y[keep] / k[keep, None]
    return -(targets * torch.log_softmax(logits[keep], dim=1)).sum(dim=1).mean()
