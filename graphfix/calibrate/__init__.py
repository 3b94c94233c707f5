"""Train the multi-label head and calibrate per-class thresholds.

Pipeline on a swapped model (`graphfix_head` Gemm + `logits` / `probabilities` outputs):

- `train_head(model, train_set, val_set=None, ...)` (`head_training`): backbone features
  (onnxruntime, cached), a converged, standardised, cross-validated linear head
  (`training`, `solver`, `objectives`), written back into the head initializers.
- `fit_thresholds(model, heldout_set, objective="f1", ...)` (`calibration`): exact per-class
  thresholds with an explicit few-positive policy; `apply_thresholds` stores them.
- `decide(scores, ...)` (`decisions`): the decision rules in NumPy (thresholds, top-k, count).
- `model_scores(model, data)` (`scoring`): a model's probabilities on a data set.
- `save_features` / `save_predictions` (`features`, `predictions`, `shards`): resumable folders
  of shards, computed here or on Ray; a features folder is accepted as a data set.
"""

from __future__ import annotations

__all__ = [
    "train_head",
    "fit_thresholds",
    "fit_thresholds_from_scores",
    "apply_thresholds",
    "decide",
    "evaluate",
    "as_dataset",
    "stored_decision",
    "Thresholds",
    "Dataset",
    "Preprocess",
    "load_dataset",
    "extract_features",
    "feature_model",
    "save_features",
    "save_predictions",
    "model_scores",
    "metrics",
    "search_thresholds",
    "parse_objective",
]

from graphfix.calibrate import metrics
from graphfix.calibrate.calibration import Thresholds, apply_thresholds, evaluate, fit_thresholds, fit_thresholds_from_scores
from graphfix.calibrate.datasets import Dataset, Preprocess, load_dataset
from graphfix.calibrate.decisions import decide, stored_decision
from graphfix.calibrate.features import extract_features, feature_model, save_features
from graphfix.calibrate.predictions import save_predictions
from graphfix.calibrate.head_training import train_head
from graphfix.calibrate.scoring import as_dataset, model_scores
from graphfix.calibrate.thresholds import parse_objective, search_thresholds
