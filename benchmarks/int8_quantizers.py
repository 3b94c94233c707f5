"""The quantizer choice for `export --int8`: onnxruntime.quantization (graphfix's settings) vs NVIDIA
Model Optimizer's ONNX PTQ, on one exported fp32 model and the same calibration rows.

    python benchmarks/int8_quantizers.py FP32.onnx CALIB.npz HELDOUT.npz [--modelopt-python PY]

FP32.onnx: a calibrated model after `graphfix export --target tensorrt`; the NPZs hold `x` (model
inputs, already preprocessed) and `y`. Model Optimizer runs in its own venv (--modelopt-python;
default /work/venv-modelopt/bin/python), since its [onnx] extra pins onnx~=1.21 and graphfix
uses 1.23. Its non-quantized layers are kept fp32 (high_precision_dtype="fp32") and the head is
excluded, as in graphfix. Per quantizer and method: seconds (wall, noisy), Q and DQ node counts,
the op types fed by a DequantizeLinear, file bytes, mAP fp32/int8 and the drop on HELDOUT at the
stored thresholds, int8 micro-F1, max |prob diff|. One JSON line per row.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_MODELOPT = r'''
import json, sys, time, numpy as np, onnx
from modelopt.onnx.quantization import quantize
src, calib, out, method, exclude = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5].split(",")
name = [i.name for i in onnx.load(src).graph.input][0]
t = time.time()
quantize(src, quantize_mode="int8", calibration_data={name: np.load(calib)["x"]}, calibration_method=method,
         output_path=out, calibration_eps=["cpu"], nodes_to_exclude=exclude, high_precision_dtype="fp32",
         log_level="ERROR")
print(json.dumps({"seconds": time.time() - t}))
'''


def structure(path: str) -> dict:
    import onnx

    proto = onnx.load(path)
    count = collections.Counter(n.op_type for n in proto.graph.node)
    producer = {o: n for n in proto.graph.node for o in n.output}
    fed = sorted({n.op_type for n in proto.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                  and any(i in producer and producer[i].op_type == "DequantizeLinear" for i in n.input)})
    return {"Q": count["QuantizeLinear"], "DQ": count["DequantizeLinear"], "ops_with_dq_input": fed,
            "bytes": os.path.getsize(path)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("calibration")
    p.add_argument("heldout")
    p.add_argument("--modelopt-python", default="/work/venv-modelopt/bin/python")
    args = p.parse_args(argv)
    from graphfix.convert.export.int8 import Int8Quantizer, _Feeder, accuracy, head_nodes, probabilities
    from graphfix.data.datasets import Dataset
    from graphfix.model import load_onnx

    fp32 = load_onnx(args.model)
    labels, thresholds = fp32.labels, np.asarray(fp32.thresholds, np.float32)
    with np.load(args.calibration) as c, np.load(args.heldout) as h:
        calib, held = Dataset.from_arrays(c["x"], c["y"], labels), Dataset.from_arrays(h["x"], h["y"], labels)
    name = [v.name for v in fp32.ir.graph.inputs if not v.is_initializer()][0]
    measure = _Feeder(held, name, 32, None, np.float32)
    reference = probabilities(fp32, measure)

    def row(quantizer: str, method: str, seconds: float, path: str) -> None:
        acc = accuracy(held.y, reference, probabilities(load_onnx(path), measure), thresholds, labels)
        print(json.dumps({"quantizer": quantizer, "method": method, "seconds": round(seconds, 1), **structure(path),
                          "mAP_fp32": acc["fp32"]["mAP"], "mAP_int8": acc["int8"]["mAP"], "drop": acc["mAP_drop"],
                          "micro_f1_int8": acc["int8"]["micro_f1"], "max_abs": acc["max_abs_prob_diff"]}), flush=True)

    for method in ("percentile", "entropy", "max"):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            model = Int8Quantizer(fp32, _Feeder(calib, name, 8, None, np.float32), method, tmp).quantize()
            seconds = time.perf_counter() - t
            model.save(os.path.join(tmp, "ort.onnx"))
            row("onnxruntime", method, seconds, os.path.join(tmp, "ort.onnx"))
    exclude = ",".join(sorted(head_nodes(fp32)))
    for method in ("entropy", "max"):  # Model Optimizer's int8 calibrators
        with tempfile.TemporaryDirectory() as tmp:
            script, out = os.path.join(tmp, "mo.py"), os.path.join(tmp, "mo.onnx")
            Path(script).write_text(_MODELOPT)
            res = subprocess.run([args.modelopt_python, script, args.model, args.calibration, out, method, exclude],
                                 capture_output=True, text=True)
            if res.returncode != 0 or not os.path.exists(out):
                tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
                print(json.dumps({"quantizer": "modelopt", "method": method, "error": tail}), flush=True)
                continue
            row("modelopt", method, json.loads(res.stdout.strip().splitlines()[-1])["seconds"], out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
