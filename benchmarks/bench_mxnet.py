"""Benchmark the MXNet importer on full-size checkpoints, made without mxnet.

    .venv/bin/python benchmarks/bench_mxnet.py [--workdir DIR] [--repeat 3]

Writes a ResNet-50 v2 and an Inception v3 checkpoint (1000 classes, ~100 MB of float32 params
each, seeded) as symbol JSON (mxnet 1.x layout, the node sequence gluon's `net.export` writes)
plus a V2 params file with graphfix's own writer, then converts each one `repeat` times, every
run in a fresh subprocess: `graphfix.convert.load` + `Model.save`, as `graphfix convert` does.
Prints MB/s (params bytes / seconds) and the child's peak RSS (ru_maxrss) against the targets:
over 300 MB/s and peak RSS under 2.5x the params size. Not run by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from graphfix.convert.mxnet._params import write_params  # noqa: E402


class _Net:
    """Symbol JSON + params writer that tracks channels (NCHW) like gluon's deferred init."""

    def __init__(self, seed: int) -> None:
        self.nodes: list[dict] = []
        self.params: dict[str, np.ndarray] = {}
        self.rng = np.random.default_rng(seed)
        self.count: dict[str, int] = {}

    def _name(self, kind: str) -> str:
        k = self.count.get(kind, 0)
        self.count[kind] = k + 1
        return f"{kind}{k}"

    def var(self, name: str, shape=None, aux: bool = False, fill: str = "normal") -> int:
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        if shape is not None:
            if fill == "ones":
                arr = self.rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
            elif fill == "small":
                arr = (self.rng.standard_normal(shape, dtype=np.float32) * 0.1).astype(np.float32)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                arr = self.rng.standard_normal(shape, dtype=np.float32)
                arr *= np.float32(1.0 / np.sqrt(fan_in))
            self.params[("aux:" if aux else "arg:") + name] = arr
        return len(self.nodes) - 1

    def op(self, op: str, inputs: list[int], name: str, **attrs) -> int:
        node = {"op": op, "name": name, "inputs": [[i, 0, 0] for i in inputs]}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return len(self.nodes) - 1

    # layers: each returns (node id, channels)
    def conv(self, x, cin, cout, k, s=1, p=0, bias=False):
        name = self._name("conv")
        kh, kw = (k, k) if isinstance(k, int) else k
        ph, pw = (p, p) if isinstance(p, int) else p
        ins = [x, self.var(f"{name}_weight", (cout, cin, kh, kw))]
        if bias:
            ins.append(self.var(f"{name}_bias", (cout,), fill="small"))
        return self.op("Convolution", ins, name, kernel=(kh, kw), stride=(s, s), pad=(ph, pw), num_filter=cout,
                       no_bias=not bias), cout

    def bn(self, x, c, fix_gamma=False):
        name = self._name("batchnorm")
        ins = [x, self.var(f"{name}_gamma", (c,), fill="ones"), self.var(f"{name}_beta", (c,), fill="small"),
               self.var(f"{name}_running_mean", (c,), aux=True, fill="small"),
               self.var(f"{name}_running_var", (c,), aux=True, fill="ones")]
        return self.op("BatchNorm", ins, name, eps=1e-5, fix_gamma=fix_gamma, momentum=0.9)

    def relu(self, x):
        return self.op("Activation", [x], self._name("relu"), act_type="relu")

    def pool(self, x, kind, k, s, p=0, global_pool=False, full=False):
        attrs = {"pool_type": kind, "kernel": (k, k), "stride": (s, s), "pad": (p, p), "global_pool": global_pool,
                 "pooling_convention": "full" if full else "valid"}
        return self.op("Pooling", [x], self._name("pool"), **attrs)

    def dense(self, x, cin, cout):
        name = self._name("dense")
        w = self.var(f"{name}_weight", (cout, cin))
        b = self.var(f"{name}_bias", (cout,), fill="small")
        return self.op("FullyConnected", [x, w, b], name, num_hidden=cout, flatten=True)

    def save(self, prefix: str, head: int) -> int:
        doc = {
            "nodes": self.nodes,
            "arg_nodes": [i for i, n in enumerate(self.nodes) if n["op"] == "null"],
            "node_row_ptr": list(range(len(self.nodes) + 1)),
            "heads": [[head, 0, 0]],
            "attrs": {"mxnet_version": ["int", 10901]},
        }
        with open(prefix + "-symbol.json", "w") as fh:
            json.dump(doc, fh)
        write_params(prefix + "-0000.params", self.params)
        return os.path.getsize(prefix + "-0000.params")


def resnet50_v2(prefix: str) -> int:
    """gluon resnet50_v2: BN(data, no scale) -> conv7 -> BN/ReLU/maxpool -> 16 pre-act bottlenecks."""
    n = _Net(seed=50)
    x = n.var("data")
    x = n.bn(x, 3, fix_gamma=True)
    x, c = n.conv(x, 3, 64, 7, 2, 3)
    x = n.relu(n.bn(x, c))
    x = n.pool(x, "max", 3, 2, 1)
    for stage, (blocks, width) in enumerate(zip([3, 4, 6, 3], [256, 512, 1024, 2048])):
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 0) else 1
            pre = n.relu(n.bn(x, c))
            shortcut = x
            if i == 0:
                shortcut, _ = n.conv(pre, c, width, 1, stride)
            y, m = n.conv(pre, c, width // 4, 1, 1)
            y = n.relu(n.bn(y, m))
            y, m = n.conv(y, m, width // 4, 3, stride, 1)
            y = n.relu(n.bn(y, m))
            y, m = n.conv(y, m, width, 1, 1)
            x = n.op("elemwise_add", [y, shortcut], n._name("add"))
            c = width
    x = n.relu(n.bn(x, c))
    x = n.pool(x, "avg", 1, 1, global_pool=True)
    x = n.op("Flatten", [x], n._name("flatten"))
    x = n.dense(x, c, 1000)
    return n.save(prefix, x)


def inception_v3(prefix: str) -> int:
    """gluon inceptionv3 topology (A/B/C/D/E blocks), 1000 classes."""
    n = _Net(seed=3)

    def basic(x, cin, cout, k, s=1, p=0):
        y, c = n.conv(x, cin, cout, k, s, p)
        return n.relu(n.bn(y, c)), c

    def seq(x, cin, settings):
        for cout, k, s, p in settings:
            x, cin = basic(x, cin, cout, k, s, p)
        return x, cin

    def concat(parts):
        return n.op("Concat", [p for p, _ in parts], n._name("concat"), dim=1, num_args=len(parts)), sum(c for _, c in parts)

    def block_a(x, c, pool_features):
        return concat([seq(x, c, [(64, 1, 1, 0)]),
                       seq(x, c, [(48, 1, 1, 0), (64, 5, 1, 2)]),
                       seq(x, c, [(64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 1, 1)]),
                       seq(n.pool(x, "avg", 3, 1, 1), c, [(pool_features, 1, 1, 0)])])

    def block_b(x, c):
        return concat([seq(x, c, [(384, 3, 2, 0)]),
                       seq(x, c, [(64, 1, 1, 0), (96, 3, 1, 1), (96, 3, 2, 0)]),
                       (n.pool(x, "max", 3, 2), c)])

    def block_c(x, c, c7):
        return concat([seq(x, c, [(192, 1, 1, 0)]),
                       seq(x, c, [(c7, 1, 1, 0), (c7, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0))]),
                       seq(x, c, [(c7, 1, 1, 0), (c7, (7, 1), 1, (3, 0)), (c7, (1, 7), 1, (0, 3)),
                                  (c7, (7, 1), 1, (3, 0)), (192, (1, 7), 1, (0, 3))]),
                       seq(n.pool(x, "avg", 3, 1, 1), c, [(192, 1, 1, 0)])])

    def block_d(x, c):
        return concat([seq(x, c, [(192, 1, 1, 0), (320, 3, 2, 0)]),
                       seq(x, c, [(192, 1, 1, 0), (192, (1, 7), 1, (0, 3)), (192, (7, 1), 1, (3, 0)),
                                  (192, 3, 2, 0)]),
                       (n.pool(x, "max", 3, 2), c)])

    def block_e(x, c):
        b1 = seq(x, c, [(320, 1, 1, 0)])
        s2, c2 = seq(x, c, [(384, 1, 1, 0)])
        b2 = concat([seq(s2, c2, [(384, (1, 3), 1, (0, 1))]), seq(s2, c2, [(384, (3, 1), 1, (1, 0))])])
        s3, c3 = seq(x, c, [(448, 1, 1, 0), (384, 3, 1, 1)])
        b3 = concat([seq(s3, c3, [(384, (1, 3), 1, (0, 1))]), seq(s3, c3, [(384, (3, 1), 1, (1, 0))])])
        b4 = seq(n.pool(x, "avg", 3, 1, 1), c, [(192, 1, 1, 0)])
        return concat([b1, b2, b3, b4])

    x = n.var("data")
    x, c = seq(x, 3, [(32, 3, 2, 0), (32, 3, 1, 0), (64, 3, 1, 1)])
    x = n.pool(x, "max", 3, 2)
    x, c = seq(x, c, [(80, 1, 1, 0), (192, 3, 1, 0)])
    x = n.pool(x, "max", 3, 2)
    for pf in (32, 64, 64):
        x, c = block_a(x, c, pf)
    x, c = block_b(x, c)
    for c7 in (128, 160, 160, 192):
        x, c = block_c(x, c, c7)
    x, c = block_d(x, c)
    x, c = block_e(x, c)
    x, c = block_e(x, c)
    x = n.pool(x, "avg", 8, 1)
    x = n.op("Dropout", [x], n._name("dropout"), p=0.5)
    x = n.op("Flatten", [x], n._name("flatten"))
    x = n.dense(x, c, 1000)
    label = n.var("softmax_label")
    x = n.op("SoftmaxOutput", [x, label], "softmax")
    return n.save(prefix, x)


_CHILD = r"""
import resource, sys, time
sys.path.insert(0, {repo!r})
import graphfix.convert
from graphfix.convert.mxnet import _driver, _params, _symbol
from graphfix.model import source_metadata
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
model = graphfix.convert.load({sym!r}, input_shape={shape!r})
t1 = time.perf_counter()
model.save({out!r})
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
nodes = len(model.graph)
del model
# phases, after the peak was taken: conversion without hashing, and sha256 alone
t3 = time.perf_counter()
sym = _symbol.read_symbol({sym!r})
_driver.build_model(sym, _params.read_params({params!r}), input_shapes=graphfix.convert.parse_input_shapes({shape!r}))
t4 = time.perf_counter()
source_metadata("mxnet", [{sym!r}, {params!r}])
t5 = time.perf_counter()
print(t1 - t0, t2 - t0, base * 1024, peak * 1024, nodes, t4 - t3, t5 - t4)
"""

MODELS = {"resnet50_v2": (resnet50_v2, "data:1,3,224,224"), "inceptionv3": (inception_v3, "data:1,3,299,299")}


def run_once(prefix: str, shape: str) -> list[float]:
    code = _CHILD.format(repo=REPO, sym=prefix + "-symbol.json", params=prefix + "-0000.params", shape=shape,
                         out=prefix + ".onnx")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [float(v) for v in proc.stdout.split()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where to write the checkpoints (default: a temp folder)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--check", action="store_true", help="also run the converted models once (onnxruntime)")
    parser.add_argument("--make", metavar="NAME", help=argparse.SUPPRESS)  # child: write one checkpoint
    args = parser.parse_args(argv)
    work = args.workdir or tempfile.mkdtemp(prefix="graphfix-bench-mxnet-")
    os.makedirs(work, exist_ok=True)
    if args.make:
        print(MODELS[args.make][0](os.path.join(work, args.make)))
        return 0
    ok = True
    print(f"workdir {work}; {os.cpu_count()} CPUs")
    for name, (_, shape) in MODELS.items():
        prefix = os.path.join(work, name)
        t0 = time.perf_counter()
        # Written by a child: Linux keeps ru_maxrss across fork+exec, so this process stays small.
        made = subprocess.run([sys.executable, __file__, "--workdir", work, "--make", name],
                              capture_output=True, text=True, check=True)
        size = int(made.stdout.split()[-1])
        print(f"{name}: wrote {size / 1e6:.1f} MB of params in {time.perf_counter() - t0:.1f} s")
        best = None
        for _ in range(args.repeat):
            res = run_once(prefix, shape)
            best = res if best is None or res[1] < best[1] else best
        load_s, total_s, base, peak, nodes, build_s, hash_s = best
        mb = size / 1e6
        ratio = peak / size
        print(f"{name}: {int(nodes)} ONNX nodes; load {load_s:.3f} s ({mb / load_s:.0f} MB/s), load+save "
              f"{total_s:.3f} s ({mb / total_s:.0f} MB/s); peak RSS {peak / 1e6:.0f} MB = {ratio:.2f}x params "
              f"(after imports {base / 1e6:.0f} MB); best of {args.repeat}")
        print(f"{name}: phases: convert without hashing {build_s:.3f} s ({mb / build_s:.0f} MB/s), "
              f"sha256 of the sources for graphfix.source {hash_s:.3f} s ({mb / hash_s:.0f} MB/s), "
              f"Model.save {total_s - load_s:.3f} s ({mb / (total_s - load_s):.0f} MB/s)")
        ok &= mb / total_s > 300 and ratio < 2.5
    if args.check:  # after every measurement: running grows this process, and children inherit its ru_maxrss
        import graphfix

        for name, (_, shape) in MODELS.items():
            m = graphfix.load(os.path.join(work, name + ".onnx"))
            dims = [int(d) for d in shape.split(":")[1].split(",")]
            x = np.random.default_rng(0).standard_normal([2] + dims[1:], dtype=np.float32)
            out = next(iter(m.run(x).values()))
            print(f"{name}: ran batch 2 -> {out.shape}, finite={bool(np.isfinite(out).all())}")
    print("targets (> 300 MB/s load+save, peak RSS < 2.5x params):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
