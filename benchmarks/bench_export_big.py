"""Benchmark: export a 2.4 GB external-data model in under 30 s with peak RSS under 1 GB.

Generates the model on the fly in a temp dir (never with onnx.load of the data): 9 MatMul
layers with 256 MiB fp32 weights each ([8192, 8192]) plus the multi-label head
(Gemm `graphfix_head` + Sigmoid), the weights streamed into one `big.onnx.data` file. Then a
fresh child process runs `export(load_onnx(path), out, target="tensorrt", verify=False)`
(onnx-ir keeps the external tensors lazy/memory-mapped) and reports wall time and peak RSS
(`ru_maxrss`), and the readiness report. `--parity` also runs the onnxruntime parity check in a
separate child (onnxruntime loads both models, so its RSS is reported on its own).

Usage:
  .venv/bin/python benchmarks/bench_export_big.py [--layers 9] [--dim 8192] [--keep DIR] [--parity]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from graphfix.model import load_onnx
from graphfix.convert.export import export
src, out, verify = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
t1 = time.perf_counter()
result = export(src if verify else load_onnx(src), out, target="tensorrt", verify=verify)
t2 = time.perf_counter()
doc = {
    "export_seconds": round(t2 - t1, 3),
    "import_seconds": round(t1 - t0, 3),
    "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    "passes": result.passes,
    "report_ok": result.report.ok if result.report else None,
    "report": result.report.text() if result.report else None,
    "parity": result.parity,
}
print(json.dumps(doc))
"""


def build_model(folder: str, layers: int, dim: int, labels: int = 20) -> tuple[str, int]:
    """Write big.onnx + big.onnx.data (streamed) and return (path, data bytes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from graphfix.convert._onnx import make_model

    path = os.path.join(folder, "big.onnx")
    data_path = path + ".data"
    nodes, inits = [], []
    offset = 0
    chunk = np.full((1024, dim), 1.0 / dim, dtype=np.float32).tobytes()
    prev = "data"
    with open(data_path, "wb") as fh:
        for i in range(layers):
            name = f"w{i}"
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=[dim, dim])
            tensor.data_location = TensorProto.EXTERNAL
            length = dim * dim * 4
            for key, value in (("location", "big.onnx.data"), ("offset", str(offset)), ("length", str(length))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            for _ in range(dim // 1024):
                fh.write(chunk)
            offset += length
            inits.append(tensor)
            nodes.append(helper.make_node("MatMul", [prev, name], [f"m{i}"], name=f"matmul{i}"))
            nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    rng = np.random.default_rng(0)
    inits.append(onnx.numpy_helper.from_array((rng.standard_normal((labels, dim)) * 0.01).astype(np.float32),
                                              "graphfix_head.weight"))
    inits.append(onnx.numpy_helper.from_array(np.zeros(labels, np.float32), "graphfix_head.bias"))
    nodes.append(helper.make_node("Gemm", [prev, "graphfix_head.weight", "graphfix_head.bias"], ["logits"],
                                  name="graphfix_head", transB=1))
    nodes.append(helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"))
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", labels]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", labels])], inits)
    model = make_model(graph)
    helper.set_model_props(model, {"graphfix.labels": json.dumps([f"l{i}" for i in range(labels)])})
    with open(path, "wb") as fh:
        fh.write(model.SerializeToString())
    return path, offset


def _child(src: str, out: str, verify: bool) -> dict:
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(repo))
    proc = subprocess.run([sys.executable, "-c", _CHILD, src, out, "1" if verify else "0"],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--keep", help="build in this folder and keep the files")
    parser.add_argument("--parity", action="store_true", help="also run the parity check (separate child)")
    args = parser.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

    ctx = tempfile.TemporaryDirectory(prefix="bench-big-") if not args.keep else None
    folder = args.keep or ctx.name
    os.makedirs(folder, exist_ok=True)
    try:
        t0 = time.perf_counter()
        src, nbytes = build_model(folder, args.layers, args.dim)
        build_s = time.perf_counter() - t0
        out_dir = os.path.join(folder, "out")
        os.makedirs(out_dir, exist_ok=True)
        out = os.path.join(out_dir, "big-trt.onnx")
        doc = {"model": f"{args.layers} x MatMul [{args.dim},{args.dim}] + head", "data_bytes": nbytes,
               "data_gib": round(nbytes / 2**30, 3), "build_seconds": round(build_s, 1)}
        t0 = time.perf_counter()
        child = _child(src, out, verify=False)
        doc["child_wall_seconds"] = round(time.perf_counter() - t0, 3)
        doc.update(child)
        doc["output_files"] = {f: os.path.getsize(os.path.join(out_dir, f)) for f in sorted(os.listdir(out_dir))}
        doc["targets"] = {"export_seconds<30": child["export_seconds"] < 30, "peak_rss_mb<1024": child["peak_rss_mb"] < 1024}
        if args.parity:
            parity = _child(src, os.path.join(out_dir, "big-trt-parity.onnx"), verify=True)
            doc["parity_run"] = {"export_seconds": parity["export_seconds"], "peak_rss_mb": parity["peak_rss_mb"],
                                 "parity": parity["parity"]}
        print(json.dumps(doc, indent=2))
    finally:
        if ctx is not None:
            ctx.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
