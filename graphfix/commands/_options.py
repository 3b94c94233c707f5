"""Option groups shared by the subcommands, and the one way they print results."""

from __future__ import annotations

__all__ = [
    "add_model_args", "add_preprocess_args", "add_data_args", "add_output_args", "add_target_args", "add_fp16_arg",
    "fp16_mode", "FP16_HELP", "load_model", "model_files", "check_input", "output_path", "emit", "note",
    "store_preprocess", "default_output", "write_model", "export_lines", "parity_lines", "note_lines",
    "positive_int", "positive_float",
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


def add_preprocess_args(parser: argparse.ArgumentParser) -> None:
    """--size --mean --std --scale --bgr: how an image becomes the input, stored in the model.

    Every command that reads images or writes a model takes them (`commands._data.preprocess_for`
    turns them into values and decides what is stored)."""
    g = parser.add_argument_group(
        "preprocessing", "how an image becomes the input: the first command given these stores them in the model it "
        "writes (graphfix.preprocess) and later commands read them from there; once the head is trained, values "
        "that differ from the stored ones are refused",
    )
    g.add_argument("--size", metavar="H,W", help="resize images to H,W (default: stored, else the input shape)")
    g.add_argument("--mean", metavar="M[,M,M]", help="subtracted from pixels 0..255 (default: stored, else 0)")
    g.add_argument("--std", metavar="S[,S,S]", help="divisor, last (default: stored, else 1)")
    g.add_argument("--scale", type=float,
                   help="multiplier after the mean: x = (pixel - mean) * scale / std (default: stored, else 1/255)")
    g.add_argument("--bgr", action="store_true", default=None, help="feed channels in BGR order (default: stored, else RGB)")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """The preprocessing options, then feature batch size, workers and cache switches."""
    add_preprocess_args(parser)
    g = parser.add_argument_group("images and features")
    g.add_argument("--batch-size", type=positive_int, default=64, help="images per onnxruntime call (default 64)")
    g.add_argument("--workers", type=positive_int, default=None, help="image decoding threads (default: up to 8)")
    g.add_argument("--max-pixels", type=positive_int, default=None, metavar="N",
                   help=f"refuse images over N pixels (width x height) before decoding (default {DEFAULT_MAX_PIXELS})")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")
    g.add_argument("--skip-bad", action="store_true",
                   help="leave out CSV rows whose image is missing or unreadable instead of refusing the data set; "
                        "says how many and lists them in OUT.skipped.csv beside the output (CSV errors still refuse)")


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


def note(args: argparse.Namespace, text: str) -> None:
    """A one-line notice, shown by `emit` once the command succeeded: `graphfix: note: TEXT` on
    stderr (nothing with -q), or in the --json document's "notices" list."""
    notices = getattr(args, "notices", None)
    if notices is None:
        notices = args.notices = []
    notices.append(text)


def store_preprocess(args: argparse.Namespace, model, out: str):
    """`model` with the `graphfix.preprocess` that `commands._data.preprocess_for` chose to store
    (once per command), and a notice naming `out`; `model` itself when there is nothing to store."""
    pending = getattr(args, "preprocess_store", None)
    if pending is None:
        return model
    args.preprocess_store = None
    meta, text = pending
    note(args, f"stored preprocessing in {out}: {text}")
    return model.with_metadata(preprocess=meta)


def emit(args: argparse.Namespace, doc: dict[str, Any], text: list[str] | str) -> None:
    """Print `doc` as JSON with --json, else the human `text` unless -q (notices go first, on
    stderr, or into the document)."""
    notices = getattr(args, "notices", None) or []
    if getattr(args, "json", False):
        print(json.dumps({**doc, "notices": notices} if notices else doc, indent=2, default=jsonable))
    elif not getattr(args, "quiet", False):
        for line in notices:
            print(f"graphfix: note: {line}", file=sys.stderr)
        lines = [text] if isinstance(text, str) else text
        for line in lines:
            print(line)
    sys.stdout.flush()


#: The one help text of --fp16, in every command that takes it.
FP16_HELP = ("float16 inside the exported graph (fp32 inputs, outputs and head), checked for parity; "
             "`--fp16 auto` also keeps in fp32 the fewest nodes that bring parity within tolerance")


def fp16_mode(text: str) -> str:
    """The value of `--fp16 VALUE`: only "auto" (a bare --fp16 is True)."""
    if text.lower() != "auto":
        raise argparse.ArgumentTypeError(f"expected nothing or 'auto', not {text!r} (write --fp16 after MODEL)")
    return "auto"


def add_fp16_arg(parser: argparse.ArgumentParser) -> None:
    """--fp16 [auto]: args.fp16 is False, True or "auto" (see `graphfix.convert.export.export`)."""
    parser.add_argument("--fp16", nargs="?", const=True, default=False, type=fp16_mode, metavar="auto", help=FP16_HELP)


def add_target_args(parser: argparse.ArgumentParser) -> None:
    """--target/--fp16: write a deployable model in the same command (see `graphfix export`)."""
    parser.add_argument("--target", choices=("cpu", "cuda", "tensorrt"),
                        help="export for this target (export passes, parity check, readiness check)")
    add_fp16_arg(parser)


def write_model(args: argparse.Namespace, model, out: str, *, also=None, parity_data: Any = None,
                preprocess: Any = None) -> dict[str, Any] | None:
    """Save `model` to `out`, or export it for `--target`/`--fp16`; returns the export summary.

    `also(files)`, if given, writes more files into the same `graphfix.output.OutputSet`: the
    model and those files appear together or not at all. `parity_data` (a CSV/NPZ path, with
    `preprocess` for its images) is the command's own data: its first rows are the parity
    inputs of the export (a features folder gives none; the model's seeded inputs are used).

    Raises:
        GraphfixError: kind "parity" (nothing written; the hint says what to run) when the
            export changes the outputs, or kind "not_ready" (the files are written) when the
            readiness check has a FAIL.
    """
    from graphfix.output import OutputSet

    target = getattr(args, "target", None)
    fp16 = getattr(args, "fp16", False)
    if not target and fp16:
        raise GraphfixError("--fp16 needs --target", kind="usage")
    model = store_preprocess(args, model, out)
    samples = source = None
    if target and parity_data is not None:
        from graphfix.convert.export._parity import dataset_feeds

        found = dataset_feeds(model, parity_data, preprocess)
        if found is not None:
            samples, source = found
    result = None
    with OutputSet([out]) as files:
        staged = files.path(out)
        if not target:
            model.save(staged)
        else:
            from graphfix.convert.export import export

            try:
                result = export(model, staged, target=target, fp16=fp16, sample_inputs=samples, sample_source=source)
            except GraphfixError as exc:  # (one about the staged file names `out`: OutputSet)
                if exc.kind == "parity" and fp16 is True and not getattr(args, "no_cache", True):
                    exc.hint = f"{exc.hint}; the backbone features are cached, so the data is not run again"
                exc.args = (exc.one_line(),)
                raise
        if also is not None:
            also(files)
    if result is None:
        return None
    summary = {
        "target": target,
        "fp16": fp16,
        "parity": result.parity,
        "notes": result.notes,
        "ready": result.report.ok if result.report is not None else None,
        "findings": [f.to_dict() for f in result.report.findings] if result.report is not None else [],
    }
    if result.report is not None and not result.report.ok:
        fails = ", ".join(sorted({f.id for f in result.report.failures}))
        raise GraphfixError(f"written, but not ready for {target}: FAIL {fails} (see `graphfix check`)", kind="not_ready", path=out)
    return summary


def export_lines(summary: dict[str, Any] | None) -> list[str]:
    """Human lines of `write_model`'s export summary (none when nothing was exported, or for
    what a `--to mxnet|caffe` write-back returns)."""
    if not summary or not summary.get("target"):
        return []
    mode = {True: ", fp16", "auto": ", fp16 auto"}.get(summary["fp16"], "")
    ready = {True: "ready", False: "NOT ready", None: "readiness not checked"}[summary["ready"]]
    lines = [f"exported for {summary['target']}{mode}: {ready}"]
    lines += note_lines(summary.get("notes") or {})
    if summary.get("parity") is not None:
        lines += parity_lines(summary["parity"])
    return lines


def parity_lines(parity: dict[str, Any]) -> list[str]:
    """The parity verdict, what was fed and the figures per output."""
    lines = [f"  parity ({'fp16' if parity['fp16'] else 'fp32'}) on {parity.get('inputs') or 'the seeded inputs'}: "
             f"{'ok' if parity['ok'] else 'FAILED'}"]
    for name, fig in parity["outputs"].items():
        if "error" in fig:
            lines.append(f"    {name}: {fig['error']}  OVER")
        elif "mismatches" in fig:
            lines.append(f"    {name}: {fig['mismatches']} mismatching values (they follow the probabilities)")
        else:
            lines.append(f"    {name}: max|diff| {fig['max_abs_diff']:.3g} (tolerance {fig['tolerance']:.3g})"
                         f"{'' if fig['ok'] else '  OVER'}")
    return lines


def note_lines(notes: dict[str, Any]) -> list[str]:
    """The export's fp16 and int64 notes as sentences (`ExportResult.notes`)."""

    def names(items: list[str], most: int = 6) -> str:
        return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")

    lines = []
    auto = notes.get("fp16_auto")
    if auto is not None:
        kept = f": {names(auto['kept_fp32'])}" if auto["kept_fp32"] else ""
        lines.append(f"  fp16 auto: {auto['kept_fp32_count']} of {auto['candidates']} nodes kept fp32 "
                     f"({auto['tries']} tries){kept}")
    if "fp16_converted_nodes" in notes:
        lines.append(f"  fp16: {notes['fp16_converted_nodes']} nodes converted")
    overflow = notes.get("fp16_overflow_kept_fp32") or []
    if overflow:
        lines.append(f"  fp16: {len(overflow)} {'node' if len(overflow) == 1 else 'nodes'} kept fp32, "
                     f"{'its' if len(overflow) == 1 else 'their'} weights exceed 65504: "
                     + names([f"{o['node']} ({o['initializer']} up to {o['max_abs']:.4g})" for o in overflow], 3))
    underflow = notes.get("fp16_underflow") or []
    if underflow:
        total = sum(u["flushed_to_zero"] for u in underflow)
        lines.append(f"  fp16: {total} weights below 6e-8 flushed to zero in {len(underflow)} initializers: "
                     + names([u["initializer"] for u in underflow], 3))
    int64 = notes.get("int64_out_of_range") or []
    if int64:
        lines.append("  int64 constants outside the int32 range: "
                     + names([f"{c['name']} ({c['min']} to {c['max']})" for c in int64], 3))
    known = {"fp16_auto", "fp16_converted_nodes", "fp16_overflow_kept_fp32", "fp16_underflow", "int64_out_of_range"}
    for key in sorted(set(notes) - known):
        lines.append(f"  {key.replace('_', ' ')}: see --json")
    return lines
