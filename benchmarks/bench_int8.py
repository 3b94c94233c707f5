"""INT8 export: file size, onnxruntime CPU latency/throughput fp32 vs int8, and the accuracy figures.

Two models, each trained and calibrated through the CLI, then exported twice side by side
(`export --target tensorrt` and `export --target tensorrt --int8 --calibration TRAIN --heldout HELDOUT`):

- digit mosaics (benchmarks/digit_mosaics.py: a small CNN pretrained on single digits, 10-label
  mosaics; generated, nothing downloaded);
- open_nsfw (the real Caffe ResNet-50-1by2 from .cache/nsfw, fixtures/caffe/fetch_nsfw.sh) with a
  new head trained on an image task: by default the digit-mosaic PNGs (resized to 224 by the
  stored preprocessing); `--train/--heldout/--test/--labels` name another task's CSVs.

Per model: file sizes; batch-1 latency (median) and batch-N throughput, fp32 and int8 sessions
with the same --threads, timed alternately in one run; the accuracy that `export --int8` reports
(mAP, micro/macro-F1 at the stored thresholds, largest per-class F1 drop, on --heldout) and, on
--test (not seen by calibration or re-fit), fp32 at its thresholds vs int8 at the re-fitted ones.

    python benchmarks/bench_int8.py [--out DIR] [--threads 2] [--calib-rows 256] [--method percentile]
                                    [--nsfw-dir .cache/nsfw] [--train CSV --heldout CSV --test CSV --labels FILE]
                                    [--skip-nsfw] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, env: dict) -> dict | None:
    """Run graphfix; the --json document (None when the command printed none)."""
    res = subprocess.run([sys.executable, "-m", "graphfix.cli", *map(str, args)], capture_output=True, text=True,
                         env=env)
    if res.returncode not in (0, 1):
        sys.exit(f"graphfix {args[0]} failed ({res.returncode}): {res.stderr.strip()}")
    try:
        return json.loads(res.stdout) if res.stdout.strip().startswith("{") else None
    except json.JSONDecodeError:
        return None


def _head(csv: Path, rows: int, dest: Path) -> Path:
    """The first `rows` data rows of a CSV (paths made absolute so the copy may live elsewhere)."""
    lines = csv.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1 : rows + 1]:
        path, rest = line.split(",", 1)
        out.append(f"{(csv.parent / path).resolve()},{rest}")
    dest.write_text("\n".join(out) + "\n")
    return dest


def timing(fp32: str, int8: str, x: np.ndarray, threads: int, batch: int, repeat: int) -> dict:
    """Batch-1 latency (median ms) and batch-`batch` throughput (rows/s), fp32 and int8 alternated."""
    import onnxruntime as ort

    def session(path):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    sessions = {"fp32": session(fp32), "int8": session(int8)}
    name = sessions["fp32"].get_inputs()[0].name
    one, many = x[:1], np.resize(x, (batch, *x.shape[1:])).astype(np.float32)
    lat: dict[str, list] = {k: [] for k in sessions}
    thr: dict[str, list] = {k: [] for k in sessions}
    for s in sessions.values():  # warm-up
        s.run(["probabilities"], {name: one})
        s.run(["probabilities"], {name: many})
    for _ in range(repeat):
        for key, s in sessions.items():
            t = time.perf_counter()
            s.run(["probabilities"], {name: one})
            lat[key].append(time.perf_counter() - t)
        for key, s in sessions.items():
            t = time.perf_counter()
            s.run(["probabilities"], {name: many})
            thr[key].append(batch / (time.perf_counter() - t))
    return {k: {"latency_ms": round(1000 * statistics.median(lat[k]), 3),
                "throughput": round(statistics.median(thr[k]), 1)} for k in sessions}


def test_split(fp32: str, int8: str, test_csv: Path, env: dict) -> dict:
    """fp32 at its thresholds vs int8 at its (re-fitted) thresholds on the test rows."""
    sys.path.insert(0, str(ROOT))
    from graphfix.calibrate.calibration import evaluate
    from graphfix.data.datasets import load_dataset
    from graphfix.data.images import Preprocess
    from graphfix.model import load_onnx

    out = {}
    for key, path in (("fp32", fp32), ("int8", int8)):
        m = load_onnx(path)
        ds = load_dataset(str(test_csv), m.labels, Preprocess.for_model(m))
        sess = m.session()
        name = sess.get_inputs()[0].name
        probs = np.concatenate([sess.run(["probabilities"], {name: x})[0] for x in ds.batches(32)])
        r = evaluate(probs, ds.y, np.asarray(m.thresholds, np.float32), m.labels)
        out[key] = {"mAP": r["mAP"], "micro_f1": r["micro_f1"], "macro_f1": r["macro_f1"], "rows": len(ds)}
    return out


def bench_model(label: str, calibrated: Path, train: Path, heldout: Path, test: Path | None, work: Path,
                args, env: dict) -> dict:
    fp32, int8 = work / f"{label}-fp32.onnx", work / f"{label}-int8.onnx"
    _cli("export", calibrated, "--target", "tensorrt", "-o", fp32, "-q", env=env)
    calib = _head(train, args.calib_rows, work / f"{label}-calibration.csv")
    t = time.perf_counter()
    doc = _cli("export", calibrated, "--target", "tensorrt", "--int8", *(["auto"] if args.auto else []),
               "--int8-method", args.method, "--calibration", calib, "--heldout", heldout, "-o", int8, "--json", env=env)
    seconds = time.perf_counter() - t
    row = {"model": label, "fp32_bytes": fp32.stat().st_size, "int8_export_s": round(seconds, 1),
           "int8": (doc or {}).get("int8"), "written": int8.exists()}
    if not int8.exists():
        row["refused"] = (doc or {}).get("error", {}).get("message")
        return row
    row["int8_bytes"] = int8.stat().st_size
    sys.path.insert(0, str(ROOT))
    from graphfix.data.datasets import load_dataset
    from graphfix.data.images import Preprocess
    from graphfix.model import load_onnx

    m = load_onnx(str(fp32))
    x = next(load_dataset(str(calib), m.labels, Preprocess.for_model(m)).batches(args.batch))
    row["speed"] = timing(str(fp32), str(int8), np.asarray(x, np.float32), args.threads, args.batch, args.repeat)
    if test is not None:
        row["test"] = test_split(str(fp32), str(int8), test, env)
    return row


def table(rows: list[dict], args) -> str:
    out = [f"threads {args.threads}, batch-1 latency (median of {args.repeat}), batch-{args.batch} throughput; "
           f"--int8-method {args.method}, {args.calib_rows} calibration rows",
           "", "| model | fp32 MB | int8 MB | fp32 ms | int8 ms | fp32 img/s | int8 img/s | mAP fp32 | mAP int8 | "
           "micro-F1 fp32 | micro-F1 int8 | macro-F1 fp32 | macro-F1 int8 | largest class F1 drop | float layers |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        info = r.get("int8") or {}
        acc = info.get("accuracy") or {}
        a, b = acc.get("fp32", {}), acc.get("int8", {})
        worst = acc.get("largest_class_f1_drop") or {}
        sp = r.get("speed", {})
        mb = (lambda v: f"{v / 1e6:.2f}" if v else "-")

        def f(v):
            return "-" if v is None else f"{v:.4f}"

        out.append(f"| {r['model']} | {mb(r['fp32_bytes'])} | {mb(r.get('int8_bytes'))} | "
                   f"{sp.get('fp32', {}).get('latency_ms', '-')} | {sp.get('int8', {}).get('latency_ms', '-')} | "
                   f"{sp.get('fp32', {}).get('throughput', '-')} | {sp.get('int8', {}).get('throughput', '-')} | "
                   f"{f(a.get('mAP'))} | {f(b.get('mAP'))} | {f(a.get('micro_f1'))} | {f(b.get('micro_f1'))} | "
                   f"{f(a.get('macro_f1'))} | {f(b.get('macro_f1'))} | "
                   f"{worst.get('label') or '-'} {f(worst.get('drop'))} | {len(info.get('float_nodes') or [])} |")
    for r in rows:
        if "test" in r:
            t = r["test"]
            out.append(f"- {r['model']} test split ({t['fp32']['rows']} rows): fp32 at its thresholds mAP "
                       f"{t['fp32']['mAP']:.4f} micro-F1 {t['fp32']['micro_f1']:.4f} macro-F1 {t['fp32']['macro_f1']:.4f}; "
                       f"int8 at the re-fitted thresholds mAP {t['int8']['mAP']:.4f} micro-F1 "
                       f"{t['int8']['micro_f1']:.4f} macro-F1 {t['int8']['macro_f1']:.4f}")
        if r.get("refused"):
            out.append(f"- {r['model']}: refused: {r['refused']}")
        if r.get("int8"):
            out.append(f"- {r['model']}: int8 export {r['int8_export_s']} s, measured on {r['int8']['accuracy']['measured_on']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="bench-int8", help="work folder (default ./bench-int8)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16, help="throughput batch (default 16)")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--calib-rows", type=int, default=256)
    p.add_argument("--method", default="percentile", choices=("percentile", "entropy", "max"))
    p.add_argument("--auto", action="store_true", help="export with --int8 auto")
    p.add_argument("--nsfw-dir", default=str(ROOT / ".cache" / "nsfw"))
    p.add_argument("--skip-nsfw", action="store_true")
    p.add_argument("--train", help="image task for open_nsfw's head: training CSV (default: the digit mosaics)")
    p.add_argument("--heldout", help="held-out CSV (thresholds, int8 accuracy)")
    p.add_argument("--test", help="test CSV (fp32 vs int8 at their thresholds)")
    p.add_argument("--labels", help="label file of the task")
    p.add_argument("--nsfw-train-rows", type=int, default=1000)
    p.add_argument("--nsfw-eval-rows", type=int, default=400)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               GRAPHFIX_CACHE=str(out / "cache"))
    rows = []
    mosaics = out / "mosaics"
    if not (mosaics / "calibrated-bce.onnx").exists():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "digit_mosaics.py"), "--out", str(mosaics)],
                       check=True, env=env, capture_output=True)
    rows.append(bench_model("digit-mosaics", mosaics / "calibrated-bce.onnx", mosaics / "train.csv",
                            mosaics / "heldout.csv", mosaics / "test.csv", out, args, env))
    nsfw = Path(args.nsfw_dir) / "deploy.prototxt"
    if not args.skip_nsfw and nsfw.is_file():
        train = Path(args.train or mosaics / "train.csv")
        heldout = Path(args.heldout or mosaics / "heldout.csv")
        test = Path(args.test) if args.test else (None if args.train else mosaics / "test.csv")
        labels = args.labels or str(mosaics / "labels.txt")
        tr = _head(train, args.nsfw_train_rows, out / "nsfw-train.csv")
        he = _head(heldout, args.nsfw_eval_rows, out / "nsfw-heldout.csv")
        te = _head(test, args.nsfw_eval_rows, out / "nsfw-test.csv") if test else None
        cal = out / "nsfw-calibrated.onnx"
        if not cal.exists():
            _cli("swap-head", nsfw, "--labels", labels, "--mean", "104,117,123", "--scale", "1", "--bgr",
                 "-o", out / "nsfw-swapped.onnx", "-q", env=env)
            _cli("train-head", out / "nsfw-swapped.onnx", "--train", tr, "-o", out / "nsfw-trained.onnx", "-q", env=env)
            _cli("calibrate", out / "nsfw-trained.onnx", "--heldout", he, "-o", cal, "-q", env=env)
        rows.append(bench_model("open_nsfw", cal, tr, he, te, out, args, env))
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
