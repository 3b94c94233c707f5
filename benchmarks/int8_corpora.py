"""`export --int8` across the corpora: every outcome is an export within budget or a refusal with figures.

For each model of the legacy fixtures (fixtures/mxnet, fixtures/caffe, fixtures/onnx), the zoo
subset (tests/zoo, both exporters; --zoo DIR for more) and open_nsfw (.cache/nsfw, when fetched):
swap-head (4 labels) -> a head trained on seeded inputs whose labels follow the backbone's own
features -> thresholds -> `graphfix export --target tensorrt --int8 [auto] --calibration
train.npz --heldout heldout.npz` in a fresh process. The row says: exported (with the mAP drop and
the layers kept float) or refused (exit 1 and its one line), or FAILED (anything else: a crash, a
traceback, a wrong exit code).

    python benchmarks/int8_corpora.py [--auto] [--method percentile|entropy|max] [--only NAME,...] [--zoo DIR] [--rows 96] [--json]
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def models(zoo: Path) -> list[tuple[str, Path, dict]]:
    fx = ROOT / "fixtures"
    out = [(p.stem, p, {}) for p in sorted((fx / "onnx").glob("*.onnx"))]
    manifest = json.loads((fx / "mxnet" / "manifest.json").read_text())
    out += [(p.parent.name, p, {"input_shape": "data:" + ",".join(map(str, manifest[p.parent.name]["input_shape"]))})
            for p in sorted((fx / "mxnet").glob("*/*-symbol.json")) if p.parent.name in manifest]
    for proto in sorted((fx / "caffe").glob("*.prototxt")):
        if proto.with_suffix(".caffemodel").exists():
            out.append((proto.stem, proto, {"weights": proto.with_suffix(".caffemodel")}))
    out += [(p.name.removesuffix(".onnx"), p, {}) for p in sorted(zoo.glob("*.onnx"))]
    nsfw = ROOT / ".cache" / "nsfw" / "deploy.prototxt"
    if nsfw.exists():
        out.append(("open_nsfw", nsfw, {"weights": nsfw.parent / "resnet_50_1by2_nsfw.caffemodel"}))
    return out


def prepare(name: str, path: Path, kw: dict, folder: Path, rows: int) -> tuple[Path, Path, Path]:
    """A trained, calibrated 4-label model and train/heldout NPZs (seeded inputs, learnable labels)."""
    import graphfix as gf
    from graphfix.data.datasets import Dataset
    from graphfix.data.features import feature_model

    kw = {k: ([v] if k == "input_shape" else str(v)) for k, v in kw.items()}
    m = gf.swap_head(gf.load(str(path), **kw), labels=4, seed=0)
    inp = [v for v in m.ir.graph.inputs if not v.is_initializer()][0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * rows, *shape[1:])).astype(np.float32)
    fm = feature_model(m)
    feats = np.concatenate([next(iter(fm.run(x[i:i + 16]).values())) for i in range(0, len(x), 16)])
    z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6) @ np.random.default_rng(1).standard_normal((feats.shape[1], 4))
    y = (z + 0.3 * rng.standard_normal(z.shape) > 0.5).astype(np.uint8)
    train, held = folder / "train.npz", folder / "heldout.npz"
    np.savez(train, x=x[:rows], y=y[:rows])
    np.savez(held, x=x[rows:], y=y[rows:])
    trained, _ = gf.train_head(m, Dataset.from_arrays(x[:rows], y[:rows]), cache=False)
    th = gf.fit_thresholds(trained, Dataset.from_arrays(x[rows:], y[rows:]), cache=False)
    out = folder / "calibrated.onnx"
    gf.apply_thresholds(trained, th).save(out)
    return out, train, held


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--auto", action="store_true", help="export with --int8 auto")
    p.add_argument("--method", default="percentile", choices=("percentile", "entropy", "max"))
    p.add_argument("--only", help="comma-separated model names")
    p.add_argument("--zoo", default=str(ROOT / "tests" / "zoo"))
    p.add_argument("--rows", type=int, default=96, help="calibration rows (as many held out)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    rows = []
    for name, path, kw in models(Path(args.zoo)):
        if args.only and name not in args.only.split(","):
            continue
        with tempfile.TemporaryDirectory(prefix="gfx-int8-") as tmp:
            folder = Path(tmp)
            env["GRAPHFIX_CACHE"] = str(folder / "cache")
            t = time.perf_counter()
            try:
                model, train, held = prepare(name, path, kw, folder, args.rows)
            except Exception as exc:  # not this benchmark's subject: the model has no usable head
                rows.append({"model": name, "outcome": "skipped", "detail": f"{type(exc).__name__}: {exc}"[:160]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                continue
            out = folder / "int8.onnx"
            res = subprocess.run(
                [sys.executable, "-m", "graphfix.cli", "export", str(model), "--target", "tensorrt", "--int8",
                 *(["auto"] if args.auto else []), "--int8-method", args.method, "--calibration", str(train), "--heldout", str(held),
                 "-o", str(out), "--json"], capture_output=True, text=True, env=env)
            seconds = round(time.perf_counter() - t, 1)
            try:
                doc = json.loads(res.stdout)
            except json.JSONDecodeError:
                doc = {}
            info = doc.get("int8") or {}
            acc = info.get("accuracy") or {}
            err = res.stderr.strip().splitlines()
            if res.returncode == 0 and out.exists():
                outcome = "exported"
            elif res.returncode == 1 and not out.exists() and len(err) == 1 and acc:
                outcome = "refused"
            elif res.returncode == 1 and out.exists() and (doc.get("report") or {}).get("ok") is False:
                outcome = "exported, check FAIL"
            else:
                outcome = "FAILED"
            rows.append({"model": name, "outcome": outcome, "exit": res.returncode, "seconds": seconds,
                         "mAP_fp32": (acc.get("fp32") or {}).get("mAP"), "mAP_int8": (acc.get("int8") or {}).get("mAP"),
                         "mAP_drop": acc.get("mAP_drop"), "float_layers": len(info.get("float_nodes") or []),
                         "quantized_candidates": (info.get("auto") or {}).get("candidates"),
                         "detail": (err[0] if err else "")[:300] if outcome != "exported" else ""})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print("| model | outcome | exit | mAP fp32 | mAP int8 | drop | float layers | s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            f = (lambda v: "-" if v is None else f"{v:.4f}")
            print(f"| {r['model']} | {r['outcome']} | {r.get('exit', '-')} | {f(r.get('mAP_fp32'))} | "
                  f"{f(r.get('mAP_int8'))} | {f(r.get('mAP_drop'))} | {r.get('float_layers', '-')} | {r.get('seconds', '-')} |")
        for r in rows:
            if r.get("detail"):
                print(f"- {r['model']}: {r['detail']}")
    failed = [r for r in rows if r["outcome"] == "FAILED"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
