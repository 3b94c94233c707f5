"""Benchmark: feature extraction throughput vs raw onnxruntime inference, same batch size.

A random-weight CNN (3x96x96 input, 4 strided convs, global pooling, the `graphfix_head` Gemm +
Sigmoid: the structure swap-head writes) is run over the same NPZ-style array twice:

- raw: an onnxruntime InferenceSession on the whole model, `sess.run` batch after batch;
- features: `graphfix.data.extract_features` (backbone cut at the head, cache off).

Target: the feature path within 10% of raw throughput (it runs less of the graph, so it can be
faster). Both use onnxruntime's default CPU threading.

    python benchmarks/bench_features.py [--samples 2048] [--batch-size 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def build_model(n_labels: int = 20, size: int = 96, seed: int = 0):
    import onnx
    import onnx.helper as oh
    from onnx import numpy_helper

    from graphfix.convert._onnx import make_model
    from graphfix.model import Model

    rng = np.random.default_rng(seed)
    chans = [3, 32, 64, 128, 256]
    nodes, inits, prev = [], [], "data"
    for i in range(4):
        w = (rng.standard_normal((chans[i + 1], chans[i], 3, 3)) * np.sqrt(2 / (9 * chans[i]))).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"c{i}.w"), numpy_helper.from_array(np.zeros(chans[i + 1], np.float32), f"c{i}.b")]
        nodes += [oh.make_node("Conv", [prev, f"c{i}.w", f"c{i}.b"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1], strides=[2, 2]),
                  oh.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    nodes += [
        oh.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["features"], name="flatten"),
        oh.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"], name="graphfix_head", transB=1),
        oh.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_head.sigmoid"),
    ]
    inits += [numpy_helper.from_array((rng.standard_normal((n_labels, chans[-1])) * 0.01).astype(np.float32), "graphfix_head.weight"),
              numpy_helper.from_array(np.zeros(n_labels, np.float32), "graphfix_head.bias")]
    graph = oh.make_graph(
        nodes, "bench",
        [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", n_labels]),
         oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", n_labels])],
        inits,
    )
    proto = make_model(graph)
    proto.metadata_props.add(key="graphfix.labels", value=json.dumps([f"l{i}" for i in range(n_labels)]))
    return Model.from_proto(proto)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    import onnxruntime as ort

    from graphfix.data import Dataset
    from graphfix.data.features import extract_features

    model = build_model(size=args.size)
    x = np.random.default_rng(1).standard_normal((args.samples, 3, args.size, args.size)).astype(np.float32)
    ds = Dataset.from_arrays(x, np.zeros((args.samples, 20)), model.labels)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.to_bytes(), opts, providers=["CPUExecutionProvider"])
    bs = args.batch_size

    def raw() -> None:
        for i in range(0, len(x), bs):
            sess.run(None, {"data": x[i : i + bs]})

    def feats() -> None:
        extract_features(model, ds, batch_size=bs, cache=False, progress=False)

    raw()  # warm-up
    feats()
    t_raw, t_feat = [], []
    for _ in range(args.repeat):  # interleaved so both see the same machine load
        t0 = time.perf_counter()
        raw()
        t_raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        feats()
        t_feat.append(time.perf_counter() - t0)
    r, f = min(t_raw), min(t_feat)
    ratio = (len(x) / f) / (len(x) / r)
    print(f"{args.samples} inputs 3x{args.size}x{args.size}, batch {bs}, onnxruntime CPU, best of {args.repeat}")
    print(f"  raw onnxruntime (whole model): {len(x) / r:8.1f} img/s")
    print(f"  extract_features (backbone):   {len(x) / f:8.1f} img/s  (includes session creation and model cut)")
    print(f"  ratio features/raw: {ratio:.3f} (target >= 0.90: {'ok' if ratio >= 0.9 else 'MISSED'})")
    print(f"  command: {sys.executable} benchmarks/bench_features.py --samples {args.samples} --batch-size {bs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
