"""Labels (and scores) for every row of a data set, with the model's stored decision rule.

`stored_labels` is the one decision `predict` makes: the model's bool `labels` output when it has
one, else its stored rule (`graphfix.calibrate.decisions.stored_decision`). `save_predictions`
writes a predictions folder (`graphfix.data.shards`, format graphfix-predictions/1: `labels`
bool [n, L], with `scores` float32 [n, L] when asked, plus row and path), locally or on Ray, and
`prediction_data` turns `predict`'s INPUTS into the Dataset it runs on.
"""

from __future__ import annotations

__all__ = ["stored_labels", "prediction_data", "save_predictions"]

import os
from typing import Any, Sequence

import numpy as np

from graphfix.data.datasets import Dataset, image_dataset, load_dataset
from graphfix.data.images import Preprocess, image_paths
from graphfix.calibrate.decisions import decide, stored_decision
from graphfix.data.shards import DEFAULT_SHARD_ROWS, is_shard_dir, load_features_dir
from graphfix.errors import GraphfixError
from graphfix.model import Model


def stored_labels(model: Model, probs: np.ndarray, labels_output: np.ndarray | None = None) -> np.ndarray:
    """Bool [N, L]: the `labels` output when given, else the model's stored rule on `probs`."""
    if labels_output is not None:
        return np.asarray(labels_output).astype(bool)
    rule = stored_decision(model)
    if rule["rule"] == "topk":
        return decide(probs, 0.5, top_k=rule["top_k"])
    if rule["rule"] == "count":
        raise GraphfixError("the count rule needs the model's labels output; predict from images", path=model.path)
    return decide(probs, rule["thresholds"], at_least_one=rule.get("at_least_one", False))


def prediction_data(model: Model, inputs: Sequence[str], prep: Preprocess | None, *, skip_bad: bool = False) -> Dataset:
    """One data set from `predict`'s INPUTS: a CSV manifest, an NPZ, a features folder, or image
    files and folders (in the order given, folders sorted); every image's header is checked first
    (`skip_bad`: bad ones are left out, in `Dataset.skipped`)."""
    from graphfix.data.scores import model_labels

    labels = model_labels(model)
    if len(inputs) == 1 and is_shard_dir(inputs[0]):
        return load_features_dir(inputs[0], labels, need_targets=False)
    if len(inputs) == 1 and inputs[0].lower().endswith((".csv", ".npz")):
        return load_dataset(inputs[0], labels, prep, need_labels=False, skip_bad=skip_bad)
    if any(p.lower().endswith((".csv", ".npz")) for p in inputs):
        raise GraphfixError("with -o, give one .csv, .npz or features folder, or only images and folders", kind="usage")
    paths = image_paths(list(inputs))
    if prep is None:
        raise GraphfixError("image inputs need preprocessing settings", kind="usage", hint="pass --size H,W")
    return image_dataset(paths, labels, prep, skip_bad=skip_bad)


def save_predictions(
    model: Model,
    data: Dataset,
    folder: str | os.PathLike,
    *,
    scores: bool = False,
    batch_size: int = 64,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    workers: int | None = None,
    ray: str | None = None,
    force: bool = False,
    progress: bool | None = None,
    inputs: tuple[str | None, ...] = (),
) -> dict[str, Any]:
    """Write the labels (and with `scores` the probabilities) of every row to a predictions folder.

    Args:
        model: A trained (ideally calibrated) swapped model.
        data: The rows (`prediction_data`); a features folder runs only the head, in NumPy.
        ray: None runs here; "local", "auto" or an address runs the shards on Ray; the labels
            and scores equal the local ones row for row.
        Others: as `graphfix.data.features.save_features`.

    Returns:
        The run's summary (rows, shards written and skipped, retried shards, rows per worker).
    """
    from graphfix.data.scores import model_labels
    from graphfix.data.shards import PREDICTIONS_FORMAT, ShardPlan, runner_for, write_shards

    if "probabilities" not in model.output_names:
        raise GraphfixError("the model has no `probabilities` output", kind="no_head", path=model.path,
                            hint="run `graphfix swap-head` and `graphfix train-head` first")
    outputs = {"probabilities": "scores"}
    if "labels" in model.output_names:
        outputs["labels"] = "labels_output"
    if "labels" not in outputs and stored_decision(model)["rule"] == "count":
        raise GraphfixError("the count rule needs the model's labels output", path=model.path)

    def finish(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"labels": stored_labels(model, arrays["scores"], arrays.get("labels_output"))}
        if scores:
            out["scores"] = arrays["scores"].astype(np.float32)
        return out

    names = ["labels"] + (["scores"] if scores else [])
    plan = ShardPlan(PREDICTIONS_FORMAT, outputs, batch_size=batch_size, shard_rows=shard_rows, workers=workers,
                     post=finish, stored=names)
    runner = _head_runner(model) if data.features is not None else runner_for(ray)
    return write_shards(model.to_bytes(), data, folder, plan, runner=runner, force=force,
                        labels=model_labels(model), inputs=inputs, progress=progress)


def _head_runner(model: Model):
    """A runner over a features folder: the head's probabilities in NumPy (no backbone run)."""
    from graphfix.data.features import extract_features, scores_from_features

    def run(model_bytes: bytes, data: Dataset, shards: list, plan: Any):
        feats = extract_features(model, data)
        for k, start, stop in shards:
            yield k, {"scores": scores_from_features(model, np.asarray(feats[start:stop]))}, {"where": "local"}

    return run
