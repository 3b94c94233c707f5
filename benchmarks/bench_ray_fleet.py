"""Benchmark: a fleet of 200 small models, `convert --ray` (local Ray) vs `convert --jobs N` (worker pool).

Run:  .venv/bin/python benchmarks/bench_ray_fleet.py [--count 200] [--jobs 2] [--json]
Builds the fleet with bench_fleet.make_named_fleet (ONNX, MXNet and Caffe fixtures round-robin,
each in its own folder), then times side by side in one run, each as a fresh
`python -m graphfix.cli convert DIR -o OUT -r --force --json` process: the local pool with
`--jobs N`, and `--ray` (a local Ray with this machine's CPUs, started and shut down inside the
timed command, plus the shared file-system check). Prints the times, the counts and the ratio,
and the fixed cost of `--ray` alone (the same command on an empty folder: start, check, shut down).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_fleet import make_named_fleet  # noqa: E402


def run_cli(src: Path, out: Path, *mode: str) -> tuple[float, dict]:
    """`graphfix convert SRC -o OUT -r --force --json MODE...`: wall seconds and the counts."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRAPHFIX_PROGRESS="0")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "graphfix.cli", "convert", str(src), "-o", str(out), "-r", "--force",
                           "--json", *mode], capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"convert {' '.join(mode)} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}") from None
    return seconds, {k: v for k, v in doc["counts"].items() if v}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="models in the fleet (default 200)")
    parser.add_argument("--jobs", type=int, default=2, help="local pool size (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "models"
        models = make_named_fleet(src, args.count)
        formats = {f: sum(1 for _, g, _ in models if g == f) for f in ("onnx", "mxnet", "caffe")}
        pool_s, pool_counts = run_cli(src, Path(tmp) / "pool", "--jobs", str(args.jobs))
        ray_s, ray_counts = run_cli(src, Path(tmp) / "ray", "--ray")
        (Path(tmp) / "empty").mkdir()
        fixed_s, _ = run_cli(Path(tmp) / "empty", Path(tmp) / "ray-empty", "--ray")
    doc = {"models": args.count, "formats": formats, "cpus": os.cpu_count(), "jobs": args.jobs,
           "pool_s": round(pool_s, 2), "pool_counts": pool_counts,
           "ray_s": round(ray_s, 2), "ray_counts": ray_counts,
           "ray_fixed_s": round(fixed_s, 2), "ray_vs_pool": round(ray_s / pool_s, 2),
           "ray_minus_fixed_vs_pool": round((ray_s - fixed_s) / pool_s, 2)}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(f"{args.count} models {formats} on {doc['cpus']} CPUs")
    print(f"  convert --jobs {args.jobs}  {pool_s:7.2f} s  {pool_counts}")
    print(f"  convert --ray     {ray_s:7.2f} s  {ray_counts}")
    print(f"  --ray, no models  {fixed_s:7.2f} s  (start Ray, file-system check, shut down)")
    print(f"  ray / pool        {doc['ray_vs_pool']:7.2f}x  ({doc['ray_minus_fixed_vs_pool']:.2f}x without the fixed cost)")


if __name__ == "__main__":
    main()
