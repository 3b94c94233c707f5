"""Digit mosaics: a public multi-label benchmark generated from scikit-learn's bundled digits.

Nothing is downloaded. `load_digits` (1,797 8x8 images) is split 60/20/20 into disjoint pools
of digit images for train, held-out and test. A mosaic is a 2x2 grid of 8x8 cells (16x16 gray
image); each cell is a blank (p=0.3) or a digit drawn from the split's pool, its class drawn
from a long-tailed distribution (p_d proportional to 0.75**d; `--distribution uniform` for equal
classes); the mosaic's labels are the digits present (0-4 of 10).

The "pretrained" model is a small softmax CNN (Conv-Relu-MaxPool-Conv-Relu-GlobalMaxPool-
Flatten-Gemm-Softmax) trained with torch (seeded, a few seconds) on single digits placed in a
random quadrant of a blank 16x16 canvas, written to ONNX by hand with onnx.helper (opset 17,
explicit IR version, dynamic batch, ending in Gemm -> Softmax, `graphfix.preprocess` metadata).

Then, through the CLI: swap-head -> train-head -> calibrate (with --test and --report) ->
predict, and the metrics are printed.

    python benchmarks/digit_mosaics.py --out /tmp/mosaics        # generate + run end to end
    python benchmarks/digit_mosaics.py --out DIR --generate-only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PREPROCESS = {"layout": "NCHW", "size": [16, 16], "channel_order": "RGB", "mean": [0.0], "std": [1.0],
              "scale": 1.0 / 255.0, "pixel_range": 255}


def digit_pools(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint train/heldout/test pools of (uint8 8x8 images in 0..255, digit targets)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    a, b = int(0.6 * len(order)), int(0.8 * len(order))
    parts = {"train": order[:a], "heldout": order[a:b], "test": order[b:]}
    return {k: (images[v], d.target[v]) for k, v in parts.items()}


def class_probs(distribution: str) -> np.ndarray:
    """Digit frequencies: "uniform", or "longtail" (p_d proportional to 0.75**d: 13x rarer nines)."""
    if distribution == "uniform":
        return np.full(10, 0.1)
    if distribution == "longtail":
        p = 0.75 ** np.arange(10)
        return p / p.sum()
    raise ValueError(f"unknown distribution {distribution!r}")


def make_mosaics(pool: tuple[np.ndarray, np.ndarray], n: int, seed: int, p_blank: float = 0.3,
                 distribution: str = "longtail"):
    """n mosaics: uint8 [n, 16, 16] images and uint8 [n, 10] label sets."""
    images, targets = pool
    by_class = [np.flatnonzero(targets == d) for d in range(10)]
    probs = class_probs(distribution)
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 16, 16), np.uint8)
    y = np.zeros((n, 10), np.uint8)
    for i in range(n):
        for cell in range(4):
            if rng.random() < p_blank:
                continue
            members = by_class[rng.choice(10, p=probs)]
            k = members[rng.integers(len(members))]
            r, c = divmod(cell, 2)
            x[i, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = images[k]
            y[i, targets[k]] = 1
    return x, y


def single_digit_canvases(pool: tuple[np.ndarray, np.ndarray], copies: int, seed: int):
    """Each digit in a random quadrant of a blank 16x16 canvas: float32 [N, 1, 16, 16], int targets."""
    images, targets = pool
    rng = np.random.default_rng(seed)
    n = len(images) * copies
    x = np.zeros((n, 1, 16, 16), np.float32)
    idx = np.tile(np.arange(len(images)), copies)
    for i, k in enumerate(idx):
        r, c = divmod(int(rng.integers(4)), 2)
        x[i, 0, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = images[k] / 255.0
    return x, targets[idx].astype(np.int64)


def train_cnn(pool, *, seed: int = 0, epochs: int = 8, width: int = 16) -> dict[str, np.ndarray]:
    """Train the single-label CNN; returns its weights as NumPy arrays."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convs: one thread is faster and deterministic
    try:
        return _train_cnn(pool, seed=seed, epochs=epochs, width=width)
    finally:
        torch.set_num_threads(threads)


def _train_cnn(pool, *, seed: int, epochs: int, width: int) -> dict[str, np.ndarray]:
    import torch
    import torch.nn as nn

    torch.manual_seed(seed)
    x, t = single_digit_canvases(pool, copies=4, seed=seed)
    net = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 128):
            idx = order[i : i + 128]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[idx]), tt[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float((net(xt).argmax(1) == tt).float().mean())
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    sd["_train_accuracy"] = np.float32(acc)
    return sd


def export_cnn(weights: dict[str, np.ndarray], path: str | os.PathLike) -> None:
    """Write the CNN as ONNX (opset 17, explicit IR version, dynamic batch, Gemm -> Softmax)."""
    import onnx
    import onnx.helper as oh
    from onnx import numpy_helper

    from graphfix.convert._onnx import make_model

    nodes = [
        oh.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], name="conv1", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        oh.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        oh.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        oh.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        oh.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        oh.make_node("GlobalMaxPool", ["r2"], ["g"], name="gmp"),
        oh.make_node("Flatten", ["g"], ["features"], name="flatten"),
        oh.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["fc"], name="fc", transB=1),
        oh.make_node("Softmax", ["fc"], ["prob"], name="softmax", axis=1),
    ]
    names = {"0.weight": "conv1.weight", "0.bias": "conv1.bias", "3.weight": "conv2.weight", "3.bias": "conv2.bias",
             "7.weight": "fc.weight", "7.bias": "fc.bias"}
    inits = [numpy_helper.from_array(weights[k], v) for k, v in names.items()]
    graph = oh.make_graph(
        nodes, "digits_cnn",
        [oh.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["batch", 1, 16, 16])],
        [oh.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = make_model(graph)
    model.metadata_props.add(key="graphfix.preprocess", value=json.dumps(PREPROCESS, sort_keys=True))
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))


def _write_pngs(folder: Path, x: np.ndarray) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(x):
        name = f"{folder.name}/{i:05d}.png"
        Image.fromarray(img).save(folder.parent / name)
        names.append(name)
    return names


def generate(out: str | os.PathLike, *, n_train: int = 3000, n_heldout: int = 1000, n_test: int = 1000,
             seed: int = 0, cnn_epochs: int = 8, width: int = 16, distribution: str = "longtail") -> dict[str, str]:
    """Write pretrained.onnx, labels.txt, train.csv (names), heldout.csv (0/1 columns), test.csv + test.npz."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pools = digit_pools(seed)
    weights = train_cnn(pools["train"], seed=seed, epochs=cnn_epochs, width=width)
    export_cnn(weights, out / "pretrained.onnx")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    sizes = {"train": n_train, "heldout": n_heldout, "test": n_test}
    paths = {"model": str(out / "pretrained.onnx"), "labels": str(out / "labels.txt")}
    for k, (split, n) in enumerate(sizes.items()):
        x, y = make_mosaics(pools[split], n, seed=seed + 101 * (k + 1), distribution=distribution)
        files = _write_pngs(out / split, x)
        csv_path = out / f"{split}.csv"
        with open(csv_path, "w") as fh:
            if split == "heldout":  # one 0/1 column per label
                fh.write("path," + ",".join(LABELS) + "\n")
                for f, row in zip(files, y):
                    fh.write(f + "," + ",".join(str(int(v)) for v in row) + "\n")
            else:  # `;`-separated names
                fh.write("path,labels\n")
                for f, row in zip(files, y):
                    fh.write(f + "," + ";".join(LABELS[j] for j in np.flatnonzero(row)) + "\n")
        paths[split] = str(csv_path)
        xf = (x.astype(np.float32) * np.float32(PREPROCESS["scale"]))[:, None]
        np.savez(out / f"{split}.npz", x=xf, y=y)
        paths[f"{split}_npz"] = str(out / f"{split}.npz")
    paths["cnn_train_accuracy"] = f"{float(weights['_train_accuracy']):.4f}"
    return paths


def _cli(*args: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "graphfix.cli", *args, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}")
    return json.loads(proc.stdout)


def run_pipeline(out: str | os.PathLike, paths: dict[str, str], *, loss: str = "bce", env: dict | None = None) -> dict:
    """swap-head -> train-head -> calibrate -> predict through the CLI; returns the JSON documents."""
    out = Path(out)
    swapped, trained, calibrated = out / "swapped.onnx", out / f"trained-{loss}.onnx", out / f"calibrated-{loss}.onnx"
    docs = {}
    docs["swap-head"] = _cli("swap-head", paths["model"], "--labels", paths["labels"], "-o", str(swapped), env=env)
    docs["train-head"] = _cli("train-head", str(swapped), "--train", paths["train"], "--val", paths["heldout"],
                              "--loss", loss, "-o", str(trained), env=env)
    docs["calibrate"] = _cli("calibrate", str(trained), "--heldout", paths["heldout"], "--train", paths["train"],
                             "--test", paths["test"], "--report", str(out / f"report-{loss}"), "-o", str(calibrated), env=env)
    first = sorted((out / "test").glob("*.png"))[:5]
    docs["predict"] = _cli("predict", str(calibrated), *map(str, first), env=env)
    return docs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="digit-mosaics", help="output folder (default ./digit-mosaics)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", default="bce", help="bce, asl or softmax (comma-separated for several)")
    p.add_argument("--distribution", default="longtail", choices=("longtail", "uniform"),
                   help="digit frequencies in the mosaics (default longtail: p_d ~ 0.75**d)")
    p.add_argument("--generate-only", action="store_true")
    args = p.parse_args(argv)
    start = time.perf_counter()
    paths = generate(args.out, seed=args.seed, distribution=args.distribution)
    print(f"generated {args.out} in {time.perf_counter() - start:.1f} s (CNN train accuracy {paths['cnn_train_accuracy']})")
    if args.generate_only:
        return 0
    print("| loss | split | threshold | macro-F1 | micro-F1 | mAP | mAP (VOC07) | subset acc | Hamming |")
    print("|---|---|---|---|---|---|---|---|---|")
    for loss in args.loss.split(","):
        docs = run_pipeline(args.out, paths, loss=loss)
        for split, res in docs["calibrate"]["metrics"].items():
            for which, m in (("0.5", res["at_0.5"]), ("tuned", res["tuned"])):
                print(f"| {loss} | {split} | {which} | {m['macro_f1']:.4f} | {m['micro_f1']:.4f} | {m['mAP']:.4f} | "
                      f"{m['mAP_voc07']:.4f} | {m['subset_accuracy']:.4f} | {m['hamming_loss']:.4f} |")
        fb = docs["calibrate"]["thresholds"]["fallbacks"]
        print(f"  {loss}: fallbacks {len(fb)}; predict: " + "; ".join(
            f"{Path(r['input']).name}={'+'.join(r['labels']) or '-'}" for r in docs["predict"]["predictions"]))
    print(f"total {time.perf_counter() - start:.1f} s; command: python benchmarks/digit_mosaics.py --out {args.out} --loss {args.loss} "
          f"--distribution {args.distribution}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
