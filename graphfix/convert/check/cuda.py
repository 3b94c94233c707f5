"""C15: every node has an onnxruntime CUDA kernel for its (op, opset, type), from the shipped table."""

from __future__ import annotations

__all__ = ["check_cuda", "load_kernel_table", "KERNEL_TABLE"]

import functools
import json
import logging
from collections import defaultdict
from importlib import resources

import onnx_ir as ir

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import INFO, WARN
from graphfix.irutil import input_at

logger = logging.getLogger(__name__)

#: The shipped table (graphfix/data): parsed CUDA section of onnxruntime docs/OperatorKernels.md.
KERNEL_TABLE = "ort_cuda_kernels_1.31.json"
_ABBREV = {
    ir.DataType.FLOAT: "f32", ir.DataType.FLOAT16: "f16", ir.DataType.BFLOAT16: "bf16", ir.DataType.DOUBLE: "f64",
    ir.DataType.INT8: "i8", ir.DataType.INT16: "i16", ir.DataType.INT32: "i32", ir.DataType.INT64: "i64",
    ir.DataType.UINT8: "u8", ir.DataType.UINT16: "u16", ir.DataType.UINT32: "u32", ir.DataType.UINT64: "u64",
    ir.DataType.BOOL: "bool", ir.DataType.STRING: "str",
}
_ALWAYS = frozenset({"Constant"})


@functools.lru_cache(maxsize=1)
def load_kernel_table() -> dict:
    """The parsed kernel table (source, commit, ops)."""
    text = resources.files("graphfix.convert.check").joinpath(KERNEL_TABLE).read_text(encoding="utf-8")
    return json.loads(text)


def _since_version(op: str, opset: int) -> int | None:
    import onnx.defs

    try:
        return int(onnx.defs.get_schema(op, opset, "").since_version)
    except Exception:
        return None


def check_cuda(ctx: CheckContext) -> None:
    """C15 for the default domain; WARN for target cuda, INFO for tensorrt (TensorRT EP falls back to CUDA)."""
    table = load_kernel_table()
    ops, type_input = table["ops"], table.get("type_input", {})
    severity = WARN if ctx.target == "cuda" else INFO
    inferred = ctx.inferred()
    problems: dict[tuple[str, str], list[ir.Node]] = defaultdict(list)
    for node in ctx.graph:
        if node.domain not in ("", "ai.onnx") or node.op_type in _ALWAYS:
            continue
        ranges = ops.get(node.op_type)
        if ranges is None:
            problems[(node.op_type, "no CUDA kernel")].append(node)
            continue
        since = _since_version(node.op_type, ctx.opset)
        match = next((r for r in ranges if since is not None and r[0] <= since and (r[1] is None or since <= r[1])), None)
        if match is None:
            problems[(node.op_type, f"no CUDA kernel for opset {ctx.opset} (version {since})")].append(node)
            continue
        index = type_input.get(node.op_type, 0)
        value = input_at(node, index)
        if value is None or match[2] == "*":
            continue
        info = inferred.get(value.name)
        dtype = value.dtype or (info.dtype if info is not None else None)
        abbrev = _ABBREV.get(dtype) if dtype is not None else None
        if abbrev is not None and abbrev not in match[2].split():
            problems[(node.op_type, f"no CUDA kernel for {abbrev}")].append(node)
    for (op, why), nodes in sorted(problems.items()):
        ctx.add("C15", severity, f"{op}: {why} in onnxruntime 1.31 ({len(nodes)} nodes run on CPU with copies)",
                "use an op/type the CUDA EP implements (see graphfix/data/" + KERNEL_TABLE + ")",
                node=nodes[0], rule="cuda-kernel")
