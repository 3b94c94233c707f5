"""C16: the optional TensorRT-RTX oracle: parse the ONNX file and build an engine on CPU.

An explicitly quantized model (QuantizeLinear/DequantizeLinear, C17) is built the way TensorRT
builds Q/DQ graphs: strongly typed, no calibrator ("Working with Quantized Types" > "Explicit
Quantization"). For such a model the standard `tensorrt` package is used when `tensorrt_rtx` is
missing; it needs a GPU, so a builder that cannot start is a skip (INFO), not a FAIL.
"""

from __future__ import annotations

__all__ = ["check_build", "trt_available"]

import logging
import os
import tempfile
import time
from typing import Any

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO
from graphfix.convert.check.qdq import QDQ_OPS, has_qdq

logger = logging.getLogger(__name__)


def trt_available() -> bool:
    """True when the `tensorrt_rtx` package imports (graphfix[trt])."""
    try:
        import tensorrt_rtx  # noqa: F401
    except Exception:
        return False
    return True


def _backend(quantized: bool) -> tuple[Any, str, Exception | None]:
    """(module, label, import error): tensorrt_rtx; for a Q/DQ model the standard tensorrt when RTX is missing."""
    try:
        import tensorrt_rtx as trt
    except Exception as exc:
        if not quantized:
            return None, "TensorRT-RTX", exc
        try:
            import tensorrt as trt
        except Exception:
            return None, "TensorRT", exc
        return trt, "TensorRT", None
    return trt, "TensorRT-RTX", None


def check_build(ctx: CheckContext) -> dict:
    """Parse with TensorRT-RTX and build a serialized engine with a (1, opt, max) batch profile.

    Returns:
        The build record stored in `Report.build`: status ("ok", "failed", "skipped"), detail,
        profile, engine_bytes, seconds; for a Q/DQ model also backend and quantized (node counts).
    """
    quantized = has_qdq(ctx.graph)
    trt, label, error = _backend(quantized)
    if trt is None:
        if quantized:
            ctx.add("C16", INFO, f"TensorRT oracle skipped: neither tensorrt_rtx nor tensorrt is installed "
                    f"({type(error).__name__})", "pip install 'graphfix[trt]'", rule="oracle-skipped")
            return {"status": "skipped", "detail": "tensorrt_rtx / tensorrt not installed"}
        ctx.add("C16", INFO, f"TensorRT-RTX oracle skipped: tensorrt_rtx is not installed ({type(error).__name__})",
                "pip install 'graphfix[trt]'", rule="oracle-skipped")
        return {"status": "skipped", "detail": "tensorrt_rtx not installed"}
    extra = {}
    if quantized:
        counts = {op: sum(1 for n in ctx.graph if n.op_type == op) for op in QDQ_OPS}
        extra = {"backend": label, "quantized": counts}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphfix-trt-") as tmp:
        path = ctx.path
        if path is None:
            path = os.path.join(tmp, "model.onnx")
            ctx.model.save(path)
        logger_ = trt.Logger(trt.Logger.ERROR)
        try:
            builder = trt.Builder(logger_)
        except Exception as exc:  # the standard package without a usable GPU
            builder, reason = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            reason = "Builder() returned None"
        if builder is None:
            ctx.add("C16", INFO, f"{label} oracle skipped: the builder did not start ({reason[:200]})", "",
                    rule="oracle-skipped")
            return {"status": "skipped", "detail": f"{label} builder: {reason[:200]}", **extra}
        # explicit quantization builds strongly typed (TensorRT >= 9); TensorRT 8 needs the INT8 flag instead
        strong = quantized and label == "TensorRT" and hasattr(trt, "NetworkDefinitionCreationFlag") \
            and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0)
        parser = trt.OnnxParser(network, logger_)
        if not parser.parse_from_file(os.path.abspath(path)):
            errors = [str(parser.get_error(i)).strip().splitlines()[0] for i in range(parser.num_errors)]
            detail = "; ".join(errors[:3]) or "parse failed"
            ctx.add("C16", FAIL, f"{label} parser: {detail[:400]}", "fix the findings above and re-export",
                    rule="trt-parse")
            return {"status": "failed", "stage": "parse", "detail": detail, "version": trt.__version__, **extra}
        max_batch = ctx.max_batch or 32
        opt = max(1, min(8, max_batch))
        config = builder.create_builder_config()
        if quantized and label == "TensorRT" and not strong:
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        shapes = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                ctx.add("C16", FAIL, f"input {tensor.name} has dynamic dimensions besides the batch: {dims}",
                        "fix them before building", node=tensor.name, rule="trt-profile")
                return {"status": "failed", "stage": "profile", "detail": f"{tensor.name} {dims}", **extra}
            if dims and dims[0] < 0:
                lo, mid, hi = ([1] + dims[1:]), ([opt] + dims[1:]), ([max_batch] + dims[1:])
            else:
                lo = mid = hi = dims
            profile.set_shape(tensor.name, lo, mid, hi)
            shapes[tensor.name] = [lo, mid, hi]
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        seconds = round(time.perf_counter() - start, 3)
        if engine is None:
            ctx.add("C16", FAIL, f"{label} engine build failed", "run with a verbose TensorRT log", rule="trt-build")
            return {"status": "failed", "stage": "build", "detail": "build_serialized_network returned None",
                    "profile": shapes, "seconds": seconds, **extra}
        size = int(engine.nbytes)
        ctx.add("C16", INFO, f"{label} {trt.__version__} parsed the model and built a {size / 2**20:.1f} MiB "
                f"engine in {seconds:.1f} s (profile {shapes})", "", rule="trt-build")
        return {"status": "ok", "detail": f"engine {size} bytes", "engine_bytes": size, "profile": shapes,
                "seconds": seconds, "version": trt.__version__, "layers": network.num_layers, **extra}
