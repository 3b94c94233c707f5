"""Replace the softmax head with a multi-label head: Gemm(F->L) + Sigmoid.

Outputs `logits` and `probabilities` [batch, L]; the old head and training-only inputs go.
Example: graphfix swap-head resnet-18-symbol.json --labels 20  (writes resnet-18-multilabel.onnx)
`--to mxnet|caffe -o PREFIX` writes the source's own format instead (symbol + params, or
prototxt + caffemodel, plus a training net and PREFIX-graphfix.json with labels/thresholds).
"""

from __future__ import annotations

import argparse
import os
import time

from graphfix.commands._options import (
    add_model_args, add_output_args, add_preprocess_args, add_target_args, default_output, emit, export_lines,
    load_model, model_files,
    output_path,
)
from graphfix.commands._writeback import add_to_argument, write_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--labels", required=True, metavar="N|FILE", help="label count, or a file of label names (one per line)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new head's initialisation (default 0)")
    parser.add_argument("--features", metavar="NAME", help="tensor the new head reads (overrides head finding)")
    parser.add_argument("--init-from-old", metavar="MAP", help="JSON or text map label -> old class index; those rows copy the old classifier")
    add_preprocess_args(parser)
    add_target_args(parser)
    add_to_argument(parser)
    add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    from graphfix.commands._data import preprocess_for
    from graphfix.surgery import parse_labels_arg, swap_head

    start = time.perf_counter()
    side = [f for f in (args.labels, args.init_from_old) if f and os.path.isfile(f)]
    out = output_path(args.output, default_output(args.model, "-multilabel"), model_files(args.model, args.params, args.weights) + side)
    labels = parse_labels_arg(args.labels)
    model = load_model(args)
    preprocess_for(model, args, [], head="new")
    new = swap_head(model, labels=labels, seed=args.seed, features=args.features, init_from_old=args.init_from_old)
    exported = write_output(args, new, out)
    seconds = time.perf_counter() - start
    head = new.metadata["head"]
    doc = {
        "ok": True,
        "command": "swap-head",
        "model": args.model,
        "output": out,
        "labels": labels,
        "head": head,
        "outputs": new.io_info()["outputs"],
        "export": exported,
        "seconds": round(seconds, 3),
    }
    text = [f"wrote {out}: {head['old_kind']} head on {head['features']} (F={head['num_features']}) "
            f"replaced by Gemm+Sigmoid with {len(labels)} labels ({seconds:.2f} s)"]
    if head.get("dropped_state"):
        text.append(f"dropped the old head's graphfix.{', graphfix.'.join(head['dropped_state'])} metadata: "
                    "the new head is untrained (run `graphfix train-head`)")
    emit(args, doc, [*text, *export_lines(exported)])
    return 0
