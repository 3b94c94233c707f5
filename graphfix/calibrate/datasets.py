"""Labelled data sets for train-head, calibrate and predict: CSV manifests of images, NPZ arrays.

Formats (DESIGN.md "Data sets"):

- CSV with a `path,labels` header: image paths relative to the CSV, labels `;`-separated names
  (an empty field means no label).
- CSV with a `path,<name>,<name>,...` header: one 0/1 column per label (columns are matched to the
  model's labels by name, in any order).
- NPZ with `x` float32 [N, C, H, W] (already preprocessed) and `y` {0,1} [N, L].

Images are decoded with Pillow on a thread pool, resized to `size` (H, W) with bilinear
filtering, put in RGB (or BGR) order, or grayscale when the model's input has one channel, and
normalised per channel as

    p = pixel * pixel_range / 255        (pixel in 0..255; pixel_range 255 keeps 0..255)
    x = (p - mean) * scale / std

which is the Caffe importer's `(pixel - mean) * scale` (mean in pixel units, std 1) and also
expresses torchvision-style settings (pixel_range 1, mean 0.485..., std 0.229..., scale 1).
Defaults when neither `graphfix.preprocess` metadata nor flags say: pixel_range 255, mean 0,
std 1, scale 1/255 (so x = pixel / 255), RGB, the model input's static H, W. Keys stored as
null count as absent.
"""

from __future__ import annotations

__all__ = ["Preprocess", "Dataset", "load_dataset", "load_images", "decode_image", "image_paths", "DEFAULT_MAX_PIXELS"]

import csv
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from graphfix.errors import GraphfixError
from graphfix.limits import DEFAULT_MAX_PIXELS

logger = logging.getLogger(__name__)

#: File name endings read as images.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class Preprocess:
    """How an image becomes the model's input tensor.

    Attributes:
        size: (H, W) the image is resized to.
        channels: 1 (grayscale) or 3.
        channel_order: "RGB" or "BGR" (3 channels only).
        mean: Per-channel (or one) value subtracted from the pixel (in `pixel_range` units).
        std: Per-channel (or one) divisor.
        scale: Multiplier applied after the mean is subtracted.
        pixel_range: 255 (pixels 0..255) or 1 (pixels 0..1) before the mean.
        max_pixels: Images with more pixels (width x height) are refused before decoding.
    """

    size: tuple[int, int]
    channels: int = 3
    channel_order: str = "RGB"
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] = field(default_factory=lambda: [1.0])
    scale: float = 1.0 / 255.0
    pixel_range: float = 255.0
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def for_model(cls, model: Any, **overrides: Any) -> Preprocess:
        """From `graphfix.preprocess` metadata and the input shape, `overrides` (not None) win.

        Raises:
            GraphfixError: when no input size is known.
        """
        meta = dict(getattr(model, "preprocess", None) or {})
        shape = _input_shape(model)
        channels = shape[1] if shape and isinstance(shape[1], int) else 3
        defaults = {"channel_order": "RGB", "mean": [0.0], "std": [1.0], "scale": 1.0 / 255.0, "pixel_range": 255.0}
        values: dict[str, Any] = {"size": meta.get("size")}
        for key, default in defaults.items():
            values[key] = meta.get(key) if meta.get(key) is not None else default
        values["channel_order"] = str(values["channel_order"]).upper()
        if str(meta.get("layout", "NCHW")).upper() != "NCHW":
            raise GraphfixError(
                f"preprocess layout {meta.get('layout')!r} is not supported", kind="usage",
                path=getattr(model, "path", None), hint="graphfix feeds NCHW images",
            )
        if values["size"] is None and shape and all(isinstance(d, int) for d in shape[2:4]) and len(shape) == 4:
            values["size"] = [shape[2], shape[3]]
        for key, val in overrides.items():
            if val is not None:
                values[key] = val
        size = values["size"]
        if size is None:
            raise GraphfixError(
                "the model's input size is unknown", kind="usage", path=getattr(model, "path", None),
                hint="pass --size H,W or store graphfix.preprocess",
            )
        if isinstance(size, int):
            size = [size, size]
        if len(size) == 1:
            size = [size[0], size[0]]
        mean = [float(v) for v in np.atleast_1d(values["mean"])]
        std = [float(v) for v in np.atleast_1d(values["std"])]
        for name, vec in (("mean", mean), ("std", std)):
            if len(vec) not in (1, channels):
                raise GraphfixError(f"{name} has {len(vec)} values for {channels} channels", kind="usage")
        if any(v == 0 for v in std):
            raise GraphfixError("std must not be 0", kind="usage")
        order = values["channel_order"]
        if order not in ("RGB", "BGR"):
            raise GraphfixError(f"channel order {order!r} is not RGB or BGR", kind="usage")
        pixel_range = float(values["pixel_range"])
        if pixel_range <= 0:
            raise GraphfixError("pixel_range must be positive", kind="usage")
        max_pixels = int(values.get("max_pixels") or DEFAULT_MAX_PIXELS)
        if max_pixels < 1:
            raise GraphfixError("--max-pixels must be positive", kind="usage")
        return cls(
            (int(size[0]), int(size[1])), channels, order, mean, std, float(values["scale"]), pixel_range, max_pixels
        )

    def to_dict(self) -> dict[str, Any]:
        """How pixels become inputs (the decoding limit is not part of it)."""
        d = asdict(self)
        d["size"] = list(self.size)
        d.pop("max_pixels")
        return d

    def apply(self, image: Any) -> np.ndarray:
        """A PIL image -> float32 [C, H, W]."""
        from PIL import Image

        img = image.convert("L" if self.channels == 1 else "RGB")
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if self.channels == 3 and self.channel_order == "BGR":
            arr = arr[::-1]
        if self.pixel_range != 255.0:
            arr = arr * np.float32(self.pixel_range / 255.0)
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((arr - mean) * np.float32(self.scale) / std, dtype=np.float32)


def _input_shape(model: Any) -> list[Any] | None:
    try:
        info = model.io_info()["inputs"]
    except Exception:  # not a Model
        return None
    return info[0]["shape"] if len(info) == 1 else None


def decode_image(path: str, prep: Preprocess, where: str | None = None) -> np.ndarray:
    """The one image decoder: header checked against `prep.max_pixels` before any pixel is
    decoded, then `prep.apply`. Errors name the image and `where` (e.g. "train.csv line 5")."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    hint = f"listed at {where}" if where else None
    if os.path.exists(path) and not os.path.isfile(path):  # a FIFO or device is never opened
        raise GraphfixError("not a regular file", path=path, hint=hint)
    limit_hint = f"{hint + '; ' if hint else ''}raise it with --max-pixels"
    if Image.MAX_IMAGE_PIXELS is not None and prep.max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = prep.max_pixels  # Pillow's own bomb check must not undercut ours
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides
            with Image.open(path) as img:
                pixels = img.width * img.height
                if pixels > prep.max_pixels:
                    raise GraphfixError(
                        f"image is {img.width}x{img.height} = {pixels} pixels, over the limit of {prep.max_pixels}",
                        path=path, hint=limit_hint,
                    )
                return prep.apply(img)
    except Image.DecompressionBombError as exc:  # Pillow refuses at twice its limit, on open
        raise GraphfixError(f"image is over the limit of {prep.max_pixels} pixels ({exc})", path=path, hint=limit_hint) from exc
    except FileNotFoundError as exc:
        raise GraphfixError("image not found", path=path, hint=hint) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise GraphfixError(f"cannot read image ({exc})", path=path, hint=hint) from exc


def load_images(
    paths: Sequence[str], prep: Preprocess, *, workers: int | None = None, where: Sequence[str] | None = None
) -> np.ndarray:
    """Decode and preprocess images in parallel (threads; Pillow decodes outside the GIL).

    Args:
        where: Per image, where it was listed (named in errors), e.g. "train.csv line 5".

    Returns:
        float32 [N, C, H, W].
    """
    if not paths:
        return np.zeros((0, prep.channels, *prep.size), np.float32)
    places = list(where) if where is not None else [None] * len(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) == 1:
        arrays = [decode_image(p, prep, w) for p, w in zip(paths, places)]
    else:
        with ThreadPoolExecutor(workers) as pool:
            arrays = list(pool.map(lambda pw: decode_image(pw[0], prep, pw[1]), zip(paths, places)))
    return np.stack(arrays)


def image_paths(inputs: Sequence[str]) -> list[str]:
    """Files as given; folders expand to their image files (sorted)."""
    out: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(str(p) for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise GraphfixError("folder holds no images", path=item)
            out.extend(found)
        elif not os.path.exists(item):
            raise GraphfixError("image not found", path=item)
        else:
            out.append(item)
    return out


@dataclass
class Dataset:
    """Labels plus either arrays (NPZ, API) or image paths (CSV) decoded on demand.

    Attributes:
        y: uint8 [N, L] targets, columns in `labels` order.
        labels: Class names.
        x: float32 [N, C, H, W] model inputs, or None for an image manifest.
        paths: Image files (absolute), or None.
        preprocess: How `paths` become inputs.
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
    from graphfix.calibrate.shards import is_shard_dir, load_features_dir

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
