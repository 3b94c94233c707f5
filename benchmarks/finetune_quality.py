"""Fine-tuning quality on real weights: open_nsfw, head only vs the last block vs the last two blocks.

The acceptance run of issue 24, through the CLI as a user runs it (each command a child process,
`python -m graphfix.cli ... --json`, timed):

1. the real-photo multi-label set (`real_photos.py`: 20 labels, 1..4 per image; train / val /
   test tiles come from disjoint regions of each photo);
2. `convert deploy.prototxt --weights resnet_50_1by2_nsfw.caffemodel` (Yahoo's open_nsfw,
   Caffe ResNet-50-1by2 with its real weights: `bash fixtures/caffe/fetch_nsfw.sh .cache/nsfw`);
3. `swap-head --labels labels.txt --size 224,224 --mean 104,117,123 --bgr` (open_nsfw's own
   preprocessing, stored in the model);
4. per run, `train-head --train train.csv --val val.csv` (`--no-val`: without it) with defaults only, plus
   `--train-from -N` for the fine-tuned runs (`--loss bce` for a head-only run with the loss the
   fine-tuning uses), then `calibrate --heldout val.csv --test test.csv` (per-class F1
   thresholds on val); test mAP, macro-F1 and micro-F1 come from calibrate's JSON.

The runs go in order; the first one pays for the backbone features of train and val (cached in
OUT/cache, as `$GRAPHFIX_CACHE`), so its train-head time includes that pass and the later
head-only runs read the cache; each fine-tuned run computes its activations at the cut, and its
calibrate runs the new backbone over val and test. The load average of the machine is printed
with the table (timings are only comparable within one run).

    python benchmarks/finetune_quality.py --out /tmp/ftq                   # 600 / 300 / 600 images
    python benchmarks/finetune_quality.py --out /tmp/ftq --n-train 300 --n-val 150 --n-test 300 --runs head,-1
    python benchmarks/finetune_quality.py --out /tmp/ftq --runs head-bce,-1 --lr 1e-4   # not the default lr
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _real_photos():
    spec = importlib.util.spec_from_file_location("real_photos", HERE / "real_photos.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cli(*args: str, env: dict[str, str]) -> tuple[dict, float]:
    """Run `python -m graphfix.cli ARGS --json` as a child process: its JSON document and wall seconds."""
    cmd = [sys.executable, "-m", "graphfix.cli", *args, "--json"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}\n{proc.stdout[-2000:]}")
    return json.loads(proc.stdout), seconds


RUNS = {  # name -> train-head arguments beyond --train/--val
    "head": ("head only (defaults)", []),
    "head-bce": ("head only, --loss bce", ["--loss", "bce"]),
}


def run_one(name: str, extra: list[str], swapped: Path, data: dict[str, str], out: Path, env: dict[str, str], *,
            val_in_training: bool = True) -> dict:
    """train-head (with `extra`) then calibrate on val: test metrics, what train-head chose, and the times."""
    trained, calibrated = out / f"trained-{name}.onnx", out / f"calibrated-{name}.onnx"
    val = ["--val", data["val"]] if val_in_training else []
    th, t_train = cli("train-head", str(swapped), "--train", data["train"], *val, *extra, "-o", str(trained), env=env)
    cal, t_cal = cli("calibrate", str(trained), "--heldout", data["val"], "--test", data["test"], "-o", str(calibrated),
                     env=env)
    s = th["history"]["settings"]
    m = cal["metrics"]["test"]["tuned"]
    return {"mAP": m["mAP"], "macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"],
            "val_mAP": s.get("val_mAP"), "best_epoch": s.get("best_epoch"),
            "epochs_run": len(s["epoch_val_mAP"]) - 1 if s.get("epoch_val_mAP") else None, "epoch_val_mAP": s.get("epoch_val_mAP"), "loss": s.get("loss"), "weight_decay": s.get("weight_decay"),
            "train_from": s.get("train_from"), "train_seconds": round(t_train, 1), "calibrate_seconds": round(t_cal, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="finetune-quality", help="work folder (default ./finetune-quality)")
    p.add_argument("--nsfw-dir", default=str(ROOT / ".cache" / "nsfw"), help="open_nsfw files (fetch_nsfw.sh)")
    p.add_argument("--n-train", type=int, default=600)
    p.add_argument("--n-val", type=int, default=300)
    p.add_argument("--n-test", type=int, default=600)
    p.add_argument("--seed", type=int, default=0, help="the photo set's seed")
    p.add_argument("--runs", default="head,head-bce,-1,-2",
                   help="comma-separated: head (defaults), head-bce, and -N for --train-from -N (default head,head-bce,-1,-2)")
    p.add_argument("--lr", help="pass --lr to the fine-tuned runs (default: train-head's own default)")
    p.add_argument("--no-val", action="store_true",
                   help="train-head without --val (lambda by CV; fine-tuning holds out a tenth of train); val still calibrates")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nsfw = Path(args.nsfw_dir)
    proto, weights = nsfw / "deploy.prototxt", nsfw / "resnet_50_1by2_nsfw.caffemodel"
    if not (proto.is_file() and weights.is_file()):
        print(f"finetune_quality: {nsfw}: no open_nsfw; run: bash fixtures/caffe/fetch_nsfw.sh {nsfw}", file=sys.stderr)
        return 2
    env = dict(os.environ, GRAPHFIX_CACHE=str(out / "cache"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    load_before = os.getloadavg()
    start = time.perf_counter()
    data = _real_photos().ensure(out / "photos", n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, seed=args.seed)
    t_data = time.perf_counter() - start
    onnx_model, swapped = out / "open_nsfw.onnx", out / "swapped.onnx"
    _, t_convert = cli("convert", str(proto), "--weights", str(weights), "-o", str(onnx_model), env=env)
    _, t_swap = cli("swap-head", str(onnx_model), "--labels", data["labels"], "--size", "224,224", "--mean", "104,117,123",
                    "--bgr", "-o", str(swapped), env=env)
    print(f"photos {t_data:.1f} s, convert {t_convert:.1f} s, swap-head {t_swap:.1f} s")
    results: dict[str, dict] = {}
    for key in args.runs.split(","):
        label, extra = RUNS.get(key) or (f"--train-from {key}", ["--train-from", key])
        if args.lr and key not in RUNS:
            label, extra = f"{label} --lr {args.lr}", [*extra, "--lr", args.lr]
        if args.no_val:
            key, label = f"{key}-noval", f"{label} (no --val)"
        results[label] = res = run_one(key, extra, swapped, data, out, env, val_in_training=not args.no_val)
        print(f"{label}: test mAP {res['mAP']:.4f}, macro-F1 {res['macro_f1']:.4f}, micro-F1 {res['micro_f1']:.4f}, "
              f"train-head {res['train_seconds']} s, calibrate {res['calibrate_seconds']} s", flush=True)
    total = time.perf_counter() - start
    print(f"\nopen_nsfw (Caffe ResNet-50-1by2, real weights) on real photos: {args.n_train} train / {args.n_val} val / "
          f"{args.n_test} test images, 20 labels; thresholds fitted on val\n")
    print("| run | test mAP | macro-F1 | micro-F1 | val mAP (kept epoch / run) | loss, lambda | train-head s | calibrate s |")
    print("|---|---|---|---|---|---|---|---|")
    base = next(iter(results.values()))
    for label, r in results.items():
        kept = f" ({r['best_epoch']}/{r['epochs_run']})" if r["train_from"] else ""
        val = "" if r["val_mAP"] is None else f"{r['val_mAP']:.4f}{kept}"
        d = "" if r is base else f" ({r['mAP'] - base['mAP']:+.4f})"
        print(f"| {label} | {r['mAP']:.4f}{d} | {r['macro_f1']:.4f} | {r['micro_f1']:.4f} | {val} | "
              f"{r['loss']}, {r['weight_decay']:.3g} | {r['train_seconds']} | {r['calibrate_seconds']} |")
    for label, r in results.items():
        if r["epoch_val_mAP"]:
            print(f"{label}: val mAP by epoch (0 = head only): " + ", ".join(f"{v:.4f}" for v in r["epoch_val_mAP"]))
    load_after = os.getloadavg()
    suffix = (f"-lr{args.lr}" if args.lr else "") + ("-noval" if args.no_val else "")
    (out / f"results{suffix}.json").write_text(json.dumps({"runs": results, "seconds": round(total, 1),
                                                  "loadavg": [load_before, load_after]}, indent=2, sort_keys=True))
    print(f"total {total:.0f} s; load average {load_before[0]:.1f} at start, {load_after[0]:.1f} at the end "
          f"({os.cpu_count()} CPUs)")
    print(f"command: python benchmarks/finetune_quality.py --out {args.out} --n-train {args.n_train} --n-val {args.n_val} "
          f"--n-test {args.n_test} --seed {args.seed} --runs {args.runs}" + (f" --lr {args.lr}" if args.lr else "") + (" --no-val" if args.no_val else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
