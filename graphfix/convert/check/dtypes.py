"""C7 data types and C8 shapes: what TensorRT can hold, and only the batch dynamic."""

from __future__ import annotations

__all__ = ["check_dtypes", "check_shapes"]

import logging

import onnx_ir as ir

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, WARN

logger = logging.getLogger(__name__)

_IO_TYPES = {
    ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.INT32, ir.DataType.INT64,
    ir.DataType.INT8, ir.DataType.UINT8, ir.DataType.BOOL,
}
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_SMALL = 1 << 16


def _names(values: list[ir.Value], limit: int = 3) -> str:
    names = [v.name for v in values[:limit]]
    return ", ".join(names) + (f" (+{len(values) - limit} more)" if len(values) > limit else "")


def check_dtypes(ctx: CheckContext) -> None:
    """C7: no STRING, DOUBLE cast down, UINT8 only at I/O, int64 constants inside int32, I/O types."""
    graph = ctx.graph
    inferred = ctx.inferred()
    values = list(graph.initializers.values()) + list(inferred.values())
    strings = [v for v in values if v.dtype == ir.DataType.STRING]
    if strings:
        ctx.add("C7", FAIL, f"STRING tensors: {_names(strings)}", "strings cannot run on GPU; do text handling "
                "outside the model", node=strings[0].name, rule="string")
    doubles = [v for v in graph.initializers.values() if v.dtype == ir.DataType.DOUBLE]
    if doubles:
        ctx.add("C7", WARN, f"DOUBLE initializers (TensorRT casts them to FLOAT): {_names(doubles)}",
                "store them as float32", node=doubles[0].name, rule="double")
    io = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    uint8 = [v for v in inferred.values() if v.dtype == ir.DataType.UINT8 and v.name not in io]
    if uint8 and ctx.trt:
        ctx.add("C7", WARN, f"UINT8 tensors inside the network: {_names(uint8)}", "TensorRT allows UINT8 only at I/O",
                node=uint8[0].name, rule="uint8")
    for value in [*graph.inputs, *graph.outputs]:
        if value.dtype is not None and value.dtype not in _IO_TYPES and value.dtype != ir.DataType.STRING:
            ctx.add("C7", FAIL if ctx.trt else WARN, f"graph I/O {value.name} is {value.dtype.name}",
                    "use FLOAT (or FLOAT16/INT32/INT64/BOOL) at the interface", node=value.name, rule="io-type")
    wide = []
    for value in graph.initializers.values():
        tensor = value.const_value
        if tensor is None or value.dtype != ir.DataType.INT64 or tensor.size > _SMALL or tensor.size == 0:
            continue
        array = tensor.numpy()
        if array.min() < _INT32_MIN or array.max() > _INT32_MAX:
            wide.append(value)
    if wide:
        ctx.add("C7", WARN, f"int64 constants outside the int32 range: {_names(wide)} (TensorRT <= 8.6 clamps)",
                "graphfix export clamps Slice sentinels; fold the rest", node=wide[0].name, rule="int64-range")


def check_shapes(ctx: CheckContext) -> None:
    """C8: inputs have shapes with only dim 0 dynamic; outputs [N, K] static K; everything inferred."""
    graph = ctx.graph
    inferred = ctx.inferred()
    severity = FAIL if ctx.trt else WARN
    for value in graph.inputs:
        if value.is_initializer():
            continue
        if value.shape is None:
            ctx.add("C8", severity, f"input {value.name} has no shape", "give it one (--input-shape)",
                    node=value.name, rule="input-shape")
            continue
        dynamic = [i for i, d in enumerate(value.shape) if not isinstance(d, int)]
        extra = [i for i in dynamic if i != 0]
        if extra:
            ctx.add("C8", severity, f"input {value.name} has dynamic dimensions {extra} besides the batch",
                    "fix them (graphfix export; --input-shape); each needs a TensorRT profile range",
                    node=value.name, rule="dynamic-dims")
    for value in graph.outputs:
        v = inferred.get(value.name, value)
        shape = v.shape if v.shape is not None else value.shape
        if shape is None:
            ctx.add("C8", WARN, f"output {value.name} has no inferred shape", "run graphfix export",
                    node=value.name, rule="output-shape")
        elif any(not isinstance(d, int) for d in list(shape)[1:]):
            ctx.add("C8", WARN, f"output {value.name} has non-static dimensions after the batch: "
                    f"{[d if isinstance(d, int) else str(d) for d in shape]}", "fold the shape computation",
                    node=value.name, rule="output-shape")
    missing = [v for v in inferred.values() if v.producer() is not None and (v.dtype is None or v.shape is None)]
    if missing:
        ctx.add("C8", WARN, f"{len(missing)} tensors without inferred type/rank, e.g. {_names(missing)}",
                "fix the model so ONNX shape inference succeeds", node=missing[0].name, rule="uninferred")
