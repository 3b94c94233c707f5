"""Print the labels of each image using the model's stored thresholds.

INPUTS are image files, folders of images, or NPZ files (`x` [N,C,H,W] preprocessed). The
decision is the model's `labels` output when it has one, else `probabilities >=
graphfix.thresholds` (top-k or top round(label_count) when trained with --decision topk|count
and not calibrated; 0.5 with a warning when nothing is stored).
"""

from __future__ import annotations

import argparse
import logging

from graphfix.commands._options import add_data_args, add_output_args, emit, load_model

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="calibrated multi-label ONNX model")
    parser.add_argument("inputs", metavar="INPUTS", nargs="+", help="images, folders or .npz files")
    parser.add_argument("--scores", action="store_true", help="also print each label's probability")
    add_data_args(parser)
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    import sys

    import numpy as np

    from graphfix.calibrate import decide, stored_decision
    from graphfix.calibrate._cli import preprocess_for
    from graphfix.calibrate.datasets import image_paths, load_images
    from graphfix.errors import GraphfixError

    model = load_model(args)
    if "probabilities" not in model.output_names:
        raise GraphfixError("the model has no `probabilities` output", kind="no_head", path=args.model,
                            hint="run `graphfix swap-head` and `graphfix train-head` first")
    npz = [p for p in args.inputs if p.lower().endswith(".npz")]
    images = image_paths([p for p in args.inputs if not p.lower().endswith(".npz")])
    prep = preprocess_for(model, args, images)
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
    rule = stored_decision(model)
    if rule["rule"] == "default 0.5":
        print("graphfix: warning: the model stores no thresholds; using 0.5 (run `graphfix calibrate`)", file=sys.stderr)
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
    if decided:
        pred = np.concatenate(decided)
    elif rule["rule"] == "topk":
        pred = decide(p, 0.5, top_k=rule["top_k"])
    else:
        pred = decide(p, rule["thresholds"], at_least_one=rule.get("at_least_one", False))
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
