"""The data options turned into values when a data command runs: the Preprocess, progress, data-set paths.

Imported when the command runs (it loads NumPy); the option definitions are in `_options`."""

from __future__ import annotations

__all__ = [
    "preprocess_for", "progress_for", "parse_floats", "check_data_path", "load_data", "skipped_list_path",
    "record_skipped", "report_skipped",
]

import argparse
import os
import sys
from typing import Any, Sequence

from graphfix.data.datasets import Dataset
from graphfix.data.images import Preprocess
from graphfix.errors import GraphfixError


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """`"0.485,0.456,0.406"` -> floats (None stays None)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise GraphfixError(f"bad {what} {text!r}", kind="usage", hint="comma-separated numbers") from exc


def preprocess_for(model: Any, args: argparse.Namespace, paths: list[str | None]) -> Preprocess | None:
    """The Preprocess for image inputs (None when every input is an NPZ)."""
    needs = any(p and not str(p).lower().endswith(".npz") and not os.path.isdir(p) for p in paths)
    size = parse_floats(args.size, "--size")
    overrides = {
        "size": [int(v) for v in size] if size else None,
        "mean": parse_floats(args.mean, "--mean"),
        "std": parse_floats(args.std, "--std"),
        "scale": args.scale,
        "channel_order": "BGR" if args.bgr else None,
        "max_pixels": getattr(args, "max_pixels", None),
    }
    try:
        return Preprocess.for_model(model, **overrides)
    except GraphfixError:
        if needs:
            raise
        return None


def progress_for(args: argparse.Namespace) -> bool | None:
    """No bar with -q or --json; else only on a terminal."""
    return False if (getattr(args, "quiet", False) or getattr(args, "json", False)) else None


def check_data_path(path: str | None, flag: str) -> None:
    """A data set file, or a features folder (`graphfix features`)."""
    from graphfix.data.shards import is_shard_dir

    if path is not None and not os.path.isfile(path) and not is_shard_dir(path):
        raise GraphfixError(f"{flag}: no such data set file or features folder", path=path)


def skipped_list_path(out: str) -> str:
    """Where `--skip-bad` lists the rows it left out: beside the output, `<OUT without .onnx>.skipped.csv`
    (`trained.onnx` -> `trained.skipped.csv`, a folder `feats/` -> `feats.skipped.csv`)."""
    out = out.rstrip(os.sep) or out
    return (out[: -len(".onnx")] if out.endswith(".onnx") else out) + ".skipped.csv"


def load_data(args: argparse.Namespace, model: Any, prep: Preprocess | None, paths: Sequence[str | None],
              out: str | None, *, need_labels: bool = True) -> list[Dataset | None]:
    """The command's data sets read and checked (every CSV row, every image header) before any
    model runs; with `--skip-bad` bad images are left out (`Dataset.skipped`) and the list's
    destination beside `out` is checked now. None paths stay None."""
    from graphfix.commands._options import output_path
    from graphfix.data.datasets import load_dataset
    from graphfix.data.scores import model_labels

    skip = bool(getattr(args, "skip_bad", False))
    if skip and out:
        output_path(skipped_list_path(out), skipped_list_path(out), [p for p in paths if p])
    labels = model_labels(model)
    return [None if p is None else load_dataset(p, labels, prep, need_labels=need_labels, skip_bad=skip,
                                                workers=getattr(args, "workers", None)) for p in paths]


def record_skipped(model: Any, key: str, datasets: Sequence[Dataset | None]) -> None:
    """Add what `--skip-bad` left out (`skipped_summary`) to the model's `graphfix.<key>` metadata, in place."""
    from graphfix.data.datasets import skipped_summary
    from graphfix.model import set_metadata

    summary = skipped_summary(*datasets)
    if summary:
        set_metadata(model.ir, **{key: {**(model.metadata.get(key) or {}), "skipped": summary}})


def report_skipped(args: argparse.Namespace, out: str | None, datasets: Sequence[Dataset | None]) -> dict | None:
    """After the output is written: the rows `--skip-bad` left out go to `skipped_list_path(out)`
    and one line on stderr says how many and where (unless -q). Returns the `--json` field
    ({"count", "list", "rows"}), or None when nothing was left out."""
    from graphfix.data.datasets import save_skipped

    rows = [r for d in datasets if d is not None for r in d.skipped]
    if not rows:
        return None
    dest = skipped_list_path(out) if out else None
    if dest:
        save_skipped(rows, dest)
    if not getattr(args, "quiet", False):
        where = f"listed in {dest}" if dest else "first: " + "; ".join(str(r) for r in rows[:3]) + (
            " ..." if len(rows) > 3 else "")
        print(f"graphfix: warning: --skip-bad left out {len(rows)} row{'s' if len(rows) != 1 else ''} "
              f"with a bad image, {where}", file=sys.stderr)
    return {"count": len(rows), "list": dest, "rows": [str(r) for r in rows]}
