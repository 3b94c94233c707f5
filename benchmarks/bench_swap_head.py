"""Benchmark: load -> swap-head -> save of a ~100 MB ONNX model, against onnx.load + onnx.save.

Run:  .venv/bin/python benchmarks/bench_swap_head.py [--mb 100]
Each measurement runs in a fresh process (time measured after imports; peak RSS is the
process's VmHWM, imports included). Targets (issue 2): time under 2x the plain
onnx.load + onnx.save of the same file, peak RSS under 3x the file size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD_BASELINE = """
import json, sys, time
def hwm():
    # peak resident set of this process image (VmHWM; ru_maxrss survives exec on Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import onnx
t = time.perf_counter()
m = onnx.load(sys.argv[1])
onnx.save(m, sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": hwm()}))
"""

CHILD_GRAPHFIX = """
import json, sys, time
def hwm():
    # peak resident set of this process image (VmHWM; ru_maxrss survives exec on Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import graphfix as gf
t = time.perf_counter()
m = gf.load(sys.argv[1])
m2 = gf.swap_head(m, labels=20)
m2.save(sys.argv[2])
print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": hwm()}))
"""

CHILD_IMPORTS = """
import json
def hwm():
    # peak resident set of this process image (VmHWM; ru_maxrss survives exec on Linux)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import graphfix, onnx, onnx_ir, numpy
print(json.dumps({"rss_mb": hwm()}))
"""


def make_model(path: str, megabytes: int) -> None:
    """A wide MLP (MatMul+Relu blocks) ending in Gemm -> Softmax, about `megabytes` of weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = 2048
    layers = max(1, round(megabytes * 1e6 / (width * width * 4)))
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "data"
    for i in range(layers):
        w = (rng.standard_normal((width, width), dtype=np.float32) * 0.02)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"mm{i}"),
                  helper.make_node("Relu", [f"mm{i}"], [f"relu{i}"], name=f"relu{i}")]
        x = f"relu{i}"
    inits += [numpy_helper.from_array(rng.standard_normal((1000, width), dtype=np.float32) * 0.02, "fc_w"),
              numpy_helper.from_array(np.zeros(1000, np.float32), "fc_b")]
    nodes += [helper.make_node("Gemm", [x, "fc_w", "fc_b"], ["fc"], transB=1, name="fc"),
              helper.make_node("Softmax", ["fc"], ["prob"], axis=1, name="prob")]
    graph = helper.make_graph(nodes, "wide_mlp", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 1000])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def run_child(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="model size in MB (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "wide.onnx")
        make_model(src, args.mb)
        size_mb = os.path.getsize(src) / 1e6
        base = [run_child(CHILD_BASELINE, src, os.path.join(tmp, "base.onnx")) for _ in range(args.repeat)]
        gfx = [run_child(CHILD_GRAPHFIX, src, os.path.join(tmp, "gf.onnx")) for _ in range(args.repeat)]
        imports = run_child(CHILD_IMPORTS)
    med = lambda rows, k: float(np.median([r[k] for r in rows]))  # noqa: E731
    result = {
        "file_mb": round(size_mb, 1),
        "baseline_onnx_load_save_s": round(med(base, "seconds"), 3),
        "graphfix_load_swap_save_s": round(med(gfx, "seconds"), 3),
        "time_ratio": round(med(gfx, "seconds") / med(base, "seconds"), 2),
        "baseline_peak_rss_mb": round(med(base, "rss_mb"), 1),
        "graphfix_peak_rss_mb": round(med(gfx, "rss_mb"), 1),
        "graphfix_rss_over_file": round(med(gfx, "rss_mb") / size_mb, 2),
        "import_rss_mb": round(imports["rss_mb"], 1),
        "targets": {"time_ratio": "< 2", "graphfix_rss_over_file": "< 3"},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
