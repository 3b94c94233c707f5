"""Two head options measured on the acceptance sets of `head_quality.py` (issue 25, items 3 and 4).

- `oof`: thresholds on small held-out sets. The default head (`fit_head`, loss auto) is fitted
  on the training rows; its thresholds come from (a) the held-out scores alone, (b) held-out +
  out-of-fold training scores for classes with fewer than K held-out positives (K = 3, 10, 30,
  all), (c) the old in-sample training-score fallback. Test macro-/micro-F1 of each, on the
  sets' own held-out split and on its first 100 rows (a smaller held-out set).
- `l2`: `--l2 per-class` against the shared lambda on the long-tail sets (test mAP, and macro-/
  micro-F1 at held-out F1 thresholds).

The sets are made by `head_quality.make_tabular` (its pretrained model is Identity -> Gemm, so
the features are the data itself); nothing is downloaded.

    python benchmarks/bench_head_options.py --part oof --sets small-0,small-1,small-2,tail-0,tail-1,corr-0
    python benchmarks/bench_head_options.py --part l2 --sets tail-0,tail-1,tail-2
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _head_quality():
    spec = importlib.util.spec_from_file_location("head_quality", HERE / "head_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_set(name: str, work: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    kind, seed = name.split("-")
    paths = _head_quality().make_tabular(work / name, int(seed), 800 if kind == "small" else 4000, kind)
    out = {}
    for split in ("train", "heldout", "test"):
        d = np.load(paths[f"{split}_data"])
        out[split] = (d["x"], d["y"])
    return out


def head_scores(fit, x: np.ndarray) -> np.ndarray:
    """The fitted head's class scores on features x (Softmax or Sigmoid, as train-head writes it)."""
    z = x.astype(np.float64) @ fit.weight.T.astype(np.float64) + fit.bias
    if fit.history["loss"] == "softmax":
        z = z[:, : fit.history["labels"]]
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def fit_default(x, y, **kw):
    from graphfix.train.head_fit import TrainConfig, fit_head

    fit = fit_head(x, y, TrainConfig(count=True, **kw))
    fit.history["labels"] = y.shape[1]
    return fit


def part_oof(sets: list[str], work: Path) -> None:
    from graphfix.calibrate import evaluate, fit_thresholds_from_scores
    from graphfix.train.head_fit import TrainConfig, oof_scores

    variants = ["heldout", "K=3", "K=10", "K=30", "all", "train (in-sample)"]
    print("| set | held-out rows | " + " | ".join(variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    gains = {v: [] for v in variants}
    for name in sets:
        d = load_set(name, work)
        (xtr, ytr), (xho, yho), (xte, yte) = d["train"], d["heldout"], d["test"]
        fit = fit_default(xtr, ytr)
        h = fit.history
        cfg = TrainConfig(loss=h["loss"], pos_weight=h["pos_weight"], count=h["loss"] == "softmax")
        oof = oof_scores(xtr, ytr, cfg, h["weight_decay"])
        s_tr, s_te = head_scores(fit, xtr), head_scores(fit, xte)
        for rows in (len(xho), 100):
            s_ho, y_ho = head_scores(fit, xho[:rows]), yho[:rows]
            cells, base = [], None
            for v in variants:
                kw = {}
                if v.startswith("K=") or v == "all":
                    kw = dict(oof_scores=oof, oof_y=ytr, oof_below=10**9 if v == "all" else int(v[2:]))
                elif v.startswith("train"):
                    kw = dict(train_scores=s_tr, train_y=ytr)
                th = fit_thresholds_from_scores(s_ho, y_ho, "f1", **kw)
                m = evaluate(s_te, yte, th)
                if base is None:
                    base = m
                gains[v].append((m["macro_f1"] - base["macro_f1"], m["micro_f1"] - base["micro_f1"]))
                cells.append(f"{m['macro_f1']:.4f} / {m['micro_f1']:.4f}")
            print(f"| {name} ({h['candidate']}) | {rows} | " + " | ".join(cells) + " |")
            sys.stdout.flush()
    print("\nmean change against held-out only (macro-F1 / micro-F1):")
    for v in variants[1:]:
        g = np.array(gains[v])
        print(f"  {v:<18} {g[:, 0].mean():+.4f} / {g[:, 1].mean():+.4f}   (worst {g[:, 0].min():+.4f} / {g[:, 1].min():+.4f})")


def part_l2(sets: list[str], work: Path) -> None:
    from graphfix.calibrate import evaluate, fit_thresholds_from_scores
    from graphfix.metrics import mean_average_precision

    print("| set | l2 | chosen | test mAP | macro-F1 | micro-F1 | CV score |")
    print("|---|---|---|---|---|---|---|")
    diffs = []
    for name in sets:
        d = load_set(name, work)
        (xtr, ytr), (xho, yho), (xte, yte) = d["train"], d["heldout"], d["test"]
        row = []
        for l2 in ("shared", "per-class"):
            fit = fit_default(xtr, ytr, l2=l2)
            h = fit.history
            s_te = head_scores(fit, xte)
            th = fit_thresholds_from_scores(head_scores(fit, xho), yho, "f1")
            m = evaluate(s_te, yte, th)
            m_ap = mean_average_precision(yte, s_te)
            score = (h.get("l2") or {}).get("score") or max(c["score"] for c in h["cv"])
            row.append((m_ap, m["macro_f1"], m["micro_f1"]))
            print(f"| {name} | {l2} | {h['candidate']} {h['weight_decay']:.3g} | {m_ap:.4f} | {m['macro_f1']:.4f} | "
                  f"{m['micro_f1']:.4f} | {score:.4f} |")
            sys.stdout.flush()
        diffs.append(np.subtract(row[1], row[0]))
    diffs = np.array(diffs)
    print(f"\nper-class - shared, mean over sets: mAP {diffs[:, 0].mean():+.4f}, macro-F1 {diffs[:, 1].mean():+.4f}, "
          f"micro-F1 {diffs[:, 2].mean():+.4f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("oof", "l2"), required=True)
    p.add_argument("--sets", default="small-0,small-1,small-2,tail-0,tail-1,corr-0")
    p.add_argument("--out", help="work folder (default: a temporary one)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        (part_oof if args.part == "oof" else part_l2)(args.sets.split(","), work)
    print(f"command: python benchmarks/bench_head_options.py --part {args.part} --sets {args.sets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
