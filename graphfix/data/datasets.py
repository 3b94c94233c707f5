"""Labelled data sets for train-head, calibrate and predict: CSV manifests of images, NPZ arrays.

Formats (DESIGN.md "Data sets"):

- CSV with a `path,labels` header: image paths relative to the CSV, labels `;`-separated names.
  Every row has both fields; an explicitly empty labels field (`img.png,`) means "no label".
- CSV with a `path,<name>,<name>,...` header: one 0/1 column per label (columns are matched to the
  model's labels by name, in any order).
- CSV with only a `path` column: unlabelled (predict, features).
- NPZ with `x` float32 [N, C, H, W] (already preprocessed) and `y` {0,1} [N, L].

One strict reader (`load_dataset`): UTF-8 with or without a BOM (Excel's "CSV UTF-8"); the header
and every row are checked (field count, empty path, unknown label, 0/1 values, the same image
listed twice, with the same labels or not: each image is listed once, since a repeat counts twice
in training and can sit on both sides of a CV split) and every problem is reported with its line
in one error. Rows whose every field is empty are ignored. Then every image's header is checked
(`graphfix.data.images.check_image`, on threads) and all bad images are reported in one error,
or left out with `skip_bad=True` (`Dataset.skipped`). Label names are checked by one function,
`label_name_problems`, here and for swap-head's label files.
"""

from __future__ import annotations

__all__ = [
    "Dataset", "BadRow", "load_dataset", "image_dataset", "LABEL_SEPARATOR", "label_name_problems", "problems_error",
    "skipped_summary", "save_skipped",
]

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from typing import Iterator, Sequence

import numpy as np

from graphfix.data.images import Preprocess, check_images, load_images
from graphfix.errors import GraphfixError

#: Separates label names in the `labels` field of a `path,labels` manifest.
LABEL_SEPARATOR = ";"
#: Problems listed in one error; the rest are counted.
MAX_LISTED = 20


@dataclass(frozen=True)
class BadRow:
    """A manifest row whose image cannot be used.

    Attributes:
        source: The manifest (CSV) it is in.
        line: Its line in the manifest.
        path: The image path as the manifest writes it.
        problem: What is wrong, e.g. "image not found".
    """

    source: str | None
    line: int | None
    path: str
    problem: str

    def __str__(self) -> str:
        where = os.path.basename(self.source) if self.source else "data set"
        return f"{where} line {self.line}: {self.path}: {self.problem}"


@dataclass
class Dataset:
    """Labels plus either arrays (NPZ, API) or image paths (CSV) decoded on demand.

    Attributes:
        y: uint8 [N, L] targets, columns in `labels` order.
        labels: Class names.
        x: float32 [N, C, H, W] model inputs, or None for an image manifest.
        paths: Image files (absolute), or None.
        preprocess: How `paths` become inputs (for features: how their images were read).
        source: The file it came from, if any.
        lines: The CSV line of each image (named in decoding errors), or None.
        features: Backbone features [N, F] read from a features folder (`graphfix features`),
            used in place of running the backbone; None otherwise.
        backbone: sha256 of the backbone that made `features`.
        origin: Fingerprint of the data set the features were extracted from.
        skipped: Rows left out because their image was bad (`load_dataset(skip_bad=True)`).
    """

    y: np.ndarray
    labels: list[str]
    x: np.ndarray | None = None
    paths: list[str] | None = None
    preprocess: Preprocess | None = None
    source: str | None = None
    lines: list[int] | None = None
    features: np.ndarray | None = None
    backbone: str | None = None
    origin: str | None = None
    skipped: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, labels: Sequence[str] | None = None) -> Dataset:
        """A data set from in-memory arrays (validated like an NPZ)."""
        x, y = _check_arrays(np.asarray(x), np.asarray(y), None)
        return cls(y=y, labels=list(labels) if labels else [str(j) for j in range(y.shape[1])], x=x)

    def take(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        """The rows `rows` of this data set, in that order: targets, and the inputs, image paths,
        CSV lines or features it holds (everything else as it is)."""
        idx = np.asarray(rows, dtype=np.intp)
        pick = [int(i) for i in idx]
        return replace(
            self, y=self.y[idx], x=None if self.x is None else self.x[idx],
            paths=None if self.paths is None else [self.paths[i] for i in pick],
            lines=None if self.lines is None else [self.lines[i] for i in pick],
            features=None if self.features is None else self.features[idx],
        )

    def fingerprint(self) -> str:
        """sha256 of what the features depend on: the arrays, or each image's path, size and mtime."""
        if self.features is not None:
            return self.origin or ""
        h = hashlib.sha256()
        if self.x is not None:
            h.update(repr((self.x.shape, str(self.x.dtype))).encode())
            h.update(np.ascontiguousarray(self.x).data)
        else:
            h.update(json.dumps(self.preprocess.to_dict() if self.preprocess else None, sort_keys=True).encode())
            for p in self.paths or []:
                try:
                    st = os.stat(p)
                except FileNotFoundError as exc:
                    raise GraphfixError("image not found", path=p) from exc
                h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def batches(self, batch_size: int, *, workers: int | None = None, start: int = 0,
                stop: int | None = None) -> Iterator[np.ndarray]:
        """Model inputs of rows start..stop-1 in batches of `batch_size` (images decoded batch by batch)."""
        if self.features is not None or (self.x is None and self.paths is None):
            raise GraphfixError("this data set holds features, not model inputs", path=self.source)
        stop = len(self) if stop is None else stop
        for i in range(start, stop, batch_size):
            end = min(stop, i + batch_size)
            if self.x is not None:
                yield self.x[i:end]
            else:
                assert self.paths is not None and self.preprocess is not None
                where = None
                if self.lines is not None:
                    name = os.path.basename(self.source or "data set")
                    where = [f"{name} line {n}" for n in self.lines[i:end]]
                yield load_images(self.paths[i:end], self.preprocess, workers=workers, where=where)


def _check_arrays(x: np.ndarray, y: np.ndarray, path: str | None) -> tuple[np.ndarray, np.ndarray]:
    if x.ndim < 2:
        raise GraphfixError(f"x must be [N, C, H, W], got shape {list(x.shape)}", path=path)
    if y.ndim != 2:
        raise GraphfixError(f"y must be [N, L], got shape {list(y.shape)}", path=path)
    if x.shape[0] != y.shape[0]:
        raise GraphfixError(f"x has {x.shape[0]} samples but y has {y.shape[0]}", path=path)
    if x.shape[0] == 0:
        raise GraphfixError("the data set is empty", path=path)
    if not np.issubdtype(x.dtype, np.number):
        raise GraphfixError(f"x has dtype {x.dtype}, expected float32", path=path)
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise GraphfixError("x contains NaN or infinity", path=path)
    yf = y.astype(np.float64)
    if np.isnan(yf).any():
        raise GraphfixError("y contains NaN", path=path)
    if not np.isin(yf, (0.0, 1.0)).all():
        raise GraphfixError("y must hold only 0 and 1", path=path)
    return x, y.astype(np.uint8)


def _check_count(n_data: int, labels: Sequence[str] | None, path: str) -> None:
    if labels is not None and n_data != len(labels):
        raise GraphfixError(
            f"the data set has {n_data} labels but the model has {len(labels)}", path=path,
            hint="the label columns must match the model's graphfix.labels",
        )


def load_dataset(
    path: str | os.PathLike,
    labels: Sequence[str] | None,
    preprocess: Preprocess | None = None,
    *,
    need_labels: bool = True,
    skip_bad: bool = False,
    workers: int | None = None,
) -> Dataset:
    """Load a CSV manifest, an NPZ file or a features folder (`graphfix features`).

    A CSV is checked whole before anything else: every row (one error listing each problem with
    its line), then every image's header (one error listing each bad image with its line).

    Args:
        path: `.csv`, `.npz` or a folder with a graphfix manifest.json.
        labels: The model's label names (the column order of `y`); None accepts the file's own.
        preprocess: How to decode images (CSV only; required there; its `max_pixels` bounds
            the images checked).
        need_labels: False also accepts unlabelled data (a CSV with only a `path` column, an NPZ
            with only `x`; `y` is then [N, 0]), as `predict` does.
        skip_bad: Leave out rows whose image is missing or unreadable (listed in
            `Dataset.skipped`) instead of refusing the data set. Manifest errors still refuse it.
        workers: Threads checking image headers (default: up to 16).

    Raises:
        GraphfixError: a bad manifest row or image (all of them listed), missing file, label
            count that disagrees with the model, empty set, NaN or non-0/1 values.
    """
    path = os.fspath(path)
    from graphfix.data.shards import is_shard_dir, load_features_dir

    if is_shard_dir(path):
        return load_features_dir(path, list(labels) if labels is not None else None)
    if not os.path.isfile(path):
        raise GraphfixError("no such data set file", path=path)
    if path.lower().endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as data:
                if "x" not in data or ("y" not in data and need_labels):
                    raise GraphfixError(f"NPZ needs arrays 'x' and 'y', found {sorted(data.files)}", path=path)
                x = data["x"]
                y = data["y"] if "y" in data else np.zeros((len(x), 0), np.uint8)
        except (OSError, ValueError) as exc:
            raise GraphfixError(f"cannot read NPZ ({exc})", path=path) from exc
        x, y = _check_arrays(x, y, path)
        if y.shape[1] or need_labels:
            _check_count(y.shape[1], labels, path)
        names = list(labels) if labels is not None else [str(j) for j in range(y.shape[1])]
        return Dataset(y=y, labels=names, x=x, source=path)
    if path.lower().endswith(".csv"):
        return _load_csv(path, labels, preprocess, need_labels, skip_bad, workers)
    raise GraphfixError("unknown data set format", path=path, kind="usage", hint="expected .csv or .npz")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def problems_error(problems: Sequence[str], path: str | os.PathLike | None, what: str, *, total: int | None = None,
                   kind: str = "bad_input", hint: str | None = None) -> GraphfixError:
    """One error listing `problems` (the first `MAX_LISTED`, then "... and N more"), e.g.
    `train.csv: 2 bad rows: line 3: ...; line 9: ...`; `what` is the singular noun counted,
    `total` how many there were in all ("2 bad images (of 3000)")."""
    listed = "; ".join(problems[:MAX_LISTED])
    more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    of = f" (of {total})" if total is not None else ""
    return GraphfixError(f"{_plural(len(problems), what)}{of}: {listed}{more}", kind=kind, path=path, hint=hint)


def label_name_problems(names: Sequence[str], places: Sequence[str] | None = None) -> list[str]:
    """What keeps label names from being matched in a manifest, one problem per bad name: empty,
    containing the separator `;`, a byte order mark or a line break, or repeating an earlier name.

    Args:
        names: The names (already stripped of surrounding spaces).
        places: Where each name was written (e.g. "line 3"), named in the problems; default
            "label 1", "label 2", ...
    """
    places = list(places) if places is not None else [f"label {i + 1}" for i in range(len(names))]
    problems: list[str] = []
    first: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            problems.append(f"{places[i]}: empty label name")
        elif LABEL_SEPARATOR in name:
            problems.append(f"{places[i]}: label {name!r} contains the separator {LABEL_SEPARATOR!r}")
        elif "\ufeff" in name:
            problems.append(f"{places[i]}: label {name!r} contains a byte order mark (U+FEFF)")
        elif "\n" in name or "\r" in name:
            problems.append(f"{places[i]}: label {name!r} contains a line break")
        elif name in first:
            problems.append(f"{places[i]}: duplicate label {name!r} (first at {places[first[name]]})")
        else:
            first[name] = i
    return problems


def _read_rows(path: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of every CSV record that has a non-empty field; UTF-8, BOM or not."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise GraphfixError(f"line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x})", path=path,
                            hint="save it as UTF-8 (Excel: CSV UTF-8)") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    rows = []
    start = 1
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                rows.append((start, [f.strip() for f in fields]))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise GraphfixError(f"line {start}: {exc}", path=path) from exc
    return rows


@dataclass
class _Manifest:
    cells: list[str]  # image paths as written
    lines: list[int]
    y: np.ndarray
    names: list[str]


def _read_manifest(path: str, labels: Sequence[str] | None, need_labels: bool) -> _Manifest:
    """Parse and check a CSV manifest: every problem of the header and rows in one error."""
    rows = _read_rows(path)
    if not rows:
        raise GraphfixError("the data set is empty", path=path)
    (hline, header), body = rows[0], rows[1:]
    expected = "expected `path,labels`, `path,<name>,<name>,...`" + ("" if need_labels else " or `path`")
    if header[0].lower() != "path":
        raise GraphfixError(f"line {hline}: bad CSV header {header[:3]}", path=path, hint=expected)
    if not body:
        raise GraphfixError("the data set is empty (a header and no rows)", path=path)
    if len(header) == 1 and need_labels:
        raise GraphfixError(f"line {hline}: the header has no label columns", path=path, hint=expected)
    named = len(header) == 2 and header[1].lower() == "labels"
    problems: list[str] = []
    if named:
        names = list(labels) if labels is not None else sorted(
            {n.strip() for _, r in body if len(r) == 2 for n in r[1].split(LABEL_SEPARATOR) if n.strip()}
        )
    elif len(header) == 1:
        names = list(labels) if labels is not None else []
    else:
        cols = header[1:]
        problems += label_name_problems(cols, [f"line {hline} column {k + 2}" for k in range(len(cols))])
        names = list(labels) if labels is not None else cols
        unknown = [c for c in cols if c not in names]
        missing = [n for n in names if n not in cols]
        if unknown:
            problems.append(f"line {hline}: label columns the model does not have: {unknown[:10]}")
        if missing:
            problems.append(f"line {hline}: no column for the model's labels {missing[:10]}")
        if problems:
            hint = f"the model's labels are {_some(labels)}" if labels is not None else None
            raise problems_error(problems, path, "header problem", hint=hint)
    index = {n: j for j, n in enumerate(names)}
    y = np.zeros((len(body), len(names) if len(header) > 1 else 0), np.uint8)
    cells, lines = [], []
    seen: dict[str, int] = {}  # normalised path -> row
    unknown_seen = False
    base = os.path.dirname(os.path.abspath(path))
    for i, (line, row) in enumerate(body):
        cells.append(row[0])
        lines.append(line)
        if len(row) != len(header):
            shape = ",".join(header) if len(header) <= 4 else "the header's fields"
            fix = f": an image with no label is written `{row[0]},`" if named and len(row) == 1 else ""
            problems.append(f"line {line}: {_plural(len(row), 'field')}, expected {len(header)} ({shape}{fix})")
            continue
        if not row[0]:
            problems.append(f"line {line}: empty path")
            continue
        if named:
            for name in row[1].split(LABEL_SEPARATOR):
                name = name.strip()
                if not name:
                    continue
                if name not in index:
                    problems.append(f"line {line}: unknown label {name!r}")
                    unknown_seen = True
                else:
                    y[i, index[name]] = 1
        elif len(header) > 1:
            for k, cell in enumerate(row[1:]):
                try:
                    value = float(cell)
                except ValueError:
                    value = float("nan")
                if value not in (0.0, 1.0):
                    problems.append(f"line {line}: column {header[k + 1]!r} is {cell!r}, expected 0 or 1")
                else:
                    y[i, index[header[k + 1]]] = int(value)
        key = os.path.normpath(os.path.join(base, row[0]))
        if key in seen:
            j = seen[key]
            same = "the same labels" if (y[i] == y[j]).all() else "other labels"
            problems.append(f"line {line}: {row[0]} is already listed at line {lines[j]} (with {same})")
        else:
            seen[key] = i
    if problems:
        hints = ["list each image once"] if any("already listed" in p for p in problems) else []
        if unknown_seen:
            hints.insert(0, f"the model's labels are {_some(names)}")
        raise problems_error(problems, path, "bad row", hint="; ".join(hints) or None)
    return _Manifest(cells, lines, y, names)


def _some(names: Sequence[str]) -> str:
    return ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")


def _load_csv(path: str, labels: Sequence[str] | None, preprocess: Preprocess | None, need_labels: bool,
              skip_bad: bool, workers: int | None) -> Dataset:
    man = _read_manifest(path, labels, need_labels)
    if preprocess is None:
        raise GraphfixError("image data sets need preprocessing settings", kind="usage", path=path)
    base = os.path.dirname(os.path.abspath(path))
    ds = Dataset(y=man.y, labels=man.names, paths=[os.path.join(base, c) for c in man.cells], preprocess=preprocess,
                 source=path, lines=man.lines)
    return _check_images(ds, man.cells, skip_bad, workers)


def image_dataset(paths: Sequence[str], labels: Sequence[str], preprocess: Preprocess, *, skip_bad: bool = False,
                  workers: int | None = None) -> Dataset:
    """Unlabelled image files as a Dataset (`y` [N, 0]), every header checked as in `load_dataset`."""
    ds = Dataset(y=np.zeros((len(paths), 0), np.uint8), labels=list(labels), paths=[os.path.abspath(p) for p in paths],
                 preprocess=preprocess)
    return _check_images(ds, list(paths), skip_bad, workers)


def _check_images(ds: Dataset, shown: list[str], skip_bad: bool, workers: int | None) -> Dataset:
    """`ds` after `check_images` on all its images: one error listing every bad one (with its line),
    or, with `skip_bad`, `ds` without those rows and with them in `skipped`."""
    assert ds.paths is not None and ds.preprocess is not None
    found = check_images(ds.paths, ds.preprocess, workers=workers)
    lines = ds.lines or [None] * len(ds.paths)
    bad = [BadRow(ds.source, lines[i], shown[i], p) for i, p in enumerate(found) if p is not None]
    if not bad:
        return ds
    keep = [i for i, p in enumerate(found) if p is None]
    if not skip_bad or not keep:
        hints = ["every image is bad"] if not keep else ["fix or remove these rows, or leave them out with --skip-bad"]
        if any("over the limit" in b.problem for b in bad):
            hints.append("raise the limit with --max-pixels")
        listed = [(f"line {b.line}: " if b.line is not None else "") + f"{b.path}: {b.problem}" for b in bad]
        raise problems_error(listed, ds.source, "bad image", total=len(ds.paths), hint="; ".join(hints))
    return replace(ds.take(keep), skipped=bad)


def skipped_summary(*datasets: Dataset | None) -> dict | None:
    """What `skip_bad` left out of these data sets, for `graphfix.training` / `graphfix.calibration`:
    {"count": N, "rows": the first `MAX_LISTED` as "train.csv line 402: x.png: problem"}; None if nothing."""
    rows = [r for d in datasets if d is not None for r in d.skipped]
    if not rows:
        return None
    return {"count": len(rows), "rows": [str(r) for r in rows[:MAX_LISTED]]}


def save_skipped(rows: Sequence[BadRow], dest: str | os.PathLike) -> None:
    """Write the skipped rows as CSV `data,line,path,problem` (through `graphfix.output`)."""
    from graphfix.output import atomic_write

    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["data", "line", "path", "problem"])
    for r in rows:
        writer.writerow([r.source or "", r.line if r.line is not None else "", r.path, r.problem])
    with atomic_write(dest) as fh:
        fh.write(buf.getvalue().encode("utf-8"))
