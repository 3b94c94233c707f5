"""Benchmark: fleet conversion of 30 mixed fixtures (27 models + 3 broken), --jobs 1 vs --jobs 2.

Run:  .venv/bin/python benchmarks/bench_fleet.py [--count 27] [--broken 3]
Builds the folder from fixtures/ (ONNX, MXNet and Caffe models, each in its own folder), then
times `graphfix convert DIR -o OUT --recursive --force --jobs N` for N = 1 and 2.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"


def model_units() -> list[list[Path]]:
    """Each whole-model fixture as the list of files it needs."""
    units = [[p] for p in sorted((FIXTURES / "onnx").glob("*.onnx"))]
    for sym in sorted((FIXTURES / "mxnet").glob("*/*-symbol.json")):
        stem = sym.name[: -len("-symbol.json")]
        params = sorted(sym.parent.glob(f"{stem}-*.params"))
        if params:
            units.append([sym, params[-1]])
    for proto in sorted((FIXTURES / "caffe").glob("*.prototxt")):
        if proto.with_suffix(".caffemodel").exists():
            units.append([proto, proto.with_suffix(".caffemodel")])
    return units


def make_fleet(root: Path, count: int, broken: int) -> int:
    """Copy `count` fixture models (each in its own folder, some nested) plus `broken` broken ones."""
    units = model_units()[:count]
    for i, files in enumerate(units):
        folder = root / ("deep" if i % 3 == 0 else ".") / f"m{i:02d}"
        folder.mkdir(parents=True)
        for f in files:
            shutil.copy(f, folder / f.name)
    bad = root / "broken"
    bad.mkdir()
    kinds = [("garbage.onnx", b"not a model at all"),
             ("cut-symbol.json", b'{"nodes": [{"op": "null", "name": "data", "inputs": []'),
             ("empty.onnx", b"")]
    for name, data in kinds[:broken]:
        (bad / name).write_bytes(data)
    if broken >= 2:
        (bad / "cut-0000.params").write_bytes(b"\x12\x01")
    return len(units)


def run(src: Path, out: Path, jobs: int) -> tuple[float, dict]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "graphfix.cli", "convert", str(src), "-o", str(out), "--recursive",
                           "--force", "--jobs", str(jobs), "--json"], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, json.loads(proc.stdout)["counts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=27)
    parser.add_argument("--broken", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "models"
        n = make_fleet(src, args.count, args.broken)
        t1, c1 = run(src, Path(tmp) / "out1", 1)
        t2, c2 = run(src, Path(tmp) / "out2", 2)
    print(json.dumps({"models": n, "broken": args.broken, "jobs1_s": round(t1, 2), "jobs2_s": round(t2, 2),
                      "speedup": round(t1 / t2, 2), "counts_jobs1": c1, "counts_jobs2": c2}, indent=2))


if __name__ == "__main__":
    main()
