"""Labelled data sets for train-head, calibrate and predict: CSV manifests of images, NPZ arrays.

Formats (DESIGN.md "Data sets"):

- CSV with a `path,labels` header: image paths relative to the CSV, labels `;`-separated names
  (an empty field means no label).
- CSV with a `path,<name>,<name>,...` header: one 0/1 column per label (columns are matched to the
  model's labels by name, in any order).
- NPZ with `x` float32 [N, C, H, W] (already preprocessed) and `y` {0,1} [N, L].

Images are decoded by `graphfix.data.images` (Preprocess, decode_image).
"""

from __future__ import annotations

__all__ = ["Dataset", "load_dataset"]

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from graphfix.data.images import Preprocess, load_images
from graphfix.errors import GraphfixError


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

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @classmethod
    def from_arrays(cls, x: np.ndarray, y: np.ndarray, labels: Sequence[str] | None = None) -> Dataset:
        """A data set from in-memory arrays (validated like an NPZ)."""
        x, y = _check_arrays(np.asarray(x), np.asarray(y), None)
        return cls(y=y, labels=list(labels) if labels else [str(j) for j in range(y.shape[1])], x=x)

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
) -> Dataset:
    """Load a CSV manifest, an NPZ file or a features folder (`graphfix features`).

    Args:
        path: `.csv`, `.npz` or a folder with a graphfix manifest.json.
        labels: The model's label names (the column order of `y`); None accepts the file's own.
        preprocess: How to decode images (CSV only; required there).
        need_labels: False also accepts unlabelled data (a CSV with only a `path` column, an NPZ
            with only `x`; `y` is then [N, 0]), as `predict` does.

    Raises:
        GraphfixError: missing file or image, unknown label name, label count that disagrees
            with the model, empty set, NaN or non-0/1 values.
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
        return _load_csv(path, labels, preprocess, need_labels)
    raise GraphfixError("unknown data set format", path=path, kind="usage", hint="expected .csv or .npz")


def _load_csv(path: str, labels: Sequence[str] | None, preprocess: Preprocess | None, need_labels: bool = True) -> Dataset:
    base = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        numbered = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    if not numbered:
        raise GraphfixError("the data set is empty", path=path)
    rows = [r for _, r in numbered]
    line_of = [n for n, _ in numbered[1:]]
    header = [c.strip() for c in rows[0]]
    body = rows[1:]
    if not body:
        raise GraphfixError("the data set is empty (a header and no rows)", path=path)
    if not header or header[0].lower() != "path":
        raise GraphfixError(
            f"bad CSV header {header[:3]}", path=path, hint="expected `path,labels` or `path,<name>,<name>,...`"
        )
    paths = [os.path.join(base, r[0].strip()) for r in body]
    if len(header) == 1 and not need_labels:
        names = list(labels) if labels is not None else []
        y = np.zeros((len(body), 0), np.uint8)
    elif len(header) == 2 and header[1].lower() == "labels":
        names = list(labels) if labels is not None else sorted(
            {n.strip() for r in body if len(r) > 1 for n in r[1].split(";") if n.strip()}
        )
        index = {n: j for j, n in enumerate(names)}
        y = np.zeros((len(body), len(names)), np.uint8)
        for i, r in enumerate(body):
            for name in (r[1].split(";") if len(r) > 1 else []):
                name = name.strip()
                if not name:
                    continue
                if name not in index:
                    raise GraphfixError(
                        f"line {line_of[i]}: unknown label {name!r}", path=path,
                        hint=f"the model's labels are {names[:10]}{' ...' if len(names) > 10 else ''}",
                    )
                y[i, index[name]] = 1
    else:
        cols = header[1:]
        _check_count(len(cols), labels, path)
        names = list(labels) if labels is not None else cols
        if sorted(cols) != sorted(names):
            unknown = sorted(set(cols) - set(names))
            raise GraphfixError(f"unknown label columns {unknown[:10]}", path=path, hint=f"the model's labels are {names[:10]}")
        order = [cols.index(n) for n in names]
        try:
            raw = np.array([[float(c) for c in r[1:]] for r in body])
        except ValueError as exc:
            raise GraphfixError(f"label columns must be 0 or 1 ({exc})", path=path) from exc
        if raw.shape != (len(body), len(cols)):
            raise GraphfixError("rows have different column counts", path=path)
        if np.isnan(raw).any() or not np.isin(raw, (0.0, 1.0)).all():
            raise GraphfixError("label columns must be 0 or 1", path=path)
        y = raw[:, order].astype(np.uint8)
    for p, line in zip(paths, line_of):
        if not os.path.isfile(p):
            raise GraphfixError("image not found", path=p, hint=f"listed at {os.path.basename(path)} line {line}")
    if preprocess is None:
        raise GraphfixError("image data sets need preprocessing settings", kind="usage", path=path)
    return Dataset(y=y, labels=names, paths=paths, preprocess=preprocess, source=path, lines=line_of)
