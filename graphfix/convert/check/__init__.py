"""Readiness check: the C1-C17 checklist for TensorRT and the onnxruntime CUDA EP.

`check(model_or_path, target="tensorrt")` returns a `Report(ok, findings)`; `ok` is False when a
finding is a FAIL. Each finding has an id (C1..C17), a severity (FAIL/WARN/INFO), the node or
tensor, a one-line message and a one-line fix. Groups, one module each:

- validity.py  C1 checker, C2 IR version, C3 opset, C4 domains
- ops.py       C5 TensorRT allow-list, C6 per-op limits, C10 control flow, C11 training-only ops
- dtypes.py    C7 data types, C8 shapes (only the batch dynamic)
- graph.py     C9 constants folded, C12 size / external data, C13 hygiene
- fp16.py      C14 fp16 sanity + activation-range probe
- cuda.py      C15 CUDA kernel coverage from graphfix/convert/check/ort_cuda_kernels_1.31.json
- oracle.py    C16 TensorRT-RTX parse + engine build (`build=True`, when installed)
- qdq.py       C17 explicit quantization: the Q/DQ rules TensorRT applies (target tensorrt only)
"""

from __future__ import annotations

__all__ = ["check", "Report", "Finding", "CHECKS", "TARGETS"]

import json
import logging
import os
from typing import Any

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import CHECKS, FAIL, Finding, Report
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Check targets.
TARGETS = ("tensorrt", "cuda")


def check(
    model_or_path: Any,
    *,
    target: str = "tensorrt",
    build: bool = False,
    sample_inputs: Any = None,
    max_batch: int | None = None,
    generic_only: bool = False,
) -> Report:
    """Check a model for GPU / TensorRT readiness.

    Args:
        model_or_path: A graphfix Model or an ONNX file path (checked from the file: C1 uses the
            path form of onnx.checker, C12 inspects the external data beside it).
        target: "tensorrt" (C5/C6 TensorRT limits are FAIL) or "cuda".
        build: Run the TensorRT-RTX oracle (C16) when `tensorrt_rtx` is installed.
        sample_inputs: Feeds (dict or list of dicts) for the C14 activation probe.
        max_batch: Largest batch for the C16 profile (default: the export's, else 32).
        generic_only: Skip the target-specific groups (C5/C6 TensorRT limits, C15, C16, C17).

    Returns:
        The Report; `ok` is False when any finding is a FAIL.
    """
    from graphfix.convert.check import cuda, dtypes, fp16, graph, ops, oracle, qdq, validity
    from graphfix.model import Model, load_onnx

    if target not in TARGETS:
        raise GraphfixError(f"unknown check target {target!r}", kind="usage", hint="tensorrt or cuda")
    if isinstance(model_or_path, Model):
        model, path = model_or_path, None
    else:
        path = os.fspath(model_or_path)
        try:
            model = load_onnx(path)
        except GraphfixError as exc:
            if "external data" not in exc.message:
                raise
            finding = Finding("C12", FAIL, exc.message, "ship the .data file beside the model (relative location)",
                              rule="external-missing")
            return Report(ok=False, findings=[finding], target=target, path=path, checks=["C12"])
    if max_batch is None:
        max_batch = _export_max_batch(model)
    ctx = CheckContext(model=model, path=path, target=target, sample_inputs=sample_inputs, max_batch=max_batch)
    if generic_only:
        ctx.target = "cuda"
    groups = [
        ("C1-C4", validity.check_validity),
        ("C5,C6,C10,C11", ops.check_ops),
        ("C7", dtypes.check_dtypes),
        ("C8", dtypes.check_shapes),
        ("C9", graph.check_folded),
        ("C12", graph.check_size),
        ("C13", graph.check_hygiene),
        ("C14", fp16.check_fp16),
    ]
    if not generic_only:
        groups.append(("C15", cuda.check_cuda))
    if ctx.trt:
        groups.append(("C17", qdq.check_qdq))
    build_record = None
    for name, func in groups:
        logger.debug("check %s", name)
        func(ctx)
    if build and not generic_only:
        build_record = oracle.check_build(ctx)
    ran = [c for c in CHECKS if not (generic_only and c in ("C5", "C6", "C15", "C16"))]
    if not ctx.trt:
        ran = [c for c in ran if c != "C17"]
    if not build:
        ran = [c for c in ran if c != "C16"]
    order = {c: i for i, c in enumerate(CHECKS)}
    findings = sorted(ctx.findings, key=lambda f: (order.get(f.id, 99), f.severity != FAIL))
    report = Report(
        ok=not any(f.severity == FAIL for f in findings), findings=findings, target=target, path=path,
        checks=ran, probe=ctx.probe, build=build_record,
    )
    return report


def _export_max_batch(model) -> int | None:
    raw = model.ir.metadata_props.get("graphfix.export")
    if not raw:
        return None
    try:
        value = json.loads(raw).get("max_batch")
    except (ValueError, AttributeError):
        return None
    return int(value) if value else None
