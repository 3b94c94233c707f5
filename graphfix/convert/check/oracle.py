"""C16: the optional TensorRT-RTX oracle: parse the ONNX file and build an engine on CPU."""

from __future__ import annotations

__all__ = ["check_build", "trt_available"]

import logging
import os
import tempfile
import time

from graphfix.convert.check._context import CheckContext
from graphfix.convert.check._report import FAIL, INFO

logger = logging.getLogger(__name__)


def trt_available() -> bool:
    """True when the `tensorrt_rtx` package imports (graphfix[trt])."""
    try:
        import tensorrt_rtx  # noqa: F401
    except Exception:
        return False
    return True


def check_build(ctx: CheckContext) -> dict:
    """Parse with TensorRT-RTX and build a serialized engine with a (1, opt, max) batch profile.

    Returns:
        The build record stored in `Report.build`: status ("ok", "failed", "skipped"), detail,
        profile, engine_bytes, seconds.
    """
    try:
        import tensorrt_rtx as trt
    except Exception as exc:
        ctx.add("C16", INFO, f"TensorRT-RTX oracle skipped: tensorrt_rtx is not installed ({type(exc).__name__})",
                "pip install 'graphfix[trt]'", rule="oracle-skipped")
        return {"status": "skipped", "detail": "tensorrt_rtx not installed"}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="graphfix-trt-") as tmp:
        path = ctx.path
        if path is None:
            path = os.path.join(tmp, "model.onnx")
            ctx.model.save(path)
        logger_ = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger_)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger_)
        if not parser.parse_from_file(os.path.abspath(path)):
            errors = [str(parser.get_error(i)).strip().splitlines()[0] for i in range(parser.num_errors)]
            detail = "; ".join(errors[:3]) or "parse failed"
            ctx.add("C16", FAIL, f"TensorRT-RTX parser: {detail[:400]}", "fix the findings above and re-export",
                    rule="trt-parse")
            return {"status": "failed", "stage": "parse", "detail": detail, "version": trt.__version__}
        max_batch = ctx.max_batch or 32
        opt = max(1, min(8, max_batch))
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        shapes = {}
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            dims = list(tensor.shape)
            if any(d < 0 for d in dims[1:]):
                ctx.add("C16", FAIL, f"input {tensor.name} has dynamic dimensions besides the batch: {dims}",
                        "fix them before building", node=tensor.name, rule="trt-profile")
                return {"status": "failed", "stage": "profile", "detail": f"{tensor.name} {dims}"}
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
            ctx.add("C16", FAIL, "TensorRT-RTX engine build failed", "run with a verbose TensorRT log", rule="trt-build")
            return {"status": "failed", "stage": "build", "detail": "build_serialized_network returned None",
                    "profile": shapes, "seconds": seconds}
        size = int(engine.nbytes)
        ctx.add("C16", INFO, f"TensorRT-RTX {trt.__version__} parsed the model and built a {size / 2**20:.1f} MiB "
                f"engine in {seconds:.1f} s (profile {shapes})", "", rule="trt-build")
        return {"status": "ok", "detail": f"engine {size} bytes", "engine_bytes": size, "profile": shapes,
                "seconds": seconds, "version": trt.__version__, "layers": network.num_layers}
