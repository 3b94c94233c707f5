"""Benchmark: a fleet of 200 small models, worker pool vs in-process API vs one process per model.

Run:  .venv/bin/python benchmarks/bench_fleet.py [--count 200] [--jobs 2] [--no-per-process]
Copies the fixtures (ONNX, MXNet and Caffe, round-robin) under new names, one folder each, then
times side by side in one run: the same conversions back to back in one fresh Python process
through the API (load + clean + save: the no-isolation limit), `graphfix convert DIR -o OUT -r
--force --jobs N` (the worker pool), and the old design (a `python -m graphfix.cli convert`
process per model, N at a time). `make_fleet` also builds the tests' mixed fleet with broken files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


def make_named_fleet(root: Path, count: int) -> list[tuple[Path, str, Path | None]]:
    """`count` models copied round-robin from the fixtures (all three formats), each file renamed
    `fNNN-...` in its own folder; returns (model, format, caffe weights or None) per model."""
    units = model_units()
    made = []
    for i in range(count):
        files = units[i % len(units)]
        folder = root / f"f{i:03d}"
        folder.mkdir(parents=True)
        renamed = [folder / f"f{i:03d}-{f.name}" for f in files]
        for src, dst in zip(files, renamed):
            shutil.copy(src, dst)
        fmt = "mxnet" if files[0].name.endswith("-symbol.json") else "caffe" if files[0].suffix == ".prototxt" else "onnx"
        made.append((renamed[0], fmt, renamed[1] if fmt == "caffe" else None))
    return made


def run_fleet_cli(src: Path, out: Path, jobs: int) -> tuple[float, dict]:
    """The fleet as users run it: `graphfix convert DIR -o OUT -r --force --jobs N --json`."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "graphfix.cli", "convert", str(src), "-o", str(out), "--recursive",
                           "--force", "--jobs", str(jobs), "--json"], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, json.loads(proc.stdout)["counts"]


API_LOOP = """
import json, sys, time
import graphfix as gf
from graphfix.convert.clean import clean
ok = 0
for model, weights, out in json.loads(sys.argv[1]):
    try:
        clean(gf.load(model, weights=weights)).save(out)
        ok += 1
    except gf.GraphfixError:
        pass
print(ok)
"""


def run_api(models: list[tuple[Path, str, Path | None]], out: Path) -> tuple[float, int]:
    """The no-isolation limit: one fresh Python process loads, cleans and saves every model back to back."""
    out.mkdir()
    plan = [(str(m), str(w) if w else None, str(out / f"{i:03d}.onnx")) for i, (m, _, w) in enumerate(models)]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", API_LOOP, json.dumps(plan)], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - start, int(proc.stdout.strip() or 0)


def run_per_process(models: list[tuple[Path, str, Path | None]], out: Path, jobs: int) -> tuple[float, int]:
    """The design before the worker pool: one `python -m graphfix.cli convert` process per model, `jobs` at a time."""
    out.mkdir()

    def one(i: int) -> bool:
        model, _, weights = models[i]
        cmd = [sys.executable, "-m", "graphfix.cli", "convert", str(model), "-o", str(out / f"{i:03d}.onnx"), "--json"]
        cmd += ["--weights", str(weights)] if weights else []
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).returncode == 0

    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        ok = sum(pool.map(one, range(len(models))))
    return time.perf_counter() - start, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200, help="models in the fleet (default 200)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--no-per-process", action="store_true", help="skip the (slow) per-process baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "models"
        models = make_named_fleet(src, args.count)
        formats = {f: sum(1 for _, g, _ in models if g == f) for f in ("onnx", "mxnet", "caffe")}
        api_s, api_ok = run_api(models, Path(tmp) / "api")
        pool_s, counts = run_fleet_cli(src, Path(tmp) / "pool", args.jobs)
        doc = {"models": args.count, "formats": formats, "jobs": args.jobs,
               "api_in_process_s": round(api_s, 2), "api_ok": api_ok,
               "fleet_pool_s": round(pool_s, 2), "fleet_counts": {k: v for k, v in counts.items() if v},
               "fleet_vs_api": round(pool_s / api_s, 3)}
        if not args.no_per_process:
            per_s, per_ok = run_per_process(models, Path(tmp) / "per", args.jobs)
            doc.update(per_process_s=round(per_s, 2), per_process_ok=per_ok, per_process_vs_api=round(per_s / api_s, 2),
                       pool_speedup_over_per_process=round(per_s / pool_s, 2))
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
