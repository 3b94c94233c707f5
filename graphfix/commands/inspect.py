"""Show a model: format, inputs/outputs, op histogram, and the head graphfix would replace.

Also the ranked candidate tensors for `--features` and, for a graphfix model, its state: head
state (untrained / trained / calibrated), labels, stored preprocessing, training summary and
thresholds. `--train-from` lists the tensors `train-head --train-from` accepts (nearest the head
first, with the initializers each would train).

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
    parser.add_argument("--train-from", action="store_true",
                        help="list the tensors `train-head --train-from` accepts (a graphfix model)")
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    from graphfix.convert import detect_format
    from graphfix.model import head_state
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
        "feature_candidates": _feature_candidates(model),
        "head_state": head_state(model),
        "metadata": model.metadata,
    }
    if args.train_from:
        doc["train_from_candidates"] = _train_from_candidates(model, args.model)
    text = [
        f"{os.path.basename(args.model)}: {doc['format']}, opset {doc['opset']}, IR {doc['ir_version']}, "
        f"{doc['nodes']} nodes, {doc['weight_bytes'] / 1e6:.2f} MB of weights",
        *[f"  input  {v['name']}: {v['dtype']} {_dims(v['shape'])}" for v in io["inputs"]],
        *[f"  output {v['name']}: {v['dtype']} {_dims(v['shape'])}" for v in io["outputs"]],
        "  ops: " + ", ".join(f"{k} x{v}" for k, v in doc["ops"].items()),
    ]
    if head:
        text.append(
            f"  head: {head['kind']} classifier {', '.join(head['classifier'])} -> softmax {head['softmax']}; "
            f"features {head['features']} {_dims(head['features_shape'])} (F={head['num_features']}, "
            f"old classes {head['num_classes']})"
        )
    else:
        text.append(f"  head: none ({head_error})")
    if doc["feature_candidates"]:
        text.append("  --features candidates, best first: "
                    + ", ".join(f"{c['name']} {_dims(c['shape'])}" for c in doc["feature_candidates"]))
    text += _state_lines(doc["metadata"], doc["head_state"])
    if args.train_from:
        found = doc["train_from_candidates"]
        text.append("  --train-from candidates, nearest the head first:" + ("" if found else " none"))
        text += [_candidate_line(c) for c in found]
    emit(args, doc, text)
    return 0


def _feature_candidates(model) -> list[dict]:
    """`graphfix.surgery.feature_candidates` on a copy with inferred shapes: [{name, shape}]."""
    from onnx_ir.passes.common import ShapeInferencePass

    from graphfix.surgery.head import feature_candidates

    work = model.copy()
    ShapeInferencePass(strict_mode=False)(work.ir)
    return [{"name": name, "shape": shape} for name, shape in feature_candidates(work.ir.graph)]


def _candidate_line(c: dict) -> str:
    """One `--train-from` candidate: what it trains, its parameters and activation size per image."""
    size = "?" if c["activation_bytes"] is None else _bytes(c["activation_bytes"])
    block = f"; = --train-from -{c['block']}" if c["block"] else ""
    return (f"    {c['tensor']}: {c['nodes']} nodes, {len(c['trains'])} trained initializers "
            f"({', '.join(c['trains'][:3])}{', ...' if len(c['trains']) > 3 else ''}), {c['parameters']:,} parameters, "
            f"activation {size} per image{block}")


def _bytes(n: int) -> str:
    """1536 -> '1.5 KB' (powers of 1024)."""
    for unit in ("B", "KB", "MB"):
        if n < 1024 or unit == "MB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} MB"


def _train_from_candidates(model, path: str) -> list[dict]:
    from graphfix.train.finetune import train_from_candidates

    try:
        return train_from_candidates(model)
    except GraphfixError as exc:
        if exc.kind != "no_head":
            raise
        raise GraphfixError("--train-from: the model has no graphfix head", kind="usage", path=path,
                            hint="run `graphfix swap-head` first") from None


def _state_lines(meta: dict, state: str | None) -> list[str]:
    """A graphfix model's state: head state, labels, preprocessing, training, thresholds."""
    from graphfix.commands.train_head import training_line

    lines = []
    if state is not None:
        lines.append(f"  head state: {state}")
    labels = meta.get("labels")
    if labels:
        lines.append(f"  labels ({len(labels)}): {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}")
    prep = meta.get("preprocess")
    if isinstance(prep, dict):
        from graphfix.data.images import describe_preprocess

        baked = " (baked into the graph: the input takes uint8 pixels)" if prep.get("baked") else ""
        lines.append("  preprocessing: " + describe_preprocess(prep) + baked)
    elif state is not None:
        lines.append("  preprocessing: none stored")
    training = meta.get("training")
    if isinstance(training, dict):
        lines.append("  training: " + training_line(training))
    thresholds = meta.get("thresholds")
    if isinstance(thresholds, list) and thresholds:
        calib = meta.get("calibration") or {}
        names = labels if labels and len(labels) == len(thresholds) else [str(j) for j in range(len(thresholds))]
        shown = ", ".join(f"{n} {t:.4g}" for n, t in list(zip(names, thresholds))[:10])
        lines.append(f"  thresholds ({calib.get('objective', 'stored')}): {shown}{' ...' if len(thresholds) > 10 else ''}")
    return lines


def _dims(shape) -> str:
    """[batch,3,224,224] (None for an unknown rank: "?")."""
    return "?" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"
