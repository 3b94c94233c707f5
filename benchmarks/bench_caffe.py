"""Benchmark the Caffe importer: a generated VGG-16-sized caffemodel (~553 MB) and the real open_nsfw.

    .venv/bin/python benchmarks/bench_caffe.py [--nsfw-dir .cache/nsfw] [--work DIR] [--keep]

Each conversion (load_caffe + Model.save, what `graphfix convert` does minus its clean pass) runs
in a fresh subprocess that reports its own wall seconds and peak RSS (ru_maxrss); the process
wall time (interpreter start and imports included) is measured outside. The VGG-16 file is
written by the fixture writer at bench time and deleted afterwards (never committed).
On a shared machine also read "CPU s" (user+sys of the conversion, all threads): wall time
there includes waiting for a core. Targets (issue 4): open_nsfw < 1 s; 553 MB at > 200 MB/s with peak RSS < 2.5x the file size.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "fixtures" / "caffe"))
from caffe_writer import NetBuilder  # noqa: E402

_CHILD = r"""
import json, os, resource, sys, time
t0 = time.perf_counter()
from graphfix.convert.caffe import load_caffe
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t1, c1 = time.perf_counter(), cpu()
model = load_caffe(sys.argv[1], weights=sys.argv[2])
t2 = time.perf_counter()
load_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def hwm():  # VmHWM: this process image's own peak (a cross-check of ru_maxrss)
    with open("/proc/self/status") as fh:
        return next((int(l.split()[1]) / 1024 for l in fh if l.startswith("VmHWM:")), float("nan"))
model.save(sys.argv[3])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "save_s": t3 - t2, "convert_s": t3 - t1,
                  "convert_cpu_s": cpu() - c1,
                  "load_rss_mb": load_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "vm_hwm_mb": hwm(), "onnx_mb": os.path.getsize(sys.argv[3]) / 1e6}))
"""


def write_vgg16(folder: Path) -> tuple[Path, Path]:
    """VGG-16 deploy prototxt + caffemodel with seeded random weights (138M floats, ~553 MB)."""
    b = NetBuilder("VGG_ILSVRC_16_layers", {"data": (1, 3, 224, 224)}, seed=0, input_form="input_dim")
    b.w = _fast_weights(np.random.default_rng(0))  # randn on 138M floats is slow; uniform is enough
    x = "data"
    for stage, (n, width) in enumerate([(2, 64), (2, 128), (3, 256), (3, 512), (3, 512)], start=1):
        for i in range(1, n + 1):
            x = b.conv(f"conv{stage}_{i}", x, width, 3, 1, 1)
            b.relu(f"relu{stage}_{i}", x)
        x = b.pool(f"pool{stage}", x, "MAX", 2, 2)
    for name, width in (("fc6", 4096), ("fc7", 4096)):
        x = b.ip(name, x, width)
        b.relu(f"relu{name[2:]}", x)
        b.dropout(f"drop{name[2:]}", x)
    x = b.ip("fc8", x, 1000)
    b.softmax("prob", x)
    proto, model = folder / "vgg16_deploy.prototxt", folder / "vgg16.caffemodel"
    b.save(str(proto), str(model), junk=False)
    return proto, model


def _fast_weights(rng: np.random.Generator):
    def w(*shape: int, scale: float | None = None) -> np.ndarray:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        s = scale if scale is not None else 1.0 / np.sqrt(max(1, fan_in))
        arr = rng.random(shape, dtype=np.float32)
        arr -= 0.5
        arr *= 2 * s
        return arr

    return w


def run_one(label: str, proto: Path, weights: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _CHILD, str(proto), str(weights), str(out)],
                         capture_output=True, text=True, env=env)  # fmt: skip
    wall = time.perf_counter() - start
    if res.returncode:
        raise SystemExit(f"{label}: conversion failed:\n{res.stderr}")
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    size_mb = weights.stat().st_size / 1e6
    doc.update(label=label, caffemodel_mb=size_mb, process_wall_s=wall, mb_per_s=size_mb / doc["convert_s"],
               rss_over_file=doc["peak_rss_mb"] * 1.048576 / size_mb)  # fmt: skip
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nsfw-dir", default=os.environ.get("GRAPHFIX_NSFW_DIR", str(REPO / ".cache" / "nsfw")))
    ap.add_argument("--work", help="folder for the generated VGG-16 files (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--repeat", type=int, default=3, help="runs per model (best is reported)")
    ap.add_argument("--write-vgg16", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.write_vgg16:
        write_vgg16(Path(args.write_vgg16))
        return 0

    work = Path(args.work or tempfile.mkdtemp(prefix="graphfix-bench-caffe-"))
    work.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        nsfw = Path(args.nsfw_dir)
        if (nsfw / "resnet_50_1by2_nsfw.caffemodel").is_file():
            runs = [run_one("open_nsfw", nsfw / "deploy.prototxt", nsfw / "resnet_50_1by2_nsfw.caffemodel", work / "nsfw.onnx")
                    for _ in range(args.repeat)]  # fmt: skip
            results.append(min(runs, key=lambda r: r["convert_s"]))
        else:
            print(f"open_nsfw not found in {nsfw}: run `bash fixtures/caffe/fetch_nsfw.sh {nsfw}`", file=sys.stderr)
        t = time.perf_counter()
        # written in a child: ru_maxrss carries over fork+exec, so the parent must stay small
        subprocess.run([sys.executable, __file__, "--write-vgg16", str(work)], check=True)
        proto, model = work / "vgg16_deploy.prototxt", work / "vgg16.caffemodel"
        print(
            f"wrote {model} ({model.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.1f} s", file=sys.stderr
        )
        runs = [run_one("vgg16 (generated)", proto, model, work / "vgg16.onnx") for _ in range(args.repeat)]
        results.append(min(runs, key=lambda r: r["convert_s"]))
    finally:
        if not args.keep and not args.work:
            for f in work.iterdir():
                f.unlink()
            work.rmdir()
    columns = [  # (header, row value)
        ("model", lambda r: r["label"]),
        ("caffemodel MB", lambda r: f"{r['caffemodel_mb']:.1f}"),
        ("convert s", lambda r: f"{r['convert_s']:.3f}"),
        ("load s", lambda r: f"{r['load_s']:.3f}"),
        ("save s", lambda r: f"{r['save_s']:.3f}"),
        ("CPU s", lambda r: f"{r['convert_cpu_s']:.3f}"),
        ("MB/s", lambda r: f"{r['mb_per_s']:.0f}"),
        ("load MB/s", lambda r: f"{r['caffemodel_mb'] / r['load_s']:.0f}"),
        ("process s", lambda r: f"{r['process_wall_s']:.2f}"),
        ("RSS after load MB", lambda r: f"{r['load_rss_mb']:.0f}"),
        ("peak RSS MB", lambda r: f"{r['peak_rss_mb']:.0f}"),
        ("VmHWM MB", lambda r: f"{r['vm_hwm_mb']:.0f}"),
        ("peak/file", lambda r: f"{r['rss_over_file']:.2f}"),
    ]
    print(" | ".join(h for h, _ in columns))
    for r in results:
        print(" | ".join(f(r) for _, f in columns))
    print(json.dumps(results, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
