"""Issue 24 acceptance on every model the fine-tuning tests rebuild: teacher tasks.

    PYTHONPATH=. python benchmarks/finetune_teacher.py [--models SUBSTR ...] [--rows 400] [--json OUT]

For each model of tests/train/test_finetune_blocks.py's CORPUS (the zoo subset, both exporters,
and the legacy MXNet/Caffe fixtures with trainable blocks): labels come from a random network on
the activations at the last cut (`_teacher_labels`: the layers after the cut with re-drawn weights
and a random readout, which a head on the frozen layers cannot reach). Inputs are seeded Gaussian
images; --rows training rows, 100 validation, 200 test. It prints validation and test mAP of the
head-only solve and of `train_from="-1"` with the CLI defaults, the kept epoch, whether
everything before the cut stayed bit-identical, and seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from graphfix.data import Dataset, model_scores  # noqa: E402
from graphfix.metrics import mean_average_precision  # noqa: E402
from graphfix.train import train_head  # noqa: E402
from graphfix.train.finetune import resolve_train_from, segment_nodes  # noqa: E402
from tests.train.test_finetune_blocks import CORPUS, _load, _teacher_labels  # noqa: E402


def run_one(rel: str, rows: int) -> dict:
    model, shape = _load(rel)
    tensor = resolve_train_from(model, "-1")
    x = np.random.default_rng(0).standard_normal((rows + 300, *shape)).astype(np.float32)
    y = _teacher_labels(model, tensor, x)
    names = ["a", "b", "c"]
    parts = (slice(0, rows), slice(rows, rows + 100), slice(rows + 100, rows + 300))
    train, val, test = (Dataset.from_arrays(x[s], y[s], names) for s in parts)
    t0 = time.perf_counter()
    head_only, _ = train_head(model, train, val, cache=False)
    tuned, hist = train_head(model, train, val, train_from="-1", cache=False)
    seconds = time.perf_counter() - t0
    s_head, yt = model_scores(head_only, test)
    s_tuned, _ = model_scores(tuned, test)
    seg = {v.name for n in segment_nodes(model, tensor) for v in n.inputs if v is not None}
    before = {k: v.const_value.numpy().tobytes() for k, v in model.ir.graph.initializers.items()}
    after = {k: v.const_value.numpy().tobytes() for k, v in tuned.ir.graph.initializers.items()}
    kept = all(after.get(k) == b for k, b in before.items() if k not in seg and not k.startswith("graphfix_head"))
    return {
        "model": rel, "cut": tensor, "val_head_only": hist["head_only_val_mAP"], "val_tuned": hist["val_mAP"],
        "test_head_only": mean_average_precision(yt, s_head), "test_tuned": mean_average_precision(yt, s_tuned),
        "best_epoch": hist.get("best_epoch"), "epochs_run": hist.get("epochs_run"),
        "head_only_train_mAP": hist.get("head_only_train_mAP"), "before_cut_identical": kept, "seconds": seconds,
        "activations": hist["activations"]["dtype"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="only models whose path contains one of these")
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rels = [r for r in CORPUS if not args.models or any(m in r for m in args.models)]
    results = []
    print("| model | val head-only | val last block | test head-only | test last block | kept epoch | "
          "before cut identical | activations | s |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for rel in rels:
        r = run_one(rel, args.rows)
        results.append(r)
        print(f"| {Path(rel).name} | {r['val_head_only']:.4f} | {r['val_tuned']:.4f} | {r['test_head_only']:.4f} | "
              f"{r['test_tuned']:.4f} | {r['best_epoch']} | {r['before_cut_identical']} | {r['activations']} | "
              f"{r['seconds']:.0f} |",
              flush=True)
    wins = sum(r["test_tuned"] > r["test_head_only"] for r in results)
    print(f"last block beats head-only on test mAP: {wins} of {len(results)}; "
          f"bit-identical before the cut: {sum(r['before_cut_identical'] for r in results)} of {len(results)}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
