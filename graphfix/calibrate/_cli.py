"""Options shared by the train-head, calibrate and predict commands (data and preprocessing)."""

from __future__ import annotations

__all__ = ["add_data_args", "preprocess_for", "progress_for", "parse_floats"]

import argparse
import os
from typing import Any

from graphfix.calibrate.datasets import DEFAULT_MAX_PIXELS, Preprocess
from graphfix.errors import GraphfixError


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """`"0.485,0.456,0.406"` -> floats (None stays None)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise GraphfixError(f"bad {what} {text!r}", kind="usage", hint="comma-separated numbers") from exc


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--size --mean --std --scale --bgr, feature batch size, workers and cache switches."""
    g = parser.add_argument_group("images and features")
    g.add_argument("--size", metavar="H,W", help="resize images to H,W (default: graphfix.preprocess or the input shape)")
    g.add_argument("--mean", metavar="M[,M,M]", help="subtracted from pixels 0..255 (default: metadata or 0)")
    g.add_argument("--std", metavar="S[,S,S]", help="divisor, last (default: metadata or 1)")
    g.add_argument("--scale", type=float,
                   help="multiplier after the mean: x = (pixel - mean) * scale / std (default: metadata or 1/255)")
    g.add_argument("--bgr", action="store_true", default=None, help="feed channels in BGR order")
    g.add_argument("--batch-size", type=int, default=64, help="images per onnxruntime call (default 64)")
    g.add_argument("--workers", type=int, default=None, help="image decoding threads (default: up to 8)")
    g.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help=f"refuse images over N pixels (width x height) before decoding (default {DEFAULT_MAX_PIXELS})")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the feature cache")


def preprocess_for(model: Any, args: argparse.Namespace, paths: list[str | None]) -> Preprocess | None:
    """The Preprocess for image inputs (None when every input is an NPZ)."""
    needs = any(p and not str(p).lower().endswith(".npz") for p in paths)
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
    if path is not None and not os.path.isfile(path):
        raise GraphfixError(f"{flag}: no such data set file", path=path)
