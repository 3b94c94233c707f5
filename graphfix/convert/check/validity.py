"""C1-C4: the model is valid ONNX, in the IR/opset range, with only standard domains."""

from __future__ import annotations

__all__ = ["check_validity"]

import logging
from collections import defaultdict

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO, WARN

logger = logging.getLogger(__name__)

#: TensorRT 10.15 parses opset 9..24 (TRT 11: 9..25); onnxruntime 1.31 accepts up to 26.
TRT_OPSETS = (9, 24)
ORT_MAX_OPSET = 26
#: onnxruntime 1.31 and TRT 11 (ONNX 1.20) read IR <= 13; TRT 10.6+ bundles ONNX 1.17 (IR 10).
MAX_IR, SAFE_IR = 13, 10
_INPROC_LIMIT = 1_800_000_000


def check_validity(ctx: CheckContext) -> None:
    """Run C1 (checker), C2 (IR version), C3 (opset), C4 (domains)."""
    _c1_checker(ctx)
    _c2_ir(ctx)
    _c3_opset(ctx)
    _c4_domains(ctx)


def _c1_checker(ctx: CheckContext) -> None:
    import onnx

    try:
        if ctx.path:
            onnx.checker.check_model(ctx.path, full_check=True)
        elif ctx.weight_bytes() < _INPROC_LIMIT and ctx.is_external():
            import os
            import tempfile

            from graphfix.model import Model

            with tempfile.TemporaryDirectory(prefix="graphfix-check-") as tmp:
                path = os.path.join(tmp, "model.onnx")
                Model(ctx.model.ir.clone()).save(path)
                onnx.checker.check_model(path, full_check=True)
        elif ctx.weight_bytes() < _INPROC_LIMIT:
            import onnx_ir as ir

            # serde directly: Model.to_proto would re-stamp ir_version and hide a C2 problem
            onnx.checker.check_model(ir.serde.serialize_model(ctx.model.ir), full_check=True)
        else:
            ctx.add("C1", INFO, "full check skipped for a large in-memory model", "check the saved file", rule="skipped")
            return
    except Exception as exc:  # onnx.checker.ValidationError, shape inference errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        ctx.add("C1", FAIL, f"onnx.checker: {first[:300]}", "re-export the model or fix the node it names",
                rule="checker")


def _c2_ir(ctx: CheckContext) -> None:
    ir_version = ctx.model.ir.ir_version
    if ir_version is None or ir_version < 3 or ir_version > MAX_IR:
        ctx.add("C2", FAIL, f"ir_version {ir_version} is outside 3..{MAX_IR} (onnxruntime 1.31 / TensorRT 11)",
                "graphfix export stamps IR 8-10", rule="ir-range")
    elif ir_version > SAFE_IR:
        ctx.add("C2", WARN, f"ir_version {ir_version} > {SAFE_IR}: TensorRT 10.x (ONNX 1.17) may refuse it",
                "graphfix export stamps IR 8-10", rule="ir-new")


def _c3_opset(ctx: CheckContext) -> None:
    imports = ctx.model.ir.opset_imports
    if "" in imports and "ai.onnx" in imports:
        ctx.add("C3", FAIL, "two default-domain opset imports ('' and 'ai.onnx')", "keep one", rule="duplicate-import")
    opset = ctx.opset
    low, high = TRT_OPSETS if ctx.trt else (7, ORT_MAX_OPSET)
    if opset < low or opset > high:
        ctx.add("C3", FAIL, f"opset {opset} is outside {low}..{high} for {ctx.target}",
                "graphfix export --opset 17", rule="opset-range")
    elif ctx.trt and opset > 17:
        ctx.add("C3", INFO, f"opset {opset} > 17: TensorRT 8.5 (JetPack 5) parses up to 17",
                "--opset 17 for older TensorRT", rule="opset-old-trt")


def _c4_domains(ctx: CheckContext) -> None:
    seen: dict[tuple[str, str], list] = defaultdict(list)
    for node in ctx.graph:
        if node.domain not in ("", "ai.onnx"):
            seen[(node.domain, node.op_type)].append(node)
    for (domain, op), nodes in sorted(seen.items()):
        severity = FAIL if ctx.trt else (INFO if domain == "com.microsoft" else WARN)
        fix = "replace with standard ONNX ops or provide a TensorRT plugin" if ctx.trt else \
            "standard ONNX ops run on every execution provider"
        ctx.add("C4", severity, f"{domain}::{op} ({len(nodes)} nodes) is not in the standard ONNX domain", fix,
                node=nodes[0], rule="custom-domain")
    if ctx.model.ir.functions:
        ctx.add("C4", WARN, f"{len(ctx.model.ir.functions)} model-local functions", "inline them before deployment",
                rule="functions")
