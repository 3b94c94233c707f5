"""The registry of Caffe layer converters: the only list of what graphfix supports.

A converter is a plain function `(ctx) -> list[(ir.Value, shape)]`, one entry per top, registered
with `@converter("Convolution", ...)`. Its docstring's first line is its entry in
`docs/caffe-supported-layers.md`; further lines starting with "Limits:" list its restrictions.
"""

from __future__ import annotations

__all__ = [
    "Converter",
    "converter",
    "CONVERTERS",
    "SUPPORTED_LAYERS",
    "NO_ONNX_LAYERS",
    "IGNORED_LAYERS",
    "DATA_LAYERS",
    "Unsupported",
    "supported_layers_markdown",
]

from collections.abc import Callable
from dataclasses import dataclass

#: Layer type -> converter.
CONVERTERS: dict[str, Converter] = {}

#: Layer types with no ONNX meaning; the user can cut the graph before them (`outputs=`).
NO_ONNX_LAYERS: dict[str, str] = {
    "PriorBox": "SSD anchor generation (post-processing, no ONNX equivalent)",
    "DetectionOutput": "SSD box decoding and NMS (post-processing, no ONNX equivalent)",
    "Python": "runs arbitrary Python code (refused)",
}

#: Data-source layer types: their first top is the image input of a training prototxt.
DATA_LAYERS: frozenset[str] = frozenset(
    {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "AnnotatedData", "VideoData"}
)
#: Training-only layer types, dropped from a deploy graph without a word.
IGNORED_LAYERS: frozenset[str] = DATA_LAYERS | {
    "HDF5Output", "Accuracy", "Silence", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss",
    "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss", "ContrastiveLoss", "MultiBoxLoss", "DetectionEvaluate",
}  # fmt: skip


class Unsupported(Exception):
    """Raised by a converter for a layer variant it cannot express in ONNX."""


@dataclass(frozen=True)
class Converter:
    """A registered converter."""

    layer_type: str
    func: Callable
    weights: bool
    summary: str
    limits: str


def converter(*layer_types: str, weights: bool = False) -> Callable[[Callable], Callable]:
    """Register `func` for `layer_types`; `weights=True` when it reads caffemodel blobs."""

    def register(func: Callable) -> Callable:
        doc = (func.__doc__ or "").strip().splitlines()
        summary = doc[0].strip() if doc else ""
        limits = " ".join(line.strip()[len("Limits:") :].strip() for line in doc if line.strip().startswith("Limits:"))
        for t in layer_types:
            if t in CONVERTERS:
                raise ValueError(f"two converters for Caffe layer {t}")
            CONVERTERS[t] = Converter(t, func, weights, summary, limits)
        return func

    return register


def load_all() -> None:
    # importing the modules fills CONVERTERS
    import graphfix.convert.caffe.layers_math  # noqa: F401
    import graphfix.convert.caffe.layers_nn  # noqa: F401
    import graphfix.convert.caffe.layers_tensor  # noqa: F401


load_all()

#: Supported layer types (sorted), for `graphfix inspect` and the docs. "Input" is handled by the driver.
SUPPORTED_LAYERS: tuple[str, ...] = tuple(sorted([*CONVERTERS, "Input"]))


def supported_layers_markdown() -> str:
    """The text of `docs/caffe-supported-layers.md`, generated from the table."""
    lines = [
        "# Caffe layers supported by graphfix",
        "",
        "Generated from `graphfix/convert/caffe/_table.py`; regenerate with",
        "`GRAPHFIX_UPDATE_DOCS=1 pytest tests/convert/caffe/test_caffe_docs.py`.",
        "",
        "| Caffe layer | ONNX | Weights | Limits |",
        "|---|---|---|---|",
        "| Input | graph input (batch dimension symbolic `batch`) | no | |",
    ]
    for name in sorted(CONVERTERS):
        c = CONVERTERS[name]
        lines.append(f"| {name} | {c.summary} | {'yes' if c.weights else 'no'} | {c.limits} |")
    lines += [
        "",
        "## Layers with no ONNX meaning",
        "",
        "Cut the graph before them with `outputs=[...]` (CLI `--outputs NAME,...`).",
        "",
    ]
    lines += [f"- **{name}**: {why}" for name, why in sorted(NO_ONNX_LAYERS.items())]
    lines += ["", "## Training-only layers (dropped)", "", ", ".join(sorted(IGNORED_LAYERS)), ""]
    return "\n".join(lines)
