"""ONNX version constants and small helpers every importer and stage shares.

graphfix writes opset 17 by default with an explicit IR version in 8..10: onnx 1.23's
`helper.make_model` defaults (IR 14 / opset 28) are rejected by onnxruntime 1.31.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_OPSET",
    "MIN_IR_VERSION",
    "MAX_IR_VERSION",
    "ir_version_for",
    "make_model",
]

import onnx
import onnx.helper

#: Opset written by importers and new graphs (inside TensorRT 8.5..11 and onnxruntime 1.31).
DEFAULT_OPSET = 17
#: IR versions graphfix writes.
MIN_IR_VERSION = 8
MAX_IR_VERSION = 10


def _min_ir_for_opset(opset: int) -> int:
    try:
        return int(onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", opset)]))
    except Exception:  # an opset newer than this onnx knows
        return MAX_IR_VERSION


def ir_version_for(opset: int, current: int | None = None) -> int:
    """The IR version to stamp on a model of `opset` that currently says `current`.

    Keeps `current` when it lies in 8..10 (clamped into that band otherwise), raised to the
    minimum the opset needs.
    """
    ir = MIN_IR_VERSION if not current else min(max(current, MIN_IR_VERSION), MAX_IR_VERSION)
    return max(ir, _min_ir_for_opset(opset))


def make_model(
    graph: onnx.GraphProto, *, opset: int = DEFAULT_OPSET, producer: str = "graphfix"
) -> onnx.ModelProto:
    """`onnx.helper.make_model` with an explicit opset and IR version (never the helper's defaults)."""
    from graphfix._version import __version__

    model = onnx.helper.make_model(
        graph,
        opset_imports=[onnx.helper.make_opsetid("", opset)],
        producer_name=producer,
        producer_version=__version__,
    )
    model.ir_version = ir_version_for(opset)
    return model
