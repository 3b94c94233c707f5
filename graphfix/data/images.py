"""Images: how a file becomes the model's input (Preprocess) and the one bounded image decoder.

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

__all__ = [
    "Preprocess", "PREPROCESS_KEYS", "stored_preprocess", "describe_preprocess", "show_values", "check_image", "check_images",
    "decode_image", "load_images", "image_paths", "IMAGE_SUFFIXES", "DEFAULT_MAX_PIXELS",
]

import contextlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from graphfix.errors import GraphfixError
from graphfix.limits import DEFAULT_MAX_PIXELS

#: The `graphfix.preprocess` keys that say how pixels become the input (what is stored).
PREPROCESS_KEYS = ("size", "channel_order", "mean", "std", "scale", "pixel_range")
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
    #: "NHWC" or "NCHW" when the model's preprocessing is baked into its graph (`export
    #: --bake-preprocess`): `apply` then gives the raw uint8 pixels that input takes.
    baked_layout: str | None = None

    @classmethod
    def for_model(cls, model: Any, **overrides: Any) -> Preprocess:
        """From `graphfix.preprocess` metadata and the input shape, `overrides` (not None) win.

        Raises:
            GraphfixError: when no input size is known.
        """
        meta = dict(getattr(model, "preprocess", None) or {})
        if meta.get("baked"):
            return cls._baked(model, meta["baked"], overrides)
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
        if d["baked_layout"] is None:
            d.pop("baked_layout")
        return d

    def stored(self) -> dict[str, Any]:
        """The `graphfix.preprocess` values (`PREPROCESS_KEYS`) that give this preprocessing."""
        d = self.to_dict()
        return {key: d[key] for key in PREPROCESS_KEYS}

    @classmethod
    def _baked(cls, model: Any, baked: dict[str, Any], overrides: dict[str, Any]) -> Preprocess:
        """The raw pixels a baked model takes (no flags apply: its preprocessing is in the graph)."""
        given = sorted(k for k, v in overrides.items() if v is not None and k != "max_pixels")
        if given:
            raise GraphfixError(
                f"the model's preprocessing is baked into its graph; {', '.join('--' + k for k in given)} "
                "cannot change it", kind="usage", path=getattr(model, "path", None),
                hint="leave the preprocessing flags out (the baked input takes raw uint8 pixels)",
            )
        layout = str(baked.get("layout", "NHWC")).upper()
        if str(baked.get("dtype", "uint8")) != "uint8" or layout not in ("NHWC", "NCHW"):
            raise GraphfixError(f"baked input {baked.get('dtype')} {layout} is not one graphfix can feed", kind="usage",
                                path=getattr(model, "path", None))
        channels = 1 if baked.get("channel_order") == "L" else 3
        size = baked["size"]
        return cls((int(size[0]), int(size[1])), channels, "RGB", [0.0], [1.0], 1.0, 255.0,
                   int(overrides.get("max_pixels") or DEFAULT_MAX_PIXELS), layout)

    def apply(self, image: Any) -> np.ndarray:
        """A PIL image -> float32 [C, H, W] (a baked model: uint8 pixels in its layout)."""
        from PIL import Image

        img = image.convert("L" if self.channels == 1 else "RGB")
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        if self.baked_layout is not None:
            pixels = np.asarray(img, dtype=np.uint8).reshape(h, w, self.channels)
            return np.ascontiguousarray(pixels if self.baked_layout == "NHWC" else pixels.transpose(2, 0, 1))
        arr = np.asarray(img, dtype=np.float32)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        if self.channels == 3 and self.channel_order == "BGR":
            arr = arr[::-1]
        if self.pixel_range != 255.0:
            arr = arr * np.float32(self.pixel_range / 255.0)
        mean = np.asarray(self.mean, np.float32).reshape(-1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(-1, 1, 1)
        return np.ascontiguousarray((arr - mean) * np.float32(self.scale) / std, dtype=np.float32)


def stored_preprocess(meta: dict[str, Any] | None, prep: Preprocess) -> dict[str, Any]:
    """`graphfix.preprocess` metadata holding `prep`: its values over `meta`'s other keys (a
    `mean_source` note is dropped when the mean changes)."""
    new = {**(meta or {}), **prep.stored()}
    if (meta or {}).get("mean") != new["mean"]:
        new.pop("mean_source", None)
    return new


def describe_preprocess(meta: dict[str, Any]) -> str:
    """One line for humans: `size 32,32, BGR, mean 104,117,123, std 1, scale 1, pixel range 255`."""
    parts = [f"size {show_values(meta.get('size'))}", str(meta.get("channel_order") or "RGB")]
    parts += [f"{key} {show_values(meta.get(key))}" for key in ("mean", "std", "scale")]
    return ", ".join(parts + [f"pixel range {show_values(meta.get('pixel_range'))}"])


def show_values(value: Any) -> str:
    """A preprocessing value for people: `104,117,123`, `0.00392157`, `BGR`, `none`."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return ",".join(f"{float(v):g}" for v in np.atleast_1d(value))


def _input_shape(model: Any) -> list[Any] | None:
    try:
        info = model.io_info()["inputs"]
    except Exception:  # not a Model
        return None
    return info[0]["shape"] if len(info) == 1 else None


class _BadImage(Exception):
    """Why a file is not a usable image (the text of `check_image`)."""


@contextlib.contextmanager
def _opened(path: str, prep: Preprocess) -> Iterator[Any]:
    """The image at `path` opened by Pillow (header read, no pixels) after the checks every
    reader makes: a regular file, a format Pillow identifies, at most `prep.max_pixels` pixels.
    Errors in the block (decoding pixels) count as unreadable too.

    Raises:
        _BadImage: with the problem, e.g. "image not found".
    """
    from PIL import Image, UnidentifiedImageError

    if Image.MAX_IMAGE_PIXELS is not None and prep.max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = prep.max_pixels  # Pillow's own bomb check must not undercut ours
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device is never opened
            raise _BadImage("not a regular file")
        with Image.open(path) as img:
            pixels = img.width * img.height
            if pixels > prep.max_pixels:
                raise _BadImage(f"image is {img.width}x{img.height} = {pixels} pixels, over the limit of {prep.max_pixels}")
            yield img
    except Image.DecompressionBombError as exc:  # Pillow refuses at twice its limit, on open
        raise _BadImage(f"image is over the limit of {prep.max_pixels} pixels ({exc})") from exc
    except FileNotFoundError as exc:
        raise _BadImage("image not found") from exc
    except UnidentifiedImageError as exc:
        raise _BadImage("cannot read image (not an image format Pillow knows)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise _BadImage(f"cannot read image ({getattr(exc, 'strerror', None) or exc})") from exc


@contextlib.contextmanager
def _quiet_bombs() -> Iterator[None]:
    """Pillow's DecompressionBombWarning silenced (our own limit decides); entered by the calling
    thread around a whole pool, since `warnings.catch_warnings` is not thread-safe."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        yield


def check_image(path: str, prep: Preprocess) -> str | None:
    """What makes `path` unusable as an image, or None: not found, not a regular file, a header
    Pillow cannot identify, more than `prep.max_pixels` pixels. Reads the header only; the
    same checks `decode_image` makes before decoding."""
    try:
        with _opened(path, prep):
            return None
    except _BadImage as exc:
        return str(exc)


def check_images(paths: Sequence[str], prep: Preprocess, *, workers: int | None = None) -> list[str | None]:
    """`check_image` for every path (headers only): the problem or None, in order. Threads in
    contiguous chunks help where opening a file waits (network file systems, cold caches);
    on a warm local disk the header parse is GIL-bound, about 50 us an image."""
    workers = max(1, workers or min(8, 4 * (os.cpu_count() or 1)))
    step = max(256, -(-len(paths) // workers))
    chunks = [paths[i : i + step] for i in range(0, len(paths), step)]

    def run(chunk: Sequence[str]) -> list[str | None]:
        return [check_image(p, prep) for p in chunk]

    with _quiet_bombs():
        if len(chunks) <= 1:
            return run(paths)
        with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
            return [problem for part in pool.map(run, chunks) for problem in part]


def _decode(path: str, prep: Preprocess, where: str | None) -> np.ndarray:
    hint = f"listed at {where}" if where else None
    try:
        with _opened(path, prep) as img:
            return prep.apply(img)
    except _BadImage as exc:
        problem = str(exc)
        if "over the limit" in problem:
            hint = f"{hint + '; ' if hint else ''}raise it with --max-pixels"
        raise GraphfixError(problem, path=path, hint=hint) from exc.__cause__


def decode_image(path: str, prep: Preprocess, where: str | None = None) -> np.ndarray:
    """The one image decoder: `check_image`'s checks (header only, before any pixel is decoded),
    then `prep.apply`. Errors name the image and `where` (e.g. "train.csv line 5")."""
    with _quiet_bombs():
        return _decode(path, prep, where)


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
        return np.zeros((0, prep.channels, *prep.size), np.float32) if prep.baked_layout is None else \
            np.zeros((0, *prep.size, prep.channels) if prep.baked_layout == "NHWC" else (0, prep.channels, *prep.size),
                     np.uint8)
    places = list(where) if where is not None else [None] * len(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    with _quiet_bombs():
        if workers <= 1 or len(paths) == 1:
            arrays = [_decode(p, prep, w) for p, w in zip(paths, places)]
        else:
            with ThreadPoolExecutor(workers) as pool:
                arrays = list(pool.map(lambda pw: _decode(pw[0], prep, pw[1]), zip(paths, places)))
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
