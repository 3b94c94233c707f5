"""Option groups shared by the subcommands, and the one way they print results."""

from __future__ import annotations

__all__ = [
    "add_model_args", "add_data_args", "add_output_args", "add_target_args", "load_model", "model_files", "check_input",
    "output_path", "emit", "default_output", "write_model", "positive_int", "positive_float",
]

import argparse
import glob
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

from graphfix.errors import GraphfixError
from graphfix.limits import DEFAULT_MAX_PIXELS
from graphfix.jsonout import jsonable


def positive_int(text: str) -> int:
    """argparse type of a count or size (batch size, threads, rows, pixels): an integer >= 1, so a
    0 or a negative one is a usage error (exit 2) when the command line is read, not a fault later."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type of a positive number (seconds, megabytes)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return value


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


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--size --mean --std --scale --bgr, feature batch size, workers and cache switches."""
    g = parser.add_argument_group("images and features")
    g.add_argument("--size", metavar="H,W", help="resize images to H,W (default: graphfix.preprocess or the input shape)")
    g.add_argument("--mean", metavar="M[,M,M]", help="subtracted from pixels 0..255 (default: metadata or 0)")
    g.add_argument("--std", metavar="S[,S,S]", help="divisor, last (default: metadata or 1)")
    g.add_argument("--scale", type=float,
                   help="multiplier after the mean: x = (pixel - mean) * scale / std (default: metadata or 1/255)")
    g.add_argument("--bgr", action="store_true", default=None, help="feed channels in BGR order")
    g.add_argument("--batch-size", type=positive_int, default=64, help="images per onnxruntime call (default 64)")
    g.add_argument("--workers", type=positive_int, default=None, help="image decoding threads (default: up to 8)")
    g.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help=f"refuse images over N pixels (width x height) before decoding (default {DEFAULT_MAX_PIXELS})")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")


def add_ray_arg(parser: argparse.ArgumentParser, more: str = "") -> None:
    """--ray [ADDRESS]: absent -> args.ray is None; bare --ray -> "local" (start a local Ray);
    "auto" or host:port / ray://... joins a cluster. Pass args.ray to graphfix.scale.init_ray.
    `more` is appended to the help (what --ray means for this command)."""
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run on Ray: no ADDRESS starts a local Ray with this machine's CPUs; "
                             "'auto' or host:port joins a cluster (needs graphfix[ray])" + more)


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
    model_files(path or args.model, getattr(args, "params", None), getattr(args, "weights", None))
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


def check_input(path: str, what: str = "file") -> None:
    """Refuse a missing input or one that is not a regular file (a FIFO is never opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise GraphfixError(f"no such {what}", path=path) from None
    except OSError as exc:
        raise GraphfixError(f"cannot read ({exc.strerror})", path=path) from exc
    if stat.S_ISDIR(st.st_mode):
        raise GraphfixError(f"is a folder, not a {what}", path=path)
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device or socket"
        raise GraphfixError(f"is {kind}, not a regular file", path=path)


def model_files(path: str, params: str | None = None, weights: str | None = None) -> list[str]:
    """The files a model is read from, found as the loaders find them, without reading any:
    MXNet's JSON and every `<prefix>-NNNN.params` (or `--params`), Caffe's prototxt and its
    caffemodel (`--weights`, or the only one beside it). Each must be a regular file."""
    files = [path]
    name = os.path.basename(path)
    folder = os.path.dirname(path) or "."
    if params:
        files.append(params)
    elif name.lower().endswith(".json"):
        prefix = name[: -len("-symbol.json")] if name.endswith("-symbol.json") else name[: -len(".json")]
        found = glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + "-*.params"))
        files += sorted(found) + glob.glob(os.path.join(glob.escape(folder), glob.escape(prefix) + ".params"))
    if weights:
        files.append(weights)
    elif name.lower().endswith((".prototxt", ".pbtxt")):
        found = sorted(glob.glob(os.path.join(glob.escape(folder), "*.caffemodel")))
        files += found if len(found) == 1 else []
    for f in files:
        check_input(f, "model file" if f == path else "weights file")
    return files


def output_path(out: str | None, default: str, inputs: list[str | None]) -> str:
    """The checked destination: `out`, or `default` when `out` is None; an existing folder
    `out` gets `default`'s name inside it. Called before any input is read."""
    from graphfix.output import check_output

    return check_output(out or default, inputs, default_name=os.path.basename(default))


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


def write_model(args: argparse.Namespace, model, out: str, *, also=None) -> dict[str, Any] | None:
    """Save `model` to `out`, or export it for `--target`; returns the export summary.

    `also(files)`, if given, writes more files into the same `graphfix.output.OutputSet`: the
    model and those files appear together or not at all.

    Raises:
        GraphfixError: kind "parity" (nothing written) when the export changes the outputs, or
            kind "not_ready" (the files are written) when the readiness check has a FAIL.
    """
    from graphfix.output import OutputSet

    target = getattr(args, "target", None)
    if not target and getattr(args, "fp16", False):
        raise GraphfixError("--fp16 needs --target", kind="usage")
    result = None
    with OutputSet([out]) as files:
        staged = files.path(out)
        if not target:
            model.save(staged)
        else:
            from graphfix.convert.export import export

            try:
                result = export(model, staged, target=target, fp16=args.fp16)
            except GraphfixError as exc:
                if exc.path == staged:
                    exc.path = out
                    exc.args = (exc.one_line(),)
                raise
        if also is not None:
            also(files)
    if result is None:
        return None
    summary = {
        "target": target,
        "fp16": args.fp16,
        "parity": result.parity,
        "ready": result.report.ok if result.report is not None else None,
        "findings": [f.to_dict() for f in result.report.findings] if result.report is not None else [],
    }
    if result.report is not None and not result.report.ok:
        fails = ", ".join(sorted({f.id for f in result.report.failures}))
        raise GraphfixError(f"written, but not ready for {target}: FAIL {fails} (see `graphfix check`)", kind="not_ready", path=out)
    return summary
