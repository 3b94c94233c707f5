"""Data: what goes into a model, and what comes out of a backbone.

Holds data sets (`datasets`: CSV manifests, NPZ arrays, features folders), images (`images`:
Preprocess and the one bounded decoder), backbone features (`features`: the model cut at the
head, run with onnxruntime, cached), large arrays within a memory budget (`arrays`), resumable
shard folders for features and predictions (`shards`, with the `Runner` interface that
`graphfix.scale` plugs Ray into through an entry point) and a model's scores on a data set
(`scores`).

May import: graphfix's base modules (errors, limits, model, output, progress, irutil). Never
train/, calibrate/, commands/, scale/ or convert/ (test: tests/test_layout.py).
"""

from __future__ import annotations

__all__ = [
    "Dataset", "load_dataset", "Preprocess", "decode_image", "load_images", "image_paths",
    "feature_model", "extract_features", "save_features", "as_dataset", "model_scores", "model_labels",
]

from graphfix.data.datasets import Dataset, load_dataset
from graphfix.data.features import extract_features, feature_model, save_features
from graphfix.data.images import Preprocess, decode_image, image_paths, load_images
from graphfix.data.scores import as_dataset, model_labels, model_scores
