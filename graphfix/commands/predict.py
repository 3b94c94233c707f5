"""Print the labels of each image using the model's stored thresholds.

INPUTS are image files, folders of images, NPZ files (`x` [N,C,H,W] preprocessed), a CSV
manifest, or a features folder from `graphfix features` (also spelled `--features DIR`; only the
head runs). The decision is the model's `labels` output when it has one, else `probabilities >=
graphfix.thresholds` (top-k or top round(label_count) when trained with --decision topk|count
and not calibrated; 0.5 with a warning when nothing is stored).

With -o PREDICTIONS the labels (and with --scores the probabilities) of every row go to a
resumable folder of shards (manifest.json, shard-NNNNN.npz with labels, scores, row, path)
instead of stdout; with --ray as well, the shards run on an actor pool on Ray and equal the
local ones row for row (image paths must be readable on every node).
"""

from __future__ import annotations

import argparse
import logging

from graphfix.commands._options import (
    add_data_args, add_output_args, add_ray_arg, emit, load_model, model_files, positive_int,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="calibrated multi-label ONNX model")
    parser.add_argument("inputs", metavar="INPUTS", nargs="*", help="images, folders, .npz, .csv or a features folder")
    parser.add_argument("--features", metavar="FEATURES_DIR", help="a features folder (graphfix features) in place of INPUTS")
    parser.add_argument("--scores", action="store_true", help="also print (with -o: store) each label's probability")
    parser.add_argument("-o", "--output", metavar="PREDICTIONS", help="write a folder of prediction shards instead of printing")
    parser.add_argument("--shard-rows", type=positive_int, default=4096, help="with -o: rows per shard (default 4096)")
    parser.add_argument("--force", action="store_true", help="with -o: start over in a folder made with another model or data")
    add_ray_arg(parser)
    add_data_args(parser)
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from graphfix.calibrate import stored_decision
    from graphfix.commands._data import preprocess_for, progress_for, report_skipped
    from graphfix.commands._state import warn_head_state
    from graphfix.calibrate.predictions import prediction_data, save_predictions, stored_labels
    from graphfix.data.shards import is_shard_dir
    from graphfix.errors import GraphfixError

    if args.features:
        if args.inputs:
            raise GraphfixError("give INPUTS or --features, not both", kind="usage")
        args.inputs = [args.features]
    if not args.inputs:
        raise GraphfixError("give INPUTS (images, folders, .npz, .csv) or --features DIR", kind="usage")
    if args.ray is not None and not args.output:
        raise GraphfixError("--ray writes a predictions folder: add -o PREDICTIONS", kind="usage")
    files = model_files(args.model)
    model = load_model(args)
    if "probabilities" not in model.output_names:
        raise GraphfixError("the model has no `probabilities` output", kind="no_head", path=args.model,
                            hint="run `graphfix swap-head` and `graphfix train-head` first")
    rule = stored_decision(model)
    folder_input = len(args.inputs) == 1 and is_shard_dir(args.inputs[0])
    if args.output or folder_input:
        prep = preprocess_for(model, args, list(args.inputs), writes=False)
        data = prediction_data(model, args.inputs, prep, skip_bad=args.skip_bad)
    if args.output:
        summary = save_predictions(model, data, args.output, scores=args.scores, batch_size=args.batch_size,
                                   shard_rows=args.shard_rows, workers=args.workers, ray=args.ray, force=args.force,
                                   progress=progress_for(args), inputs=(*files, *args.inputs))
        skipped = report_skipped(args, args.output, [data])
        text = [f"predictions: {summary['rows']} rows in {summary['shards']} shards "
                f"({summary['written']} written, {summary['skipped']} already there) in {summary['seconds']:.1f} s",
                f"wrote {args.output}"]
        state = warn_head_state(args, args.model, model.metadata)
        emit(args, {"ok": True, "command": "predict", "rule": rule["rule"], "head_state": state, **summary,
                    "skipped_rows": skipped}, text)
        return 0
    if folder_input:
        from graphfix.data.features import extract_features, scores_from_features

        p = scores_from_features(model, np.asarray(extract_features(model, data)))
        return _print(args, model, rule, list(data.paths or []), p, stored_labels(model, p))
    groups = _input_sets(model, args)
    skipped = report_skipped(args, None, [data for _, data in groups])
    outputs = ["probabilities"] + (["labels"] if "labels" in model.output_names else [])
    names: list[str] = []
    probs, decided = [], []
    for group_names, data in groups:
        names.extend(group_names)
        for batch in data.batches(args.batch_size, workers=args.workers):
            try:
                res = model.run(batch, outputs=outputs)
            except GraphfixError:
                raise
            except Exception as exc:
                raise GraphfixError(f"inference failed on inputs of shape {list(batch.shape)}: "
                                    f"{str(exc).splitlines()[0]}", path=args.model) from exc
            probs.append(res["probabilities"])
            if "labels" in res:
                decided.append(res["labels"].astype(bool))
    p = np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)
    return _print(args, model, rule, names, p, stored_labels(model, p, np.concatenate(decided) if decided else None),
                  skipped)


def _input_sets(model, args: argparse.Namespace) -> list:
    """INPUTS in the order given as (names, Dataset) pairs: each CSV manifest and NPZ file its own
    set (read by `graphfix.data.load_dataset`, as with -o), each run of image files and folders
    one set (decoded in batches on threads)."""
    import os

    import numpy as np

    from graphfix.commands._data import preprocess_for
    from graphfix.data import Dataset, load_dataset
    from graphfix.data.images import image_paths
    from graphfix.data.scores import model_labels

    labels = model_labels(model)
    tables = {p for p in args.inputs if p.lower().endswith((".npz", ".csv"))}
    images = {p: image_paths([p]) for p in args.inputs if p not in tables}
    prep = preprocess_for(model, args, [f for found in images.values() for f in found]
                          + [p for p in tables if p.lower().endswith(".csv")], writes=False)
    sets: list = []
    run: list[str] = []
    for path in [*args.inputs, None]:  # None ends the last run of images
        if path is not None and path not in tables:
            run.extend(images[path])
            continue
        if run:
            sets.append((run, Dataset(y=np.zeros((len(run), 0), np.uint8), labels=labels,
                                      paths=[os.path.abspath(f) for f in run], preprocess=prep)))
            run = []
        if path is not None:
            data = load_dataset(path, labels, prep, need_labels=False, skip_bad=bool(args.skip_bad),
                                workers=args.workers)
            sets.append((list(data.paths) if data.paths else [f"{path}[{i}]" for i in range(len(data))], data))
    return sets


def _print(args: argparse.Namespace, model, rule: dict, names: list[str], p, pred, skipped: dict | None = None) -> int:
    """Print (or --json) each input's labels, with --scores the top five probabilities, after the
    head-state warning (said once the work succeeded, so an error stays the only line)."""
    import numpy as np

    from graphfix.commands._state import warn_head_state

    state = warn_head_state(args, args.model, model.metadata)
    labels = model.labels or [str(j) for j in range(p.shape[1])]
    results = []
    text = []
    for i, name in enumerate(names):
        chosen = [labels[j] for j in np.flatnonzero(pred[i])]
        item = {"input": name, "labels": chosen}
        if args.scores or args.json:
            item["scores"] = {labels[j]: round(float(p[i, j]), 6) for j in range(len(labels))}
        results.append(item)
        line = f"{name}: {', '.join(chosen) if chosen else '(none)'}"
        if args.scores:
            line += "  [" + ", ".join(f"{labels[j]}={p[i, j]:.3f}" for j in np.argsort(-p[i])[:5]) + "]"
        text.append(line)
    doc = {"ok": True, "command": "predict", "rule": rule["rule"], "head_state": state, "predictions": results}
    if skipped:
        doc["skipped_rows"] = skipped
    emit(args, doc, text)
    return 0
