"""Benchmark: CLI start-up (issue 16), each case a fresh process, medians side by side in one run.

Run:  .venv/bin/python benchmarks/bench_startup.py [--repeat 7] [--old DIR]
Cases: `python -c pass`; `graphfix --help`, `--version`, `inspect --help`; `inspect` of a small
ONNX model; open_nsfw `convert` end to end (when `bash fixtures/caffe/fetch_nsfw.sh .cache/nsfw`
has fetched it) against OpenCV's import + readNetFromCaffe + one forward (when cv2 is installed).
`--old DIR` also runs the graphfix cases from another source tree (e.g. `git archive REV | tar -x
-C DIR`), for before/after figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NSFW = ROOT / ".cache" / "nsfw"

OPENCV = """
import sys, numpy as np, cv2
net = cv2.dnn.readNetFromCaffe(sys.argv[1], sys.argv[2])
net.setInput(np.zeros((1, 3, 224, 224), np.float32))
net.forward()
"""


def _time(cmd: list[str], src: Path, repeat: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(src))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, env=env, cwd=src)  # -m puts the cwd first
        times.append(time.perf_counter() - start)
        if res.returncode not in (0,):
            raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stderr.decode()[-2000:]}")
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--old", type=Path, help="another source tree to compare (before)")
    args = ap.parse_args()
    py = sys.executable
    gf = [py, "-m", "graphfix.cli"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    onnx = ROOT / "fixtures" / "onnx" / "cnn_softmax.onnx"
    cases = [
        ("python -c pass", [py, "-c", "pass"], False),
        ("graphfix --help", [*gf, "--help"], True),
        ("graphfix --version", [*gf, "--version"], True),
        ("graphfix inspect --help", [*gf, "inspect", "--help"], True),
        ("graphfix inspect small.onnx", [*gf, "inspect", str(onnx)], True),
    ]
    proto, weights = NSFW / "deploy.prototxt", NSFW / "resnet_50_1by2_nsfw.caffemodel"
    if proto.exists() and weights.exists():
        cases.append(("graphfix convert open_nsfw", [*gf, "convert", str(proto), "--weights", str(weights), "-o", str(tmp / "nsfw.onnx"), "-q"], True))
        try:
            import cv2  # noqa: F401

            cases.append(("OpenCV import+read+forward nsfw", [py, "-c", OPENCV, str(proto), str(weights)], False))
        except ImportError:
            print("(cv2 not installed: no OpenCV case)")
    else:
        print("(open_nsfw not fetched: bash fixtures/caffe/fetch_nsfw.sh .cache/nsfw)")
    rows = []
    for _ in range(1):  # interleave trees per case so both see the same load
        for name, cmd, is_gf in cases:
            now = _time(cmd, ROOT, args.repeat)
            old = _time(cmd, args.old, args.repeat) if args.old and is_gf else None
            rows.append((name, now, old))
    base = rows[0][1]
    print(f"{'case':<34} {'median s':>9} {'x pass':>7}" + (f" {'old s':>8} {'old/new':>8}" if args.old else ""))
    for name, now, old in rows:
        line = f"{name:<34} {now:9.3f} {now / base:7.2f}"
        if args.old:
            line += f" {old:8.3f} {old / now:8.2f}" if old is not None else ""
        print(line)


if __name__ == "__main__":
    main()
