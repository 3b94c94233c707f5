"""Benchmark: is an exported fp32 model at least as fast in onnxruntime CPU as its input?

Builds a MobileNet-like fixture (Conv-BN-Relu, depthwise blocks, GlobalAveragePool, Flatten,
Gemm, Softmax; BatchNorm unfolded), exports it with `graphfix.convert.export.export`, and times
both in onnxruntime CPU (one thread): median of N runs each, interleaved, after warm-up, at the default graph optimization level
(onnxruntime fuses Conv+BN itself there) and with graph optimizations disabled (where the
exporter's BatchNorm folding is the only fusion). Prints one JSON document.

Usage:
  .venv/bin/python benchmarks/bench_export.py [--runs 20] [--batch 8] [--size 112]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "export"))


def _session(path: str, level):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _interleaved_median_ms(paths: list[str], feeds: dict, runs: int, level) -> list[float]:
    """Median ms per model, runs interleaved (A B A B ...) so machine load drifts cancel out."""
    sessions = [_session(p, level) for p in paths]
    for sess in sessions:
        for _ in range(3):
            sess.run(None, feeds)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(runs):
        for i, sess in enumerate(sessions):
            t0 = time.perf_counter()
            sess.run(None, feeds)
            times[i].append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    import onnx
    import onnxruntime as ort

    import _export_models as M
    from graphfix.convert.export import export
    from graphfix.model import load_onnx

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        src = os.path.join(tmp, "mobilenet_like.onnx")
        onnx.save(M.bn_cnn(width=args.width, blocks=args.blocks, size=args.size), src)
        t0 = time.perf_counter()
        result = export(load_onnx(src), os.path.join(tmp, "exported.onnx"), target="cpu")
        export_s = time.perf_counter() - t0
        feeds = {"data": np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)}
        doc = {
            "model": f"bn_cnn width={args.width} blocks={args.blocks} input={args.batch}x3x{args.size}x{args.size}",
            "nodes_before": len(load_onnx(src).ir.graph),
            "nodes_after": len(result.model.ir.graph),
            "export_seconds": round(export_s, 3),
            "parity_max_abs_diff": result.parity["outputs"]["prob"]["max_abs_diff"],
            "runs": args.runs,
            "onnxruntime": ort.__version__,
        }
        for label, level in (("default_optimizations", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                             ("optimizations_disabled", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
            before, after = _interleaved_median_ms([src, result.path], feeds, args.runs, level)
            doc[label] = {"input_ms": round(before, 3), "exported_ms": round(after, 3),
                          "ratio_exported_over_input": round(after / before, 3)}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
