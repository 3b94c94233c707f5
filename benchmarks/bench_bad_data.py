"""Benchmark: how fast a data set with one bad image is refused, against the run on the good set.

Writes a few thousand small images (PNG and JPEG, alternating) and a `path,labels` CSV into a temp
folder, swaps the head of a real network (open_nsfw, the Caffe ResNet-50-1by2 of issue 22's user,
from .cache/nsfw when it is there (benchmarks/bench_caffe.py --nsfw-dir); else the small MXNet
ResNet-18 fixture, fed at --input-size), then times, each as a fresh `graphfix` process, end to end:

- good: `graphfix train-head MODEL --train good.csv -o OUT --no-cache` (or `features`), exit 0;
- bad: the same command on bad.csv = good.csv plus, on its last line, a text file named .png;
  it must exit 2 naming that line, before any backbone runs (the median of --repeat runs).

Target (issue 22): bad / good < 5%. The refusal costs a process start, the imports, loading the
model and reading every image header; the good run also decodes every image and runs the backbone.

    python benchmarks/bench_bad_data.py [--images 3000] [--side 96] [--input-size 224]
                                        [--command train-head|features] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NSFW = ROOT / ".cache" / "nsfw" / "deploy.prototxt"
MODEL = NSFW if NSFW.is_file() else ROOT / "fixtures" / "mxnet" / "resnet18_v1" / "resnet18_v1-symbol.json"


def _cli(*args: str | Path, cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               GRAPHFIX_CACHE=str(cwd / "cache"))
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "graphfix.cli", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, env=env)
    return time.perf_counter() - start, res


def make_set(folder: Path, n: int, side: int, labels: int) -> tuple[Path, Path]:
    """`n` images (even: PNG, odd: JPEG) under folder/img, good.csv and bad.csv (a text file named
    .png appended as the last line)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "img").mkdir()
    rows = ["path,labels"]
    for i in range(n):
        name = f"img/{i:05d}.{'png' if i % 2 == 0 else 'jpg'}"
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / name)
        chosen = [f"label_{j}" for j in range(labels) if rng.random() < 0.3] or [f"label_{i % labels}"]
        rows.append(f"{name},{';'.join(chosen)}")
    (folder / "img" / "notes.png").write_text("this is a text file, not a PNG\n")
    (folder / "good.csv").write_text("\n".join(rows) + "\n")
    (folder / "bad.csv").write_text("\n".join(rows + ["img/notes.png,label_0"]) + "\n")
    return folder / "good.csv", folder / "bad.csv"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--side", type=int, default=96, help="image side in pixels (default 96)")
    ap.add_argument("--input-size", type=int, default=224, help="the network's input H = W (default 224)")
    ap.add_argument("--model", default=str(MODEL), help="source network (default: .cache/nsfw/deploy.prototxt, else the MXNet ResNet-18 fixture)")
    ap.add_argument("--command", choices=("train-head", "features"), default="train-head")
    ap.add_argument("--repeat", type=int, default=3, help="runs of the refused command (median)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    args.model = os.path.abspath(args.model)

    with tempfile.TemporaryDirectory(prefix="gfx-bad-data-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        good, bad = make_set(folder, args.images, args.side, labels=5)
        made = time.perf_counter() - t0
        _, res = _cli("swap-head", args.model, "--labels", "5", "--input-shape",
                      f"data:1,3,{args.input_size},{args.input_size}", "-o", folder / "m.onnx", "-q", cwd=folder)
        if res.returncode != 0:
            sys.exit(f"swap-head failed: {res.stderr}")

        def command(data: Path) -> list[str | Path]:
            out = ["-o", folder / ("out.onnx" if args.command == "train-head" else "feats")]
            extra = ["--train", data] if args.command == "train-head" else [data]
            return [args.command, folder / "m.onnx", *extra, *out, "--no-cache", "-q"]

        bad_times = []
        for _ in range(args.repeat):
            seconds, res = _cli(*command(bad), cwd=folder)
            last = args.images + 2
            if res.returncode != 2 or f"line {last}: img/notes.png: cannot read image" not in res.stderr:
                sys.exit(f"the bad set was not refused as expected (exit {res.returncode}): {res.stderr}")
            bad_times.append(seconds)
        good_time, res = _cli(*command(good), cwd=folder)
        if res.returncode != 0:
            sys.exit(f"the good set failed: {res.stderr}")
        refused = statistics.median(bad_times)
        doc = {
            "command": args.command, "images": args.images, "side": args.side, "input_size": args.input_size,
            "model": os.path.relpath(args.model, ROOT), "cpus": os.cpu_count(), "images_written_s": round(made, 2),
            "good_s": round(good_time, 2), "refused_s": round(refused, 3), "refused_runs_s": [round(t, 3) for t in bad_times],
            "ratio": round(refused / good_time, 4), "target": 0.05,
        }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"{args.command} {doc['model']} on {args.images} images ({args.side}x{args.side} PNG/JPEG, network input "
              f"{args.input_size}x{args.input_size}, {doc['cpus']} CPUs):")
        print(f"  good set                      {good_time:8.2f} s")
        print(f"  bad image on the last line    {refused:8.2f} s  (refused, exit 2; median of {args.repeat})")
        print(f"  ratio                         {doc['ratio']:8.2%}  (target < 5%)")
    return 0 if doc["ratio"] < 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
