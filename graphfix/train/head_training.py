"""`train_head`: fit the swapped model's multi-label head on frozen backbone features.

Features come from the backbone cut at the head's input (onnxruntime, cached); the head is fitted
by `graphfix.train.head_fit.fit_head` (standardised, converged L-BFGS, L2 strength by
cross-validation) and written into the head Gemm's initializers, standardisation folded in.
With `train_from`, the layers between that tensor and the head are fine-tuned as well
(`graphfix.train.finetune`). With the softmax loss a label-count head (`label_count`) is
trained beside it; `decision="count"` keeps the top round(count) labels per image.
"""

from __future__ import annotations

__all__ = ["DECISIONS", "MIN_POSITIVES", "train_head"]

import os
from typing import Any

import numpy as np

from graphfix.data.datasets import Dataset, skipped_summary
from graphfix.data.images import Preprocess, stored_preprocess
from graphfix.data.features import extract_features
from graphfix.data.scores import as_dataset
from graphfix.train.head_fit import TrainConfig, fit_head, planned_solves
from graphfix.errors import GraphfixError
from graphfix.model import Model, set_metadata

#: Decision rules `train_head` can store for `predict` and the `labels` output.
DECISIONS = ("thresholds", "topk", "count")
#: Labels with fewer training positives than this are listed in the history (`few_positives`).
MIN_POSITIVES = 3


def train_head(
    model: Model,
    train_set: Dataset | str | os.PathLike,
    val_set: Dataset | str | os.PathLike | None = None,
    *,
    loss: str = "auto",
    weight_decay: float | str = "auto",
    pos_weight: str | None = None,
    asl_gamma_neg: float = 4.0,
    asl_gamma_pos: float = 0.0,
    asl_clip: float = 0.05,
    cv_folds: int = 3,
    cv_metric: str = "map",
    l2: str = "shared",
    standardize: str = "auto",
    sigmoid_only: bool = False,
    tol: float = 1e-6,
    max_iter: int = 1000,
    decision: str = "thresholds",
    top_k: int | None = None,
    train_from: str | None = None,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 64,
    bn_stats: str = "frozen",
    keep_best_on_interrupt: bool = False,
    seed: int = 0,
    features_batch_size: int = 64,
    cache: bool = True,
    progress: bool | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[Model, dict[str, Any]]:
    """Train the head's linear layer (and, with `train_from`, the layers before it).

    Args:
        model: A swapped model (not changed).
        train_set: Training data (Dataset, CSV or NPZ path).
        val_set: Validation data: picks the L2 strength instead of cross-validation.
        loss: "auto" (the best of bce, balanced bce, asl, softmax and squared by the selection
            score), "bce", "asl", "squared" (least squares on the 0/1 targets, Platt-scaled to
            probabilities) or "softmax" (1/k targets; `probabilities` becomes a Softmax and a
            `label_count` output is added). `train_from` fine-tunes with bce unless told.
        weight_decay: lambda of mean loss + lambda/2 ||w||^2 on standardised features, or "auto"
            (k-fold CV on the training set, or `val_set`, scored by mAP).
        pos_weight: None or "balanced" (BCE: negatives/positives per class).
        asl_gamma_neg, asl_gamma_pos, asl_clip: ASL parameters.
        cv_folds: k of the cross-validation.
        cv_metric: "map", "macro-f1" or "micro-f1": the score that chooses the loss and lambda.
        standardize: The features' scale under the L2 penalty: "per-feature" (each feature's own
            std), "global" (one std for all: their relative scales kept, as on raw features) or
            "auto" (chosen by the squared loss's CV score under each; global only when it wins
            by more than one standard error; per-feature with `train_from`).
        sigmoid_only: With loss "auto", leave softmax out (a Sigmoid head: write-back to MXNet
            and Caffe holds only those).
        l2: "shared" (one lambda) or "per-class" (one per label, chosen on the same folds; shared
            for a label missing from a fold and for the softmax loss).
        tol: Gradient tolerance (max abs) of the final solve; max_iter: its iteration cap.
        decision: "thresholds", "topk" or "count" (softmax loss only): stored for `predict`, and
            for topk/count also computed by a bool `labels` output.
        top_k: k for decision "topk" (default: the rounded mean label count of the train set).
        train_from: A tensor of the backbone: fine-tune every layer between it and the head.
        epochs, lr, batch_size: Adam settings of the `train_from` fine-tuning.
        bn_stats, keep_best_on_interrupt: `train_from` options (`graphfix.train.finetune.finetune`).
        seed: Fold assignment and fine-tuning seed; same inputs and seed give the same bytes.
        features_batch_size, cache, progress, preprocess: feature extraction settings.

    Returns:
        (new model, history): the history holds the solver report (iterations, gradient norm,
        objective), the chosen weight decay, C = 1 / (lambda N) (sklearn's C on standardised
        features), the score that chose it (`selection_score`: mean CV score in `cv_metric`, or
        on the validation set), the chosen loss's CV curve, every compared loss (`losses`), the labels with fewer than MIN_POSITIVES training positives
        (`few_positives`: label -> count) and, with `train_from`, the validation mAP per epoch
        (epoch 0 = head only) and the kept epoch; a compact copy is stored as
        `graphfix.training`. The preprocessing the images were read with (the training set's,
        else `preprocess`) is stored as `graphfix.preprocess`. Stale thresholds (and the `labels` output) are removed.
    """
    from tqdm import tqdm

    from graphfix.progress import wanted
    from graphfix.train.head_graph import (
        add_rank_labels_output, remove_count_head, remove_labels_output, set_count_head, set_head,
        set_probability_op,
    )

    if train_from is not None and loss == "auto":
        loss = "bce"  # fine-tuning trains one loss (graphfix.train.finetune)
    requested_scale = standardize
    if train_from is not None and standardize == "auto":
        # the fine-tuning defaults were measured with a per-feature epoch-0 head (on the photos set
        # of benchmarks/finetune_quality.py, --train-from -2 from the auto-chosen global scale: 0.8155
        # test mAP against 0.8342)
        standardize = "per-feature"
    cfg = TrainConfig(
        loss=loss, weight_decay=weight_decay, pos_weight=pos_weight, asl_gamma_neg=float(asl_gamma_neg),
        asl_gamma_pos=float(asl_gamma_pos), asl_clip=float(asl_clip), count=loss in ("softmax", "auto"),
        cv_folds=int(cv_folds), cv_metric=cv_metric, l2=l2, tol=float(tol), max_iter=int(max_iter), seed=int(seed),
        sigmoid_only=bool(sigmoid_only), standardize=standardize,
    )
    cfg.validate()
    if decision not in DECISIONS:
        raise GraphfixError(f"unknown decision {decision!r}", kind="usage", hint=" | ".join(DECISIONS))
    if decision == "count" and loss != "softmax":
        raise GraphfixError("--decision count needs the label-count head of --loss softmax (name the loss)", kind="usage")
    train = as_dataset(model, train_set, preprocess)
    val = as_dataset(model, val_set, preprocess) if val_set is not None else None
    kw = dict(batch_size=features_batch_size, cache=cache, progress=progress)
    # fine-tuning without validation data holds out a tenth of the rows (graphfix.train.finetune)
    fit_rows = len(train) if train_from is None or val is not None else len(train) - max(1, len(train) // 10)
    total = planned_solves(cfg, fit_rows, val is not None) + (int(epochs) if train_from is not None else 0)
    unit = "solves" if train_from is None else "solves+epochs"
    bar = tqdm(total=total, desc="head", unit=unit, bar_format="{desc}: {n_fmt}/{total_fmt} " + unit + " [{elapsed}]",
               disable=not wanted(progress), leave=False)
    try:
        if train_from is not None:
            from graphfix.train.finetune import finetune

            new, hist = finetune(model, train, val, cfg, tensor=train_from, epochs=int(epochs), lr=float(lr),
                                 batch_size=int(batch_size), features_kw=kw, progress=bar, bn_stats=bn_stats,
                                 keep_best_on_interrupt=keep_best_on_interrupt)
        else:
            x_train = extract_features(model, train, **kw)
            x_val = extract_features(model, val, **kw) if val is not None else None
            fit = fit_head(x_train, train.y, cfg, x_val, val.y if val is not None else None, progress=bar)
            hist = fit.history
            new = model.copy()
            n_cls = train.y.shape[1]
            remove_labels_output(new)
            remove_count_head(new)
            set_head(new, fit.weight[:n_cls], fit.bias[:n_cls])
            if fit.weight.shape[0] > n_cls:
                set_count_head(new, fit.weight[n_cls], float(fit.bias[n_cls]))
    finally:
        bar.close()
    chosen_loss = hist.get("loss", loss)
    set_probability_op(new, "Softmax" if chosen_loss == "softmax" else "Sigmoid")
    if decision == "topk" and top_k is None:
        top_k = max(1, int(round(float(train.y.sum(axis=1).mean()))))
    if decision in ("topk", "count"):
        add_rank_labels_output(new, top_k=top_k if decision == "topk" else None)
    settings = {k: v for k, v in cfg.to_dict().items() if chosen_loss == "asl" or not k.startswith("asl_")}
    settings.update(loss=chosen_loss, pos_weight=hist.get("pos_weight", pos_weight), count=chosen_loss == "softmax",
                    loss_requested=loss, standardize=hist.get("standardize", cfg.standardize),
                    standardize_requested=requested_scale)
    positives = np.asarray(train.y).sum(axis=0)
    few = {name: int(n) for name, n in zip(train.labels, positives) if n < MIN_POSITIVES}
    chosen = [c["score"] for c in hist.get("cv") or [] if c["weight_decay"] == hist["weight_decay"]]
    summary = {
        **settings,
        "weight_decay": hist["weight_decay"],
        "decision": decision,
        "top_k": top_k if decision == "topk" else None,
        "train_from": train_from,
        "selected_by": hist["selected_by"],
        "C": hist.get("C"),
        "train_samples": len(train),
        "val_samples": len(val) if val is not None else None,
        "iterations": hist["iterations"],
        "grad_norm": hist["grad_norm"],
        "objective": hist["objective"],
        "converged": hist["converged"],
        "val_mAP": hist.get("val_mAP"),
        "selection_score": chosen[0] if chosen else None,
        "lambda_values": len(hist.get("cv") or []),
        "l2_per_class": hist.get("l2"),
        "losses": [{k: row[k] for k in ("loss", "weight_decay", "score", "spread", "chosen")}
                   for row in hist.get("losses") or []],
        "compared_on": hist.get("compared_on"),
        "platt": hist.get("platt"),
        "scale_choice": hist.get("scale_choice"),
        "few_positives": few,
    }
    if train_from is not None:
        summary.update({k: hist[k] for k in ("epochs", "best_epoch", "val_source", "epoch_val_mAP", "lr", "bn_stats",
                                             "interrupted_epoch")})
    skipped = skipped_summary(train, val)
    if skipped:
        summary["skipped"] = skipped  # rows load_dataset(skip_bad=True) left out
    used = train.preprocess if train.preprocess is not None else preprocess
    prep_meta = {"preprocess": stored_preprocess(model.preprocess, used)} if used is not None else {}
    set_metadata(new.ir, training=summary, thresholds=None, calibration=None, **prep_meta)
    history = {**hist, "settings": summary}
    return new, history
