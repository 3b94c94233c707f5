"""Train: fitting the multi-label head on a frozen (or partly fine-tuned) backbone.

Holds the losses (`losses`: BCE, weighted BCE, ASL, softmax with 1/k targets), the NumPy
L-BFGS solver on standardised features (`solver`), the regularisation path with
cross-validation or a validation set (`head_fit`), `train_head` itself (`head_training`:
features -> fit -> the trained head written into the model), fine-tuning of the last blocks in
torch (`finetune`) and the graph edits that write a trained head and its outputs (`head_graph`).

May import: data/ and graphfix's base modules (errors, model, metrics, progress, ...). Never
calibrate/, commands/ or scale/ (test: tests/test_layout.py).
"""

from __future__ import annotations

__all__ = ["train_head", "TrainConfig", "fit_head"]

from graphfix.train.head_fit import TrainConfig, fit_head
from graphfix.train.head_training import train_head
