"""Option groups shared by the subcommands, and the one way they print results."""

from __future__ import annotations

__all__ = ["add_model_args", "add_output_args", "load_model", "emit", "default_output"]

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from graphfix.errors import GraphfixError
from graphfix.jsonout import jsonable


def add_model_args(parser: argparse.ArgumentParser, *, nargs: str | None = None) -> None:
    """MODEL plus the options that locate its weights and shapes."""
    parser.add_argument("model", metavar="MODEL", nargs=nargs, help="x-symbol.json, deploy.prototxt or x.onnx")
    parser.add_argument("--params", help="MXNet .params (default: highest epoch beside the JSON)")
    parser.add_argument("--weights", help="Caffe .caffemodel (default: the one beside the prototxt)")
    parser.add_argument(
        "--input-shape", action="append", metavar="NAME:D,D,...",
        help="input shape where the file stores none, e.g. data:1,3,224,224 (batch stays dynamic)",
    )
    parser.add_argument("--outputs", help="Caffe: cut the graph at these blobs (NAME,...)")


def add_output_args(parser: argparse.ArgumentParser, *, output: bool = True) -> None:
    """-o/--output, --json and -q."""
    if output:
        parser.add_argument("-o", "--output", metavar="OUT", help="output file")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def load_model(args: argparse.Namespace, path: str | None = None):
    """`graphfix.load` with the MODEL options of `add_model_args`."""
    from graphfix.convert import load

    outputs = [s for s in args.outputs.split(",") if s] if getattr(args, "outputs", None) else None
    return load(
        path or args.model,
        params=getattr(args, "params", None),
        weights=getattr(args, "weights", None),
        input_shape=getattr(args, "input_shape", None),
        outputs=outputs,
    )


def default_output(model_path: str, suffix: str) -> str:
    """`<stem><suffix>.onnx` beside the input (stem without -symbol / .prototxt)."""
    p = Path(model_path)
    stem = p.name
    for ext in ("-symbol.json", ".json", ".prototxt", ".onnx"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    return str(p.with_name(f"{stem}{suffix}.onnx"))


def check_output_path(out: str, inputs: list[str]) -> None:
    """Refuse to overwrite an input file or write into a missing folder."""
    out_abs = os.path.abspath(out)
    if any(os.path.abspath(i) == out_abs for i in inputs if i):
        raise GraphfixError("output would overwrite an input file", kind="usage", path=out)
    parent = os.path.dirname(out_abs)
    if not os.path.isdir(parent):
        raise GraphfixError("output folder does not exist", kind="usage", path=out)


def emit(args: argparse.Namespace, doc: dict[str, Any], text: list[str] | str) -> None:
    """Print `doc` as JSON with --json, else the human `text` unless -q."""
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, default=jsonable))
    elif not getattr(args, "quiet", False):
        lines = [text] if isinstance(text, str) else text
        for line in lines:
            print(line)
    sys.stdout.flush()


def add_target_args(parser: argparse.ArgumentParser) -> None:
    """--target/--fp16: write a deployable model in the same command (see `graphfix export`)."""
    parser.add_argument("--target", choices=("cpu", "cuda", "tensorrt"),
                        help="export for this target (export passes, parity check, readiness check)")
    parser.add_argument("--fp16", action="store_true", help="with --target: float16 inside the graph, fp32 I/O and head")


def write_model(args: argparse.Namespace, model, out: str) -> dict[str, Any] | None:
    """Save `model` to `out`, or export it for `--target`; returns the export summary.

    Raises:
        GraphfixError: kind "parity" (nothing written) when the export changes the outputs, or
            kind "not_ready" (the model is written) when the readiness check has a FAIL.
    """
    if not getattr(args, "target", None):
        if getattr(args, "fp16", False):
            raise GraphfixError("--fp16 needs --target", kind="usage")
        model.save(out)
        return None
    from graphfix.convert.export import export

    result = export(model, out, target=args.target, fp16=args.fp16)
    summary = {
        "target": args.target,
        "fp16": args.fp16,
        "parity": result.parity,
        "ready": result.report.ok if result.report is not None else None,
        "findings": [f.to_dict() for f in result.report.findings] if result.report is not None else [],
    }
    if result.report is not None and not result.report.ok:
        fails = ", ".join(sorted({f.id for f in result.report.failures}))
        raise GraphfixError(f"written, but not ready for {args.target}: FAIL {fails} (see `graphfix check`)", kind="not_ready", path=out)
    return summary
