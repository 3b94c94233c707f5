"""Show a model: format, inputs/outputs, op histogram, and the head graphfix would replace.

Example: graphfix inspect resnet-18-symbol.json --json
"""

from __future__ import annotations

import argparse
import os

from graphfix.commands._options import add_model_args, add_output_args, emit, load_model
from graphfix.errors import GraphfixError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--features", metavar="NAME", help="report the head as if it read this tensor")
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    from graphfix.convert import detect_format
    from graphfix.surgery import find_head

    model = load_model(args)
    try:
        head = find_head(model, features=args.features).to_dict()
        head_error = None
    except GraphfixError as exc:
        if exc.kind not in ("no_head", "usage"):
            raise
        head, head_error = None, exc.one_line()
    io = model.io_info()
    doc = {
        "ok": True,
        "command": "inspect",
        "model": args.model,
        "format": detect_format(args.model),
        "opset": model.opset,
        "ir_version": model.ir.ir_version,
        "nodes": len(model.graph),
        "initializers": len(model.graph.initializers),
        "weight_bytes": model.weight_bytes(),
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "ops": model.op_histogram(),
        "head": head,
        "head_error": head_error,
        "metadata": model.metadata,
    }
    text = [
        f"{os.path.basename(args.model)}: {doc['format']}, opset {doc['opset']}, IR {doc['ir_version']}, "
        f"{doc['nodes']} nodes, {doc['weight_bytes'] / 1e6:.2f} MB of weights",
        *[f"  input  {v['name']}: {v['dtype']} {v['shape']}" for v in io["inputs"]],
        *[f"  output {v['name']}: {v['dtype']} {v['shape']}" for v in io["outputs"]],
        "  ops: " + ", ".join(f"{k} x{v}" for k, v in doc["ops"].items()),
    ]
    if head:
        text.append(
            f"  head: {head['kind']} classifier {head['classifier']} -> softmax {head['softmax']}; "
            f"features {head['features']} {head['features_shape']} (F={head['num_features']}, "
            f"old classes {head['num_classes']})"
        )
    else:
        text.append(f"  head: none ({head_error})")
    if model.labels:
        text.append(f"  labels ({len(model.labels)}): {', '.join(model.labels[:10])}{' ...' if len(model.labels) > 10 else ''}")
    emit(args, doc, text)
    return 0
