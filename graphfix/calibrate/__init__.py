"""Calibrate: from a trained head's scores to decisions, with the evidence.

Holds per-class thresholds (`calibration`: `fit_thresholds`, `apply_thresholds`, `Thresholds`,
`evaluate`; `thresholds`: the exact threshold search per objective), the decision rules in
NumPy (`decisions`: thresholds, top-k, count), prediction folders (`predictions`:
`save_predictions`, labels by the stored rule) and the calibration reports (`report`: JSON,
CSV and PNG; `report_html`: the interactive page). The metrics are `graphfix.metrics` (also
used by training).

May import: data/, train/ and graphfix's base modules. Never commands/ or scale/ (test:
tests/test_layout.py).

Deprecated re-exports (kept for one release; import them from their new homes):
`train_head` (graphfix.train), `Dataset`, `Preprocess`, `load_dataset`, `as_dataset`,
`model_scores`, `extract_features`, `feature_model`, `save_features` (graphfix.data) and
`metrics` (graphfix.metrics). Each still works from here and warns with DeprecationWarning.
"""

from __future__ import annotations

__all__ = [
    "check_trained",
    "fit_thresholds",
    "fit_thresholds_from_scores",
    "training_oof_scores",
    "apply_thresholds",
    "decide",
    "evaluate",
    "stored_decision",
    "Thresholds",
    "save_predictions",
    "search_thresholds",
    "parse_objective",
]

import importlib
import warnings
from typing import Any

from graphfix.calibrate.calibration import (
    Thresholds, apply_thresholds, check_trained, evaluate, fit_thresholds, fit_thresholds_from_scores,
    training_oof_scores,
)
from graphfix.calibrate.decisions import decide, stored_decision
from graphfix.calibrate.predictions import save_predictions
from graphfix.calibrate.thresholds import parse_objective, search_thresholds

#: Deprecated name -> the module that holds it now.
_MOVED = {
    "train_head": "graphfix.train",
    "Dataset": "graphfix.data",
    "Preprocess": "graphfix.data",
    "load_dataset": "graphfix.data",
    "as_dataset": "graphfix.data",
    "model_scores": "graphfix.data",
    "extract_features": "graphfix.data",
    "feature_model": "graphfix.data",
    "save_features": "graphfix.data",
    "metrics": "graphfix.metrics",
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module 'graphfix.calibrate' has no attribute {name!r}")
    warnings.warn(f"graphfix.calibrate.{name} moved to {home if name == 'metrics' else home + '.' + name}; the old name goes in the next release",
                  DeprecationWarning, stacklevel=2)
    module = importlib.import_module(home)
    return module if name == "metrics" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MOVED))
