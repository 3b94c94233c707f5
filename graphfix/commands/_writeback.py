"""`--to onnx|mxnet|caffe`: the one place a command writes its model, as ONNX or back in the
source's own format (see `graphfix.convert.writeback`)."""

from __future__ import annotations

__all__ = ["add_to_argument", "check_output", "write_output"]

import argparse
import os
from typing import Any

from graphfix.errors import GraphfixError


def add_to_argument(parser: argparse.ArgumentParser) -> None:
    """--to and --source."""
    parser.add_argument(
        "--to", choices=("onnx", "mxnet", "caffe"), default="onnx",
        help="output format (default onnx); mxnet/caffe write the source's own format with -o as PREFIX",
    )
    parser.add_argument(
        "--source", action="append", metavar="FILE|DIR",
        help="with --to mxnet|caffe: where the source files are (default: beside MODEL); checked by sha256",
    )


def check_output(args: argparse.Namespace, model) -> None:
    """What `write_output` will need, checked before the command's expensive work: --to with
    --target/--fp16, --to's source files (present, unchanged: sha256 against graphfix.source),
    and with --train-from, that the source can hold every weight fine-tuning will change."""
    to = getattr(args, "to", "onnx")
    if to == "onnx":
        return
    _check_target(args, to)
    from graphfix.convert.writeback import find_sources

    find_sources(model, to, _sources(args, model))
    if getattr(args, "train_from", None):
        _check_train_from(args, model, to)


def _check_train_from(args: argparse.Namespace, model, to: str) -> None:
    """The initializers `--train-from` will train (and those it will untie: also read before the
    cut) checked against the source's params/blobs (`graphfix.convert.writeback.check_tunable`)."""
    from graphfix.convert.writeback import check_tunable
    from graphfix.train.finetune import resolve_train_from, segment_nodes, train_from_candidates

    tensor = resolve_train_from(model, args.train_from)
    members = {id(n) for n in segment_nodes(model, tensor)}
    trained = next((c["trains"] for c in train_from_candidates(model, limit=None) if c["tensor"] == tensor), [])
    inits = model.ir.graph.initializers
    shared = [n for n in trained if any(id(u.node) not in members for u in inits[n].uses())]
    check_tunable(model, to, _sources(args, model), trained, shared)


def _check_target(args: argparse.Namespace, to: str) -> None:
    if getattr(args, "target", None) or getattr(args, "fp16", False):
        raise GraphfixError(f"--target/--fp16 write ONNX; they do not combine with --to {to}", kind="usage")


def _sources(args: argparse.Namespace, model) -> list[str] | None:
    """--source, else --params/--weights and the folder of the model's own file."""
    if args.source:
        return args.source
    given = [p for p in (getattr(args, "params", None), getattr(args, "weights", None)) if p]
    return given + ([os.path.dirname(os.path.abspath(model.path))] if model.path else []) or None


def write_output(args: argparse.Namespace, model, out: str, *, also=None, **export: Any) -> dict[str, Any] | None:
    """Write `model` to `out` as ONNX (`write_model`: --target etc.), or as PREFIX files for --to.

    `also(files)` writes more files (a report) into the same `graphfix.output.OutputSet` as the
    model's files: all are committed together, or none. `export` goes to `write_model`
    (parity_data, preprocess).
    """
    from graphfix.commands._options import write_model

    to = getattr(args, "to", "onnx")
    if to == "onnx":
        return write_model(args, model, out, also=also, **export)
    _check_target(args, to)  # the sources are found (again: they may have changed) by write_back
    from graphfix.commands._options import store_preprocess
    from graphfix.convert.writeback import write_back

    model = store_preprocess(args, model, prefix_of(out))  # the sidecar holds what is stored
    from graphfix.output import OutputSet

    with OutputSet() as files:
        written = write_back(model, prefix_of(out), to, sources=_sources(args, model), into=files)
        if also is not None:
            also(files)
    return written


def prefix_of(out: str) -> str:
    """The PREFIX of a write-back: `out` without a trailing `.onnx` (the default output name)."""
    return out[: -len(".onnx")] if out.endswith(".onnx") else out
