"""The data options turned into values when a data command runs: the Preprocess, progress, data-set paths.

Imported when the command runs (it loads NumPy); the option definitions are in `_options`."""

from __future__ import annotations

__all__ = [
    "preprocess_for", "progress_for", "parse_floats", "check_data_path", "load_data", "skipped_list_path",
    "record_skipped", "report_skipped", "warn_skipped",
]

import argparse
import os
import sys
from typing import Any, Sequence

from graphfix.data.datasets import Dataset
from graphfix.data.images import Preprocess, show_values
from graphfix.errors import GraphfixError


def parse_floats(text: str | None, what: str) -> list[float] | None:
    """`"0.485,0.456,0.406"` -> floats (None stays None)."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise GraphfixError(f"bad {what} {text!r}", kind="usage", hint="comma-separated numbers") from exc


#: Preprocessing key -> the flag that sets it, and its name in messages.
_FLAGS = {"size": "--size", "mean": "--mean", "std": "--std", "scale": "--scale", "channel_order": "--bgr"}
_NAMES = {"size": "size", "mean": "mean", "std": "std", "scale": "scale", "channel_order": "channel order",
          "pixel_range": "pixel range"}


def preprocess_for(
    model: Any, args: argparse.Namespace, paths: list[str | None], *, head: str = "keep", writes: bool = True,
) -> Preprocess | None:
    """The Preprocess for image inputs: the model's stored `graphfix.preprocess`, with the flags.

    The one place the preprocessing flags meet the model (see DESIGN.md, "The model carries the
    pipeline's state"). A flag that differs from a stored value is refused (usage error naming
    both) once the head was trained on the stored values: `graphfix.training` is present and the
    command keeps that head (`head="keep"`), or re-fits only the head of a fine-tuned backbone
    (`head="fit"` after `--train-from`); `head="new"` (a swapped head) never refuses. Otherwise
    the flags win, and a command that `writes` a model stores the whole preprocessing in it
    (`args.preprocess_store`, written and announced by `_options.store_preprocess`): when flags
    were given, or when it trains (`head="fit"`) on images. A command that writes no model says
    that a flag replaced a stored value for this run only. A features folder (`graphfix
    features`) made with other preprocessing than the result is refused.

    Returns:
        The Preprocess, or None when no input is an image and no flag was given (also when none
        can be made, e.g. no size known, and no input needs one).
    """
    from graphfix.commands._options import note
    from graphfix.data.images import describe_preprocess, stored_preprocess

    recorded = {p: r for p, r in ((p, _recorded(p)) for p in paths if p and os.path.isdir(p)) if r}
    images = any(p and not str(p).lower().endswith(".npz") and not os.path.isdir(p) for p in paths)
    needs = images or bool(recorded)
    given = _given(args)
    meta = dict(getattr(model, "preprocess", None) or {})
    if meta.get("baked") and given:  # no flag applies to a graph that holds its preprocessing
        Preprocess.for_model(model, **given)
    changed = [(key, meta[key], value) for key, value in given.items()
               if meta.get(key) is not None and not _same(meta[key], value)]
    training = model.metadata.get("training") if hasattr(model, "metadata") else None
    if changed and training is not None and (head == "keep" or (head == "fit" and training.get("train_from"))):
        flags = " and ".join(_flag(k, new) for k, _, new in changed)
        stored = " and ".join(f"{_NAMES[k]} {show_values(old)}" for k, old, _ in changed)
        raise GraphfixError(
            f"{flags} {'differs' if len(changed) == 1 else 'differ'} from the stored {stored} the head was trained on",
            kind="usage", path=getattr(model, "path", None),
            hint="leave the flag out to use the stored values, or train a head on the new ones from the swapped model",
        )
    if not needs and not given:
        return None
    try:
        prep = Preprocess.for_model(model, **given, max_pixels=getattr(args, "max_pixels", None))
    except GraphfixError:
        if images or given:
            raise
        return None
    for folder, rec in recorded.items():
        _check_recorded(folder, rec, prep)
    replaced = ", ".join(f"{_flag(k, new)} replaces {_NAMES[k]} {show_values(old)}" for k, old, new in changed)
    if writes and (given or (head == "fit" and needs)):
        new_meta = stored_preprocess(meta, prep)
        if new_meta != meta:
            args.preprocess_store = (new_meta, describe_preprocess(new_meta) + (f" ({replaced})" if replaced else ""))
    elif not writes and changed:
        note(args, f"{replaced} for this run only (this command writes no model)")
    return prep


def _given(args: argparse.Namespace) -> dict[str, Any]:
    """The preprocessing flags given, as `graphfix.preprocess` values."""
    size = parse_floats(args.size, "--size")
    given = {
        "size": [int(v) for v in size] if size else None,
        "mean": parse_floats(args.mean, "--mean"),
        "std": parse_floats(args.std, "--std"),
        "scale": args.scale,
        "channel_order": "BGR" if args.bgr else None,
    }
    return {key: value for key, value in given.items() if value is not None}


def _flag(key: str, value: Any) -> str:
    """`--mean 0,0,0`, or `--bgr`."""
    return _FLAGS[key] if key == "channel_order" else f"{_FLAGS[key]} {show_values(value)}"


def _recorded(folder: str) -> dict[str, Any] | None:
    """The preprocessing a features folder's images were read with (None: not a features folder,
    or made from arrays)."""
    from graphfix.data.shards import is_shard_dir, read_manifest

    return read_manifest(folder).get("preprocess") if is_shard_dir(folder) else None


def _check_recorded(folder: str, rec: dict[str, Any], prep: Preprocess) -> None:
    """Refuse features made with other preprocessing than the command uses (usage error naming both)."""
    from graphfix.data.images import PREPROCESS_KEYS

    now = prep.stored()
    diff = [k for k in PREPROCESS_KEYS if k in rec and not _same(rec[k], now[k])]
    if diff:
        made = " and ".join(f"{_NAMES[k]} {show_values(rec[k])}" for k in diff)
        used = " and ".join(f"{_NAMES[k]} {show_values(now[k])}" for k in diff)
        raise GraphfixError(f"the features were extracted with {made}, but this command uses {used}", kind="usage",
                            path=folder, hint="give the preprocessing flags the features were extracted with, "
                                              "or extract them again")


def _same(stored: Any, given: Any) -> bool:
    """A stored value equals a flag's (one mean for all channels equals three equal ones)."""
    import numpy as np

    if isinstance(stored, str) or isinstance(given, str):
        return str(stored).upper() == str(given).upper()
    a, b = np.atleast_1d(np.asarray(stored, np.float64)), np.atleast_1d(np.asarray(given, np.float64))
    try:
        a, b = np.broadcast_arrays(a, b)
    except ValueError:
        return False
    return bool(np.allclose(a, b, rtol=1e-9, atol=0.0))


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


def report_skipped(args: argparse.Namespace, out: str | None, datasets: Sequence[Dataset | None], *,
                   into: Any = None) -> dict | None:
    """After the output is written: the rows `--skip-bad` left out go to `skipped_list_path(out)`
    and one line on stderr says how many and where (`warn_skipped`). Returns the `--json` field
    ({"count", "list", "rows"}), or None when nothing was left out. With `into` (an open
    `graphfix.output.OutputSet`) the list is staged there, committed with the output, and the
    caller warns once the set is committed (an error must stay the only line)."""
    from graphfix.data.datasets import save_skipped

    rows = [r for d in datasets if d is not None for r in d.skipped]
    if not rows:
        return None
    dest = skipped_list_path(out) if out else None
    if dest:
        save_skipped(rows, into.path(dest) if into is not None else dest)
    doc = {"count": len(rows), "list": dest, "rows": [str(r) for r in rows]}
    if into is None:
        warn_skipped(args, doc)
    return doc


def warn_skipped(args: argparse.Namespace, doc: dict | None) -> None:
    """The one stderr line of `report_skipped`'s result: how many rows were left out and where (unless -q)."""
    if not doc or getattr(args, "quiet", False):
        return
    rows = doc["rows"]
    where = f"listed in {doc['list']}" if doc["list"] else "first: " + "; ".join(rows[:3]) + (
        " ..." if len(rows) > 3 else "")
    print(f"graphfix: warning: --skip-bad left out {len(rows)} row{'s' if len(rows) != 1 else ''} "
          f"with a bad image, {where}", file=sys.stderr)
