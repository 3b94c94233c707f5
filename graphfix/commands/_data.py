"""The data options turned into values when a data command runs: the Preprocess, progress, data-set paths.

Imported when the command runs (it loads NumPy); the option definitions are in `_options`."""

from __future__ import annotations

__all__ = ["preprocess_for", "progress_for", "parse_floats", "check_data_path"]

import argparse
import os
from typing import Any

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
