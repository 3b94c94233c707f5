"""Fit per-class decision thresholds on held-out data and store them in the model.

Exact per-class search by sorting (tied scores are never split) for --objective f1 (default),
f2, fbeta:B, precision@P, recall@R, or one global threshold for micro-f1. Classes with fewer than
--min-positives held-out positives fall back to thresholds fitted on --train data, else to the
global micro-F1 threshold; the output says which classes fell back and why. With --train and
--oof-below K, a class with fewer than K held-out positives gets its threshold from its held-out
scores pooled with the training rows' out-of-fold scores (the head's CV folds solved again on the
training features; the source of each class's threshold is reported). Thresholds go into
`graphfix.thresholds` metadata and a bool `labels` output (probabilities >= thresholds).
--test DATA reports metrics at 0.5 and at the fitted thresholds on a separate split; --report DIR
writes report.json, index.html (one self-contained page: sortable per-class table, PR curves,
the replaced head), per_class.csv/.md and precision-recall PNGs (these need matplotlib, the
`report` extra; without it they are skipped with a warning and everything else is written).
Any DATA may be a features folder from `graphfix features` (--features DIR is --heldout DIR).
A head that was never trained (no graphfix.training: straight from swap-head) is refused, since
thresholds on random weights mean nothing; --untrained calibrates it anyway (it stays "untrained").
"""

from __future__ import annotations

import argparse
import os

from graphfix.errors import GraphfixError
from graphfix.commands._options import (
    add_data_args,
    add_output_args, add_target_args, default_output, emit, export_lines, load_model, model_files, output_path,
    positive_int,
)
from graphfix.commands._writeback import add_to_argument, check_output, write_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="trained swapped ONNX model (from train-head)")
    parser.add_argument("--heldout", metavar="DATA", help="held-out data to fit thresholds on (.csv, .npz or a features folder)")
    parser.add_argument("--features", metavar="FEATURES_DIR", help="held-out features (graphfix features) in place of --heldout")
    parser.add_argument("--objective", default="f1",
                        help="f1 | f2 | fbeta:B | precision@P | recall@R | micro-f1 (default f1)")
    parser.add_argument("--train", metavar="DATA",
                        help="the training data: out-of-fold scores for classes with few held-out positives")
    parser.add_argument("--oof-below", type=int, default=0, metavar="K",
                        help="with --train: classes with fewer than K held-out positives pool their held-out and "
                             "out-of-fold training scores (default 0: off, the in-sample fallback)")
    parser.add_argument("--test", metavar="DATA", help="evaluate at 0.5 and at the fitted thresholds on this split")
    parser.add_argument("--min-positives", type=positive_int, default=3, help="fewer held-out positives -> fallback (default 3)")
    parser.add_argument("--folds", type=int, help="average thresholds over K folds of the held-out set")
    parser.add_argument("--at-least-one", action="store_true", help="always keep each image's top label")
    parser.add_argument("--no-labels-output", action="store_true", help="store thresholds as metadata only")
    parser.add_argument("--report", metavar="DIR", help="write report.json, index.html, per_class.csv/.md and PR plots here")
    parser.add_argument("--no-plots", action="store_true", help="with --report: skip the PNG plots")
    parser.add_argument("--seed", type=int, default=0, help="fold assignment seed (default 0)")
    parser.add_argument("--untrained", action="store_true",
                        help="calibrate a head that was never trained (refused without this flag)")
    add_data_args(parser)
    add_target_args(parser)
    add_to_argument(parser)
    add_output_args(parser)


def _line(name: str, m: dict) -> str:
    return (f"{name:<16} macro-F1 {m['macro_f1']:.4f}  micro-F1 {m['micro_f1']:.4f}  mAP {m['mAP'] or 0:.4f}  "
            f"subset-acc {m['subset_accuracy']:.4f}  Hamming {m['hamming_loss']:.4f}")


def run(args: argparse.Namespace) -> int:
    from graphfix.calibrate import (
        apply_thresholds, check_trained, evaluate, fit_thresholds_from_scores, training_oof_scores,
    )
    from graphfix.data import model_scores
    from graphfix.commands._data import (
        check_data_path, load_data, preprocess_for, progress_for, record_skipped, report_skipped, warn_skipped,
    )

    if (args.heldout is None) == (args.features is None):
        raise GraphfixError("give --heldout DATA or --features FEATURES_DIR (one of them)", kind="usage")
    args.heldout = args.heldout or args.features
    out = output_path(args.output, default_output(args.model, "-calibrated"),
                      model_files(args.model) + [args.heldout, args.train, args.test])
    for flag, path in (("--heldout", args.heldout), ("--train", args.train), ("--test", args.test)):
        check_data_path(path, flag)
    from graphfix.calibrate.thresholds import parse_objective

    parse_objective(args.objective)
    if args.report and os.path.exists(args.report) and not os.path.isdir(args.report):
        raise GraphfixError("--report: is not a folder", kind="usage", path=args.report)
    model = load_model(args)
    check_output(args, model)  # --to's sources, before any backbone runs
    check_trained(model, args.untrained, args.model)
    prep = preprocess_for(model, args, [args.heldout, args.train, args.test])
    data = load_data(args, model, prep, [args.heldout, args.train, args.test], out)
    heldout, train, test = data
    kw = dict(batch_size=args.batch_size, cache=not args.no_cache, progress=progress_for(args), preprocess=prep)
    scores, y = model_scores(model, heldout, **kw)
    if args.oof_below < 0:
        raise GraphfixError("--oof-below must be >= 0", kind="usage")
    train_scores = train_y = oof = None
    if train is not None:
        oof = training_oof_scores(model, train, **kw) if args.oof_below > 0 else None
        if oof is None:
            train_scores, train_y = model_scores(model, train, **kw)
    labels = model.labels or [str(j) for j in range(scores.shape[1])]
    th = fit_thresholds_from_scores(
        scores, y, args.objective, labels=labels, train_scores=train_scores, train_y=train_y,
        min_positives=args.min_positives, folds=args.folds, at_least_one=args.at_least_one, seed=args.seed,
        oof_scores=None if oof is None else oof[0], oof_y=None if oof is None else oof[1], oof_below=args.oof_below,
    )
    new = apply_thresholds(model, th, labels_output=not args.no_labels_output)
    record_skipped(new, "calibration", data)
    splits = {"heldout": {"at_0.5": evaluate(scores, y, 0.5, labels), "tuned": th.heldout}}
    if test is not None:
        t_scores, t_y = model_scores(model, test, **kw)
        splits["test"] = {"at_0.5": evaluate(t_scores, t_y, 0.5, labels), "tuned": evaluate(t_scores, t_y, th, labels)}
    files: list[str] = []
    if args.report and not args.no_plots:
        import sys

        from graphfix.calibrate.report import plots_available

        if not plots_available():
            print("graphfix: warning: matplotlib is not installed: PR-curve PNGs skipped "
                  f"(the curves are in {os.path.join(args.report, 'index.html')}; pip install 'graphfix[report]')",
                  file=sys.stderr)

    def report(outputs) -> None:  # written with the model: both or neither
        from graphfix.calibrate.report import write_report

        staged = write_report(outputs.folder(args.report), th, splits, scores, y, plots=not args.no_plots,
                              extra={"model": args.model, "output": out, "objective": th.objective},
                              head=model.metadata.get("head"))
        files.extend(os.path.join(args.report, os.path.basename(f)) for f in staged)

    skipped = {}

    def also(outputs) -> None:  # the report and the --skip-bad list are committed with the model
        if args.report:
            report(outputs)
        skipped["doc"] = report_skipped(args, out, data, into=outputs)

    exported = write_output(args, new, out, also=also, parity_data=args.heldout, preprocess=prep)
    warn_skipped(args, skipped.get("doc"))
    text = [f"objective {th.objective}: {sum(m == 'tuned' or m == 'global' for m in th.methods)}/{len(labels)} classes tuned"]
    pooled = [(lab, p) for lab, p, src in zip(th.labels, th.positives, th.sources) if src == "heldout+oof"]
    if pooled:
        shown = ", ".join(f"{lab} ({p})" for lab, p in pooled[:20]) + (f" and {len(pooled) - 20} more" if len(pooled) > 20 else "")
        text.append(f"  {len(pooled)} with < {th.oof_below} held-out positives, fitted on held-out + out-of-fold "
                    f"training scores: {shown}")
    for fb in th.fallbacks:
        text.append(f"  {fb['label']}: {fb['method']} (t={fb['threshold']:.4f}): {fb['reason']}")
    for w in th.warnings:
        text.append(f"  warning: {w}")
    for split, res in splits.items():
        text.append(_line(f"{split} @0.5", res["at_0.5"]))
        text.append(_line(f"{split} tuned", res["tuned"]))
    if files:
        text.append(f"report: {args.report} ({len(files)} files)")
    text += export_lines(exported)
    text.append(f"wrote {out}")

    def brief(m: dict) -> dict:
        return {k: v for k, v in m.items() if k != "per_class"}

    doc = {
        "ok": True, "command": "calibrate", "output": out, "thresholds": th.to_dict(),
        "metrics": {s: {k: brief(v) for k, v in r.items()} for s, r in splits.items()},
        "report_files": files,
        "export": exported,
        "skipped_rows": skipped.get("doc"),
    }
    emit(args, doc, text)
    return 0
