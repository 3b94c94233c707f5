"""Benchmark: `graphfix features` on Ray vs the plain local path, same data, same run.

20,000 JPEG images of 3x96x96 (smooth random pictures, made once under --work) and the 3x96x96
CNN of bench_features.py (4 strided convs, global pooling, the swapped head). Three runs of
`graphfix features MODEL data.csv -o DIR --json`, each a fresh process, timed end to end:

- plain: one process, one onnxruntime session (default threads), decoding on a thread pool;
- local Ray (`--ray`): a local Ray with this machine's CPUs, one actor per CPU;
- two nodes (`--two-node`): `ray start --head --num-cpus 1` plus a second node joining it with
  `--num-cpus 1`, both on this machine, and `--ray ADDRESS`; shows the rows each node did.

Each run's shards must be byte-identical to the plain run's. Target: Ray at least 0.9x the plain
throughput; the Ray overhead (start-up and scheduling) is printed as the time difference.

    python benchmarks/bench_ray_features.py [--images 20000] [--two-node] [--json]
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

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int) -> Path:
    """`n` 96x96 JPEGs and a data.csv (path,labels) under `folder` (kept for later runs)."""
    from PIL import Image

    csv = folder / f"data-{n}.csv"
    if csv.exists():
        return csv
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["path,labels"]
    for i in range(n):
        name = f"img/{i:06d}.jpg"
        if not (folder / name).exists():
            small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
            Image.fromarray(small).resize((96, 96), Image.BILINEAR).save(folder / name, quality=90)
        rows.append(f"{name},{';'.join(f'c{j}' for j in range(20) if rng.random() < 0.1)}")
    csv.write_text("\n".join(rows) + "\n")
    return csv


#: A `ray start` head uses token authentication; nodes and drivers joining it must say so too.
CLUSTER_ENV = {"RAY_AUTH_MODE": "token"}


def _features(model: Path, csv: Path, out: Path, *extra: str, env: dict | None = None) -> dict:
    cmd = [sys.executable, "-m", "graphfix.cli", "features", str(model), str(csv), "-o", str(out), "--json",
           "--batch-size", "64", "--shard-rows", "2048", *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    doc = json.loads(res.stdout)
    return {"wall_s": round(wall, 2), "work_s": doc["seconds"], "rows_per_s": round(doc["rows"] / wall, 1),
            "rows_by_worker": doc["rows_by_worker"], "retried": doc["retried"]}


def _shards(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.npz"))}


def _by_node(rows_by_worker: dict[str, int]) -> dict[str, int]:
    nodes: dict[str, int] = {}
    for where, n in rows_by_worker.items():
        nodes[where.split(":")[0]] = nodes.get(where.split(":")[0], 0) + n
    return nodes


def _ray(*args: str) -> None:
    ray = Path(sys.executable).with_name("ray")
    res = subprocess.run([str(ray), *args], capture_output=True, text=True, env=dict(os.environ, **CLUSTER_ENV))
    if res.returncode != 0:
        raise SystemExit(f"ray {' '.join(args)} failed:\n{res.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--work", default="/tmp/graphfix-bench-ray", help="folder for the images and outputs")
    ap.add_argument("--two-node", action="store_true", help="also run on a two-node cluster on this machine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import shutil

    from bench_features import build_model

    from graphfix.model import set_metadata

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    csv = make_images(work, args.images)
    model = build_model(n_labels=20, size=96)
    set_metadata(model.ir, labels=[f"c{j}" for j in range(20)], preprocess={"size": [96, 96]})
    model.save(work / "cnn96.onnx")
    runs = {}
    for name, extra in [("plain", ()), ("local_ray", ("--ray",))]:
        out = work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        runs[name] = _features(work / "cnn96.onnx", csv, out, *extra)
    same = _shards(work / "out-local_ray") == _shards(work / "out-plain")
    report = {"images": args.images, "cpus": os.cpu_count(), "runs": runs, "bitwise_equal": same,
              "ray_vs_plain_throughput": round(runs["plain"]["wall_s"] / runs["local_ray"]["wall_s"], 3),
              "ray_overhead_s": round(runs["local_ray"]["wall_s"] - runs["plain"]["wall_s"], 2)}
    if args.two_node:
        _ray("stop", "--force")
        try:
            _ray("start", "--head", "--num-cpus", "1", "--port", "6391", "--include-dashboard=false",
                 "--disable-usage-stats")
            _ray("start", "--address", "127.0.0.1:6391", "--num-cpus", "1", "--disable-usage-stats")
            out = work / "out-two_node"
            shutil.rmtree(out, ignore_errors=True)
            run = _features(work / "cnn96.onnx", csv, out, "--ray", "127.0.0.1:6391", env=CLUSTER_ENV)
            run["rows_by_node"] = _by_node(run["rows_by_worker"])
            runs["two_node"] = run
            report["two_node_bitwise_equal"] = _shards(out) == _shards(work / "out-plain")
            report["two_node_vs_plain_throughput"] = round(runs["plain"]["wall_s"] / run["wall_s"], 3)
        finally:
            _ray("stop", "--force")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, r in runs.items():
            extra = f"  rows by node {r['rows_by_node']}" if "rows_by_node" in r else ""
            print(f"{name:<10} {r['wall_s']:7.2f} s wall ({r['work_s']:.2f} s of work)  {r['rows_per_s']:8.1f} rows/s{extra}")
        print(f"Ray / plain throughput: {report['ray_vs_plain_throughput']:.3f}x (target >= 0.9); "
              f"overhead {report['ray_overhead_s']:+.2f} s; bitwise equal: {same}")
        if "two_node_vs_plain_throughput" in report:
            print(f"two nodes / plain: {report['two_node_vs_plain_throughput']:.3f}x; "
                  f"bitwise equal: {report['two_node_bitwise_equal']}")
    return 0 if same and report.get("two_node_bitwise_equal", True) else 1


if __name__ == "__main__":
    sys.exit(main())
