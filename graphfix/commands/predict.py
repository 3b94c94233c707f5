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
import sys

from graphfix.commands._options import add_data_args, add_output_args, add_ray_arg, emit, load_model, model_files

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="calibrated multi-label ONNX model")
    parser.add_argument("inputs", metavar="INPUTS", nargs="*", help="images, folders, .npz, .csv or a features folder")
    parser.add_argument("--features", metavar="FEATURES_DIR", help="a features folder (graphfix features) in place of INPUTS")
    parser.add_argument("--scores", action="store_true", help="also print (with -o: store) each label's probability")
    parser.add_argument("-o", "--output", metavar="PREDICTIONS", help="write a folder of prediction shards instead of printing")
    parser.add_argument("--shard-rows", type=int, default=4096, help="with -o: rows per shard (default 4096)")
    parser.add_argument("--force", action="store_true", help="with -o: start over in a folder made with another model or data")
    add_ray_arg(parser)
    add_data_args(parser)
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from graphfix.calibrate import stored_decision
    from graphfix.commands._data import preprocess_for, progress_for, report_skipped
    from graphfix.data.images import image_paths, load_images
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
        if args.shard_rows < 1 or args.batch_size < 1:
            raise GraphfixError("--shard-rows and --batch-size must be positive", kind="usage")
        summary = save_predictions(model, data, args.output, scores=args.scores, batch_size=args.batch_size,
                                   shard_rows=args.shard_rows, workers=args.workers, ray=args.ray, force=args.force,
                                   progress=progress_for(args), inputs=(*files, *args.inputs))
        skipped = report_skipped(args, args.output, [data])
        text = [f"predictions: {summary['rows']} rows in {summary['shards']} shards "
                f"({summary['written']} written, {summary['skipped']} already there) in {summary['seconds']:.1f} s",
                f"wrote {args.output}"]
        _warn_default(rule)
        emit(args, {"ok": True, "command": "predict", "rule": rule["rule"], **summary, "skipped_rows": skipped}, text)
        return 0
    if folder_input:
        from graphfix.data.features import extract_features, scores_from_features

        p = scores_from_features(model, np.asarray(extract_features(model, data)))
        return _print(args, model, rule, list(data.paths or []), p, stored_labels(model, p))
    npz = [p for p in args.inputs if p.lower().endswith(".npz")]
    images = image_paths([p for p in args.inputs if not p.lower().endswith(".npz")])
    prep = preprocess_for(model, args, images, writes=False)
    names: list[str] = []
    batches = []
    for path in npz:
        try:
            with np.load(path, allow_pickle=False) as data:
                x = np.asarray(data["x"], np.float32)
        except (OSError, KeyError, ValueError) as exc:
            raise GraphfixError(f"cannot read 'x' from NPZ ({exc})", path=path) from exc
        names.extend(f"{path}[{i}]" for i in range(len(x)))
        batches.extend(x[i : i + args.batch_size] for i in range(0, len(x), args.batch_size))
    for i in range(0, len(images), args.batch_size):
        batches.append(load_images(images[i : i + args.batch_size], prep, workers=args.workers))
    names.extend(images)
    outputs = ["probabilities"] + (["labels"] if "labels" in model.output_names else [])
    probs, decided = [], []
    for batch in batches:
        try:
            res = model.run(batch, outputs=outputs)
        except GraphfixError:
            raise
        except Exception as exc:
            raise GraphfixError(f"inference failed on inputs of shape {list(batch.shape)}: {str(exc).splitlines()[0]}",
                                path=args.model) from exc
        probs.append(res["probabilities"])
        if "labels" in res:
            decided.append(res["labels"].astype(bool))
    p = np.concatenate(probs) if probs else np.zeros((0, 0), np.float32)
    return _print(args, model, rule, names, p, stored_labels(model, p, np.concatenate(decided) if decided else None))


def _warn_default(rule: dict) -> None:
    if rule["rule"] == "default 0.5":
        print("graphfix: warning: the model stores no thresholds; using 0.5 (run `graphfix calibrate`)", file=sys.stderr)


def _print(args: argparse.Namespace, model, rule: dict, names: list[str], p, pred) -> int:
    """Print (or --json) each input's labels, with --scores the top five probabilities."""
    import numpy as np

    _warn_default(rule)
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
    doc = {"ok": True, "command": "predict", "rule": rule["rule"], "predictions": results}
    emit(args, doc, text)
    return 0
