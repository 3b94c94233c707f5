"""Head quality: graphfix's CLI defaults against a converged, CV-tuned scikit-learn reference.

For each data set, in one process:
- graphfix, as a new user runs it: `swap-head` -> `train-head --train` -> `calibrate --heldout
  --test` (CLI entry point called in-process, defaults only), test metrics from calibrate's JSON;
  then the options that go beyond the defaults (ASL, class-balanced BCE, the train-score
  fallback, softmax with the label-count decision and with top-k, `--train-from`).
- the reference on the very same features: scikit-learn `StandardScaler` + one-vs-rest
  `LogisticRegression` (lbfgs, tol 1e-6, max_iter 10000), one C for all classes chosen by
  `GridSearchCV` (C in 10^-4..10^4, 17 values, 3 shuffled folds, scored by mAP over the classes
  with a positive), refitted on the whole training set; its per-class thresholds are fitted on
  the held-out scores with the same exact F1 search and few-positive policy that graphfix uses,
  so the rows differ only in the head.
- the noise of the comparison: a 95% paired-bootstrap interval of default - reference for each
  metric, over the test rows resampled (1000 rounds, the same rows for both; the thresholds are
  not refitted, so the held-out set's own noise is not in it).

Data sets (nothing downloaded), each split train / held-out / test:
- `mosaics`: digit mosaics (`digit_mosaics.py`, long-tailed, a CNN's 32 backbone features);
- `tabular-S`: scikit-learn's `make_multilabel_classification` (count features, 20 labels, seed
  S; two constant columns and a few columns scaled by 10 added, like real features), 2000
  training rows;
- `small-S`: the same with 400 training rows (the regularisation choice is noisy);
- `tail-S`: the same with the labels' priors spread from 0.5% to 30% (a long tail);
- `corr-S`: 10 of the 20 labels are ORs / ANDs of pairs of the others (correlated labels);
- `photos`: features of a real pretrained backbone on real photographs: open_nsfw (Caffe
  ResNet-50-1by2 with its real weights, `bash fixtures/caffe/fetch_nsfw.sh .cache/nsfw`,
  `--nsfw-dir`) converted and swapped with its own preprocessing (224x224, BGR, mean 104,117,123)
  on the real-photo set (`real_photos.py`: 20 labels, 600 / 300 / 600 images; needs the `bench`
  extra, scikit-image). Both sides use the same cached backbone features (1024 per image).

    python benchmarks/head_quality.py --out /tmp/head-quality            # everything
    python benchmarks/head_quality.py --out /tmp/hq --sets tabular-0     # one set
    python benchmarks/head_quality.py --out /tmp/hq --quick --sets small-0,tail-0,corr-0   # defaults vs reference only
    python benchmarks/head_quality.py --out /tmp/hq --sets photos                          # open_nsfw on real photos
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
NSFW_DIR = HERE.parent / ".cache" / "nsfw"
C_GRID = np.logspace(-4, 4, 17)


def _benchmark(name: str):
    """A sibling benchmark script (digit_mosaics, real_photos) as a module."""
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cli(*args: str) -> dict:
    """Run `graphfix ARGS --json` in this process; the parsed JSON document."""
    from graphfix.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([*args, "--json"])
    if rc != 0:
        raise RuntimeError(f"graphfix {' '.join(args)} exited {rc}:\n{buf.getvalue()}")
    return json.loads(buf.getvalue())


# ----- data sets ----------------------------------------------------------------------------
def tabular_model(n_features: int, n_labels: int, path: Path, seed: int) -> None:
    """A 'pretrained' softmax classifier on tabular features: data -> Identity -> Gemm -> Softmax."""
    import onnx
    import onnx.helper as oh
    from onnx import numpy_helper

    from graphfix.convert._onnx import make_model

    rng = np.random.default_rng(seed)
    nodes = [
        oh.make_node("Identity", ["data"], ["features"], name="backbone"),
        oh.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["fc"], name="fc", transB=1),
        oh.make_node("Softmax", ["fc"], ["prob"], name="softmax", axis=1),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((n_labels, n_features)).astype(np.float32) * 0.01, "fc.weight"),
             numpy_helper.from_array(np.zeros(n_labels, np.float32), "fc.bias")]
    graph = oh.make_graph(nodes, "tabular", [oh.make_tensor_value_info("data", onnx.TensorProto.FLOAT, ["N", n_features])],
                          [oh.make_tensor_value_info("prob", onnx.TensorProto.FLOAT, ["N", n_labels])], inits)
    onnx.save(make_model(graph), os.fspath(path))


def make_tabular(out: Path, seed: int, n: int = 4000, kind: str = "tabular") -> dict[str, Any]:
    from sklearn.datasets import make_multilabel_classification

    x, y = make_multilabel_classification(n_samples=n, n_features=60, n_classes=20, n_labels=3, length=50,
                                          allow_unlabeled=True, sparse=False, random_state=seed)
    rng = np.random.default_rng(seed)
    if kind == "tail":  # keep each label's positives with a probability that falls from 1 to ~0.03
        keep = np.geomspace(1.0, 0.03, y.shape[1])
        y = y * (rng.random(y.shape) < keep)
    elif kind == "corr":  # labels 10..19 become ORs / ANDs of pairs of labels 0..9
        for j in range(10, 20):
            a, b = rng.choice(10, 2, replace=False)
            y[:, j] = (y[:, a] | y[:, b]) if j % 2 else (y[:, a] & y[:, b])
    x = x.astype(np.float32)
    x[:, :5] *= 10.0
    x = np.concatenate([x, np.full((len(x), 1), 3.0, np.float32), np.zeros((len(x), 1), np.float32)], axis=1)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"model": str(out / "pretrained.onnx"), "labels": "20"}
    tabular_model(x.shape[1], 20, out / "pretrained.onnx", seed)
    for name, part in (("train", slice(0, n // 2)), ("heldout", slice(n // 2, 3 * n // 4)), ("test", slice(3 * n // 4, n))):
        np.savez(out / f"{name}.npz", x=x[part], y=y[part].astype(np.uint8))
        paths[f"{name}_data"] = str(out / f"{name}.npz")
    return paths


def make_mosaics(out: Path) -> dict[str, Any]:
    paths = _benchmark("digit_mosaics").generate(out, n_train=3000, n_heldout=1000, n_test=1000)
    return {**paths, **{f"{k}_data": paths[f"{k}_npz"] for k in ("train", "heldout", "test")}}


def make_photos(out: Path, nsfw_dir: Path) -> dict[str, Any]:
    """open_nsfw converted to ONNX, and the real-photo set's CSVs (val is the held-out split)."""
    proto, weights = nsfw_dir / "deploy.prototxt", nsfw_dir / "resnet_50_1by2_nsfw.caffemodel"
    if not (proto.is_file() and weights.is_file()):
        raise SystemExit(f"head_quality: {nsfw_dir}: no open_nsfw; run: bash fixtures/caffe/fetch_nsfw.sh {nsfw_dir}")
    photos = _benchmark("real_photos").ensure(out / "photos")
    out.mkdir(parents=True, exist_ok=True)
    cli("convert", str(proto), "--weights", str(weights), "-o", str(out / "open_nsfw.onnx"))
    return {"model": str(out / "open_nsfw.onnx"), "labels": photos["labels"],
            "swap_args": ["--size", "224,224", "--mean", "104,117,123", "--bgr"],
            "train_data": photos["train"], "heldout_data": photos["val"], "test_data": photos["test"]}


# ----- runs ---------------------------------------------------------------------------------
def _test_metrics(doc: dict) -> dict[str, float]:
    m = doc["metrics"]["test"]["tuned"]
    return {"mAP": m["mAP"], "macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"]}


def graphfix_runs(out: Path, paths: dict[str, Any], *, train_from: str | None, quick: bool = False) -> dict[str, dict]:
    swapped = out / "swapped.onnx"
    cli("swap-head", paths["model"], "--labels", paths["labels"], *paths.get("swap_args", []), "-o", str(swapped))
    train, held, test = paths["train_data"], paths["heldout_data"], paths["test_data"]
    runs: dict[str, dict] = {}

    def pipeline(name: str, train_args: list[str], cal_args: list[str] = ()) -> dict:
        trained, calibrated = out / f"trained-{name}.onnx", out / f"calibrated-{name}.onnx"
        start = time.perf_counter()
        th = cli("train-head", str(swapped), "--train", train, *train_args, "-o", str(trained))
        seconds = time.perf_counter() - start
        cal = cli("calibrate", str(trained), "--heldout", held, "--test", test, *cal_args, "-o", str(calibrated))
        h = th["history"]
        res = {**_test_metrics(cal), "train_seconds": round(seconds, 2), "weight_decay": h["weight_decay"],
               "iterations": h["iterations"], "grad_norm": h["grad_norm"], "chosen": h.get("candidate"),
               "losses": [{k: r[k] for k in ("loss", "weight_decay", "score", "spread")} for r in h.get("losses", [])]}
        runs[name] = res
        return res

    pipeline("default", [])
    pipeline("bce", ["--loss", "bce"])
    if quick:
        return runs
    pipeline("asl", ["--loss", "asl"])
    pipeline("balanced", ["--pos-weight", "balanced"])
    pipeline("fallback:train", [], ["--train", train])
    for decision in ("count", "topk"):
        trained = out / f"trained-softmax-{decision}.onnx"
        cli("train-head", str(swapped), "--train", train, "--loss", "softmax", "--decision", decision, "-o", str(trained))
        runs[f"softmax+{decision}"] = _decision_metrics(trained, test)
    pipeline("softmax+thresholds", ["--loss", "softmax"])
    if train_from:
        pipeline(f"train-from {train_from}", ["--train-from", train_from])
    return runs


def _outputs(model_path: Path, test: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(targets, probabilities, the model's own `labels` decisions) on the test set."""
    from graphfix.data import as_dataset
    from graphfix.model import Model

    model = Model.load(model_path)
    ds = as_dataset(model, test)
    runs = [model.run(x) for x in ds.batches(64)]
    return np.asarray(ds.y), *(np.concatenate([r[k] for r in runs]) for k in ("probabilities", "labels"))


def _decision_metrics(model_path: Path, test: str) -> dict[str, float]:
    """Test metrics of the model's own `labels` output (its stored top-k / count decision)."""
    y, probabilities, labels = _outputs(model_path, test)
    return _metrics(y, probabilities, labels)


def _metrics(y: np.ndarray, scores: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from graphfix import metrics

    return {"mAP": metrics.mean_average_precision(y, scores), "macro_f1": metrics.macro_f1(y, pred),
            "micro_f1": metrics.micro_f1(y, pred)}


def paired_bootstrap(y: np.ndarray, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                     rounds: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """95% intervals of metric(a) - metric(b) over test rows resampled with replacement (the
    same rows for both; a and b are (scores, decisions)): how much of a difference the test
    set's size alone can make."""
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {"mAP": [], "macro_f1": [], "micro_f1": []}
    for _ in range(rounds):
        rows = rng.integers(0, len(y), len(y))
        ma, mb = _metrics(y[rows], a[0][rows], a[1][rows]), _metrics(y[rows], b[0][rows], b[1][rows])
        for k in diffs:
            diffs[k].append(ma[k] - mb[k])
    return {k: [round(float(np.nanpercentile(v, 2.5)), 4), round(float(np.nanpercentile(v, 97.5)), 4)]
            for k, v in diffs.items()}


def _features(swapped: Path, data: str) -> tuple[np.ndarray, np.ndarray]:
    """The backbone features and targets of a data set (NPZ or CSV), as train-head computes them (cached)."""
    from graphfix.data import as_dataset, extract_features
    from graphfix.model import Model

    model = Model.load(swapped)
    ds = as_dataset(model, data)
    return np.asarray(extract_features(model, ds)), ds.y


def _map_scorer(estimator, x, y) -> float:
    from sklearn.metrics import average_precision_score

    scores = estimator.predict_proba(x)
    present = y.sum(axis=0) > 0
    return float(np.mean([average_precision_score(y[:, j], scores[:, j]) for j in np.flatnonzero(present)]))


def reference_run(out: Path, paths: dict[str, Any]) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from graphfix.calibrate import evaluate, fit_thresholds_from_scores
    from graphfix.calibrate.decisions import decide

    swapped = out / "swapped.onnx"
    xtr, ytr = _features(swapped, paths["train_data"])
    xho, yho = _features(swapped, paths["heldout_data"])
    xte, yte = _features(swapped, paths["test_data"])
    start = time.perf_counter()
    pipe = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(tol=1e-6, max_iter=10000)))
    search = GridSearchCV(pipe, {"onevsrestclassifier__estimator__C": C_GRID}, scoring=_map_scorer,
                          cv=KFold(3, shuffle=True, random_state=0), refit=True)
    search.fit(xtr.astype(np.float64), ytr)
    seconds = time.perf_counter() - start
    th = fit_thresholds_from_scores(search.predict_proba(xho), yho, "f1")
    scores = search.predict_proba(xte)
    m = evaluate(scores, yte, th)
    return {"mAP": m["mAP"], "macro_f1": m["macro_f1"], "micro_f1": m["micro_f1"], "train_seconds": round(seconds, 2),
            "C": float(search.best_params_["onevsrestclassifier__estimator__C"]),
            "_outputs": (scores, decide(scores, th.values, at_least_one=th.at_least_one))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="head-quality", help="work folder (default ./head-quality)")
    p.add_argument("--sets", default="mosaics,tabular-0,tabular-1,tabular-2", help="comma-separated")
    p.add_argument("--tabular-samples", type=int, default=4000, help="rows of each tabular set (default 4000)")
    p.add_argument("--quick", action="store_true", help="only the defaults (and plain bce) against the reference")
    p.add_argument("--nsfw-dir", default=str(NSFW_DIR), help="open_nsfw files for the photos set (fetch_nsfw.sh)")
    args = p.parse_args(argv)
    out = Path(args.out)
    os.environ.setdefault("GRAPHFIX_CACHE", str(out / "cache"))
    results = {}
    for name in args.sets.split(","):
        folder = out / name
        if name == "mosaics":
            paths = make_mosaics(folder)
        elif name == "photos":
            paths = make_photos(folder, Path(args.nsfw_dir))
        else:
            kind, seed = name.split("-")
            n = 800 if kind == "small" else args.tabular_samples
            paths = make_tabular(folder, int(seed), n, kind)
        runs = graphfix_runs(folder, paths, train_from="p1" if name == "mosaics" else None, quick=args.quick)
        runs["sklearn reference"] = reference_run(folder, paths)
        y, probabilities, labels = _outputs(folder / "calibrated-default.onnx", paths["test_data"])
        runs["default"]["ci95_vs_reference"] = paired_bootstrap(
            y, (probabilities, labels), runs["sklearn reference"].pop("_outputs"))
        results[name] = runs
        print(f"\n## {name}\n")
        print("| run | test mAP | macro-F1 | micro-F1 | train s | chosen |")
        print("|---|---|---|---|---|---|")
        ref = runs["sklearn reference"]
        for run, m in runs.items():
            diff = "" if run == "sklearn reference" else f" ({m['mAP'] - ref['mAP']:+.4f})"
            print(f"| {run} | {m['mAP']:.4f}{diff} | {m['macro_f1']:.4f} ({m['macro_f1'] - ref['macro_f1']:+.4f}) | "
                  f"{m['micro_f1']:.4f} ({m['micro_f1'] - ref['micro_f1']:+.4f}) | {m.get('train_seconds', '')} | "
                  f"{_chosen(m)} |")
        ci = runs["default"]["ci95_vs_reference"]
        print("\ndefault - reference, 95% paired-bootstrap interval over test rows: " + ", ".join(
            f"{k} [{lo:+.4f}, {hi:+.4f}]" for k, (lo, hi) in ci.items()))
        sys.stdout.flush()
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    worst = min(min(r["default"][k] - r["sklearn reference"][k] for k in ("mAP", "macro_f1", "micro_f1")) for r in results.values())
    gain = float(np.mean([r["default"]["mAP"] - r["sklearn reference"]["mAP"] for r in results.values()]))
    print(f"\nworst default - reference over all sets and metrics: {worst:+.4f} (target >= -0.005)")
    print(f"mean mAP gain of the defaults over the reference: {gain:+.4f} (target > 0)")
    print(f"command: python benchmarks/head_quality.py --out {args.out} --sets {args.sets} --tabular-samples "
          f"{args.tabular_samples}" + (" --quick" if args.quick else ""))
    return 0 if worst >= -0.005 and gain > 0 else 1


def _chosen(m: dict) -> str:
    """The loss and lambda the run's train-head kept (the reference: its C)."""
    if "C" in m:
        return f"C {m['C']:.3g}"
    if not m.get("chosen"):
        return ""
    return f"{m['chosen']}, lambda {m['weight_decay']:.3g}"


if __name__ == "__main__":
    sys.exit(main())
