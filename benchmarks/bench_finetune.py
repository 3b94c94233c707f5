"""Acceptance benchmarks of `train-head --train-from` (issue 24): speed and memory.

    PYTHONPATH=. python benchmarks/bench_finetune.py [--rows 256 --channels 512 --size 224 --batch 64 --reps 3]
                                                     [--mem-rows 4000 --mem-channels 256 --budget 16M]

(a) Speed: one fine-tuning epoch of torchvision resnet18's last BasicBlock at full width (512
    channels at 7x7, a synthetic ONNX model) and of the last block of the thin MXNet resnet18_v1
    fixture (stage4's second BasicBlock, at --size) + global pool + the head, through graphfix's rebuilt segment
    (`graphfix.train.finetune._Trainer.epoch`, batches streamed from the activation cache) vs
    the same block written by hand as a torch nn.Module (torchvision's BasicBlock layout) with the
    same weights, the same batches, the same Adam parameter groups and loss, 1 torch thread both.
    The two are timed alternately, `--reps` times each; medians and their ratio are printed.
(b) Memory: train_head(train_from="-1", epochs=1) on the synthetic layer4 block (--mem-channels
    at 7x7, --mem-rows rows: 4000 x 256 x 49 float16 = 100 MB of activations) in a child process,
    over a small memory budget (GRAPHFIX_MEMORY_BUDGET, --budget; at half and all the rows) vs a
    budget above them: peak
    tracemalloc (NumPy + Python) and peak RSS (anonymous, file, shmem: sampled from /proc/self/status) during
    fine-tuning, over the baseline after a 40-row warm-up run (torch's lazy imports). The inputs
    are a memory-mapped .npy, so they do not count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "fixtures/mxnet/resnet18_v1/resnet18_v1-symbol.json"


def _model():
    import graphfix as gf

    return gf.swap_head(gf.load(str(MODEL)), labels=5, seed=0)


def _layer4_model(channels: int):
    """torchvision resnet18's last BasicBlock at full width as a swapped ONNX model: data [N, C, 7, 7]
    -> Relu (the cut, `x`) -> conv3x3-BN-Relu-conv3x3-BN + x -> Relu -> GlobalAveragePool -> Flatten
    -> graphfix head (5 labels). He-initialised weights, random BN statistics."""
    import onnx
    import onnx.helper as oh

    from graphfix.convert._onnx import make_model
    from graphfix.model import Model

    rng = np.random.default_rng(0)
    c, f32 = channels, np.float32
    inits = {}
    for i in (1, 2):
        inits[f"conv{i}.w"] = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(f32)
        inits[f"bn{i}.s"] = (1 + 0.1 * rng.standard_normal(c)).astype(f32)
        inits[f"bn{i}.b"] = (0.1 * rng.standard_normal(c)).astype(f32)
        inits[f"bn{i}.m"] = (0.1 * rng.standard_normal(c)).astype(f32)
        inits[f"bn{i}.v"] = (1 + 0.1 * rng.random(c)).astype(f32)
    inits["graphfix_head.weight"] = (0.01 * rng.standard_normal((5, c))).astype(f32)
    inits["graphfix_head.bias"] = np.zeros(5, f32)
    bn = lambda i, a, o: oh.make_node("BatchNormalization", [a, f"bn{i}.s", f"bn{i}.b", f"bn{i}.m", f"bn{i}.v"], [o],  # noqa: E731
                                      name=f"bn{i}")
    nodes = [
        oh.make_node("Relu", ["data"], ["x"], name="stem"),
        oh.make_node("Conv", ["x", "conv1.w"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        bn(1, "c1", "b1"), oh.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        oh.make_node("Conv", ["r1", "conv2.w"], ["c2"], name="conv2", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        bn(2, "c2", "b2"), oh.make_node("Add", ["b2", "x"], ["sum"], name="add"),
        oh.make_node("Relu", ["sum"], ["out"], name="relu2"),
        oh.make_node("GlobalAveragePool", ["out"], ["gap"], name="gap"),
        oh.make_node("Flatten", ["gap"], ["features"], name="flatten"),
        oh.make_node("Gemm", ["features", "graphfix_head.weight", "graphfix_head.bias"], ["logits"], name="graphfix_head",
                     transB=1),
        oh.make_node("Sigmoid", ["logits"], ["probabilities"], name="graphfix_sigmoid"),
    ]
    graph = oh.make_graph(nodes, "layer4", [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", c, 7, 7])],
                          [oh.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 5]),
                           oh.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT, ["N", 5])],
                          [onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = make_model(graph)
    onnx.helper.set_model_props(proto, {"graphfix.labels": json.dumps(list("abcde"))})
    return Model.from_proto(proto)


def _labels(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((n, 5)) < 0.3).astype(np.uint8)


class HandBlock:
    """torchvision's BasicBlock (no downsample) + global average pool, written by hand."""

    @staticmethod
    def make(torch, model, nodes):
        nn = torch.nn

        class Block(nn.Module):
            def __init__(self, c: int) -> None:
                super().__init__()
                self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(c)
                self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
                self.bn2 = nn.BatchNorm2d(c)

            def forward(self, x):
                out = torch.relu(self.bn1(self.conv1(x)))
                out = self.bn2(self.conv2(out))
                return torch.relu(out + x).mean(dim=(2, 3))

        inits = model.ir.graph.initializers
        arr = lambda v: torch.from_numpy(inits[v.name].const_value.numpy().copy())  # noqa: E731
        convs = [n for n in nodes if n.op_type == "Conv"]
        bns = [n for n in nodes if n.op_type == "BatchNormalization"]
        block = Block(convs[0].inputs[1].shape[0])
        with torch.no_grad():
            for conv, bn, mod_c, mod_b in zip(convs, bns, (block.conv1, block.conv2), (block.bn1, block.bn2)):
                mod_c.weight.copy_(arr(conv.inputs[1]))
                mod_b.weight.copy_(arr(bn.inputs[1]))
                mod_b.bias.copy_(arr(bn.inputs[2]))
                mod_b.running_mean.copy_(arr(bn.inputs[3]))
                mod_b.running_var.copy_(arr(bn.inputs[4]))
                mod_b.eps = float(bn.attributes["epsilon"].value) if "epsilon" in bn.attributes else 1e-5
        block.eval()  # frozen BN statistics, as graphfix's default
        names = [convs[0].inputs[1].name, bns[0].inputs[1].name, bns[0].inputs[2].name,
                 convs[1].inputs[1].name, bns[1].inputs[1].name, bns[1].inputs[2].name]
        params = [block.conv1.weight, block.bn1.weight, block.bn1.bias, block.conv2.weight, block.bn2.weight,
                  block.bn2.bias]
        return block, dict(zip(names, params))


def speed(rows: int, size: int, batch: int, reps: int, channels: int | None = None) -> dict:
    """One epoch, graphfix vs hand-written torch: the resnet18_v1 fixture at `size` (channels None),
    or the synthetic full-width layer4 block with `channels` channels at 7x7."""
    import torch

    from graphfix.data import Dataset
    from graphfix.data.features import find_head_gemm, find_value
    from graphfix.train.finetune import _Activations, _Segment, _Trainer, resolve_train_from, segment_nodes
    from graphfix.train.head_fit import TrainConfig

    torch.set_num_threads(1)
    model = _model() if channels is None else _layer4_model(channels)
    tensor = resolve_train_from(model, "-1")
    nodes = segment_nodes(model, tensor)
    shape = (3, size, size) if channels is None else (channels, 7, 7)
    x = np.random.default_rng(0).standard_normal((rows, *shape)).astype(np.float32)
    data = Dataset.from_arrays(x, _labels(rows, 1))
    seg = _Segment(torch, model, nodes, find_value(model, tensor), find_head_gemm(model).inputs[0])
    t0 = time.perf_counter()
    cache = _Activations(torch, model, seg, tensor, [data], {"batch_size": 32, "progress": False})
    extract_s = time.perf_counter() - t0
    n_feat = cache.feats.shape[1]
    rng = np.random.default_rng(2)

    class Fit:  # a head-only solution stand-in: the timing does not depend on its values
        weight = (rng.standard_normal((5, n_feat)) * 0.01).astype(np.float32)
        bias = np.zeros(5, np.float32)
        history = {"weight_decay": 1e-3}

    cfg = TrainConfig(loss="bce", seed=0)
    cfg.validate()
    rows_all = np.arange(rows)
    trainer = _Trainer(torch, seg, cache, data.y.astype(np.float32), rows_all, rows_all[:32], Fit, cfg, 1e-3, batch,
                       data.y)

    block, by_name = HandBlock.make(torch, model, nodes)
    a = torch.from_numpy(np.asarray(cache.acts, np.float32))
    with torch.no_grad():  # the same function: the hand block equals the rebuilt segment
        diff = float((block(a[:8]) - seg(a[:8]).reshape(8, -1)).abs().max())
    assert diff < 1e-4, diff
    w = torch.nn.Parameter(trainer.w.detach().clone())
    b = torch.nn.Parameter(trainer.b.detach().clone())
    start = {k: p.detach().clone() for k, p in by_name.items()}
    groups = [{"params": [w, b], "lr": 1e-3}] + [
        {"params": [p], "lr": g["lr"]} for p, g in zip(by_name.values(), trainer.opt.param_groups[1:])]
    opt = torch.optim.Adam(groups, lr=1e-3)
    y_all = torch.from_numpy(data.y.astype(np.float32))
    gen = torch.Generator().manual_seed(0)
    mu, sd, lam = trainer.mu_t, trainer.sd_t, trainer.lam
    F = torch.nn.functional

    def hand_epoch() -> None:
        order = torch.randperm(rows, generator=gen)
        for i in range(0, rows, batch):
            idx = order[i : i + batch].sort().values
            opt.zero_grad()
            z = ((block(a[idx]) - mu) / sd) @ w.T + b
            penalty = (w**2).sum() + sum(((p - start[k]) ** 2).sum() for k, p in by_name.items())
            loss = F.binary_cross_entropy_with_logits(z, y_all[idx], reduction="sum") / len(idx) + lam / 2 * penalty
            loss.backward()
            opt.step()

    ours, hand = [], []
    trainer.epoch()  # warm-up of both
    hand_epoch()
    for _ in range(reps):
        t = time.perf_counter()
        trainer.epoch()
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        hand_epoch()
        hand.append(time.perf_counter() - t)
    name = "resnet18_v1 (MXNet fixture, thin), last block" if channels is None else \
        f"resnet18 layer4 BasicBlock, {channels} channels at 7x7 (synthetic ONNX)"
    return {"model": name, "rows": rows, "input": list(shape), "batch": batch,
            "activation_shape": list(cache.acts.shape[1:]), "activation_dtype": cache.dtype, "extract_s": round(extract_s, 2),
            "graphfix_epoch_s": [round(t, 3) for t in ours], "hand_torch_epoch_s": [round(t, 3) for t in hand],
            "ratio_median": round(statistics.median(ours) / statistics.median(hand), 3), "torch_threads": 1}


def _rss() -> dict[str, int]:
    """RssAnon, RssFile, RssShmem of this process (bytes)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
                out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def memory_child(npy: str, budget: str, rows: str) -> dict:
    import tracemalloc

    os.environ["GRAPHFIX_MEMORY_BUDGET"] = budget
    from graphfix.data import Dataset
    from graphfix.train import train_head

    x = np.load(npy, mmap_mode="r")[: int(rows)]
    model = _layer4_model(x.shape[1])
    data = Dataset.from_arrays(x, _labels(len(x), 1))
    val = Dataset.from_arrays(x[:200], _labels(200, 2))
    kw = dict(train_from="-1", epochs=1, cache=False, progress=False, weight_decay=1e-3, features_batch_size=64)
    # warm-up on 40 rows: torch's lazy imports (Adam pulls in torch._dynamo) are not the cache's memory
    train_head(model, Dataset.from_arrays(x[:40], _labels(40, 1)), Dataset.from_arrays(x[:20], _labels(20, 2)), **kw)

    base = _rss()
    peak = dict(base)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for k, v in _rss().items():
                peak[k] = max(peak[k], v)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    tracemalloc.start()
    thread.start()
    t = time.perf_counter()
    _, hist = train_head(model, data, val, **kw)
    seconds = time.perf_counter() - t
    stop.set()
    thread.join()
    _, traced = tracemalloc.get_traced_memory()
    return {"budget": budget, "rows": int(rows), "activations": hist["activations"], "tracemalloc_peak_mb": round(traced / 2**20, 1),
            "rss_peak_over_baseline_mb": {k: round((peak[k] - base[k]) / 2**20, 1) for k in base},
            "seconds": round(seconds, 1)}


def memory(rows: int, channels: int, budget: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, "x.npy")
        x = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(rows, channels, 7, 7))
        rng = np.random.default_rng(0)
        for i in range(0, rows, 500):
            x[i : i + 500] = rng.standard_normal((min(500, rows - i), channels, 7, 7))
        x.flush()
        del x
        out = []
        # over the budget at half and all the rows (the peak must not grow with them), then in memory
        for b, n in ((budget, rows // 2), (budget, rows), ("64G", rows)):
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            res = subprocess.run([sys.executable, __file__, "--memory-child", npy, b, str(n)], capture_output=True,
                                 text=True, env=env, check=True)
            out.append(json.loads(res.stdout.strip().splitlines()[-1]))
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--channels", type=int, default=512, help="width of the synthetic layer4 block")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem-rows", type=int, default=4000)
    ap.add_argument("--mem-channels", type=int, default=256)
    ap.add_argument("--budget", default="16M")
    ap.add_argument("--skip", choices=("speed", "memory"))
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child)))
        return
    if args.skip != "speed":
        for channels in (args.channels, None):
            print(json.dumps({"speed": speed(args.rows, args.size, args.batch, args.reps, channels)}), flush=True)
    if args.skip != "memory":
        for row in memory(args.mem_rows, args.mem_channels, args.budget):
            print(json.dumps({"memory": row}), flush=True)


if __name__ == "__main__":
    main()
