"""A model's scores on a data set: the data set checked against the model, features, probabilities."""

from __future__ import annotations

__all__ = ["model_labels", "as_dataset", "model_scores"]

import os

import numpy as np

from graphfix.data.datasets import Dataset, load_dataset
from graphfix.data.images import Preprocess
from graphfix.data.features import extract_features, head_parameters, scores_from_features
from graphfix.errors import GraphfixError
from graphfix.model import Model


def model_labels(model: Model) -> list[str]:
    """The model's label names (`graphfix.labels`, else "0".."L-1")."""
    labels = model.labels
    if labels:
        return list(labels)
    w, _ = head_parameters(model)
    return [str(j) for j in range(w.shape[0])]


def as_dataset(model: Model, data: Dataset | str | os.PathLike, preprocess: Preprocess | None = None) -> Dataset:
    """A `Dataset` for `model`: loads a path (CSV/NPZ) and checks the label count."""
    labels = model_labels(model)
    if isinstance(data, Dataset):
        if data.y.shape[1] != len(labels):
            raise GraphfixError(
                f"the data set has {data.y.shape[1]} labels but the model has {len(labels)}", path=data.source
            )
        if len(data) == 0:
            raise GraphfixError("the data set is empty", path=data.source)
        return data
    path = os.fspath(data)
    prep = preprocess
    if prep is None and path.lower().endswith(".csv"):
        prep = Preprocess.for_model(model)
    return load_dataset(path, labels, prep)


def model_scores(
    model: Model,
    data: Dataset | str | os.PathLike,
    *,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool | None = None,
    preprocess: Preprocess | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(`probabilities` [N, L], targets [N, L]) for a data set, via cached backbone features."""
    ds = as_dataset(model, data, preprocess)
    feats = extract_features(model, ds, batch_size=batch_size, cache=cache, progress=progress)
    return scores_from_features(model, feats), ds.y
