"""Train the multi-label head of a swapped model on frozen backbone features.

Features are computed with onnxruntime (the backbone only, cached on disk). The linear head is
fitted to convergence: features standardised (folded back into the head's weights), full-batch
L-BFGS stopping on the gradient norm, the L2 strength chosen by k-fold cross-validation on the
training set scored by mAP (--val DATA scores on that set instead; --weight-decay X fixes it).
Losses: auto (default: bce, balanced bce, asl, softmax and squared, each on its own CV
regularisation path, compared by --cv-metric; the first within one standard error of the best is
kept and the comparison printed), bce, bce with --pos-weight balanced, asl (asymmetric loss),
squared (least squares on the 0/1 targets, Platt-scaled to probabilities on the out-of-fold
scores), softmax (1/k targets; `probabilities` becomes a Softmax and a `label_count` output is
trained beside it for --decision count). --train-from TENSOR also fine-tunes the layers between TENSOR and the head
(torch, pip install 'graphfix[train]'). Same inputs and --seed give a byte-identical model.

Data: CSV (`path,labels` with `;`-separated names, or `path,<name>,...` 0/1 columns), NPZ
(`x` [N,C,H,W] preprocessed, `y` [N,L]), or a features folder from `graphfix features` (the
backbone is not run again; --features DIR is the same as --train DIR).
"""

from __future__ import annotations

import argparse

from graphfix.commands._options import (
    add_data_args, add_output_args, default_output, emit, load_model, model_files, output_path, positive_int,
)
from graphfix.commands._writeback import add_to_argument, check_output, write_output


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="swapped ONNX model (from swap-head)")
    parser.add_argument("--train", metavar="DATA", help="training data (.csv, .npz or a features folder)")
    parser.add_argument("--features", metavar="FEATURES_DIR", help="training features (graphfix features) in place of --train")
    parser.add_argument("--val", metavar="DATA", help="validation data: picks the weight decay instead of CV, reports val mAP")
    parser.add_argument("--loss", choices=("auto", "bce", "asl", "squared", "softmax"), default="auto",
                        help="default auto: bce, balanced bce, asl, softmax and squared compared by --cv-metric; the first "
                             "within one standard error of the best is kept")
    parser.add_argument("--cv-metric", choices=("map", "macro-f1", "micro-f1"), default="map",
                        help="the score that chooses the loss and the weight decay (default map)")
    parser.add_argument("--l2", choices=("shared", "per-class"), default="shared",
                        help="one weight decay for all labels (default), or one per label chosen on the same CV folds")
    parser.add_argument("--standardize", choices=("auto", "per-feature", "global"), default="auto",
                        help="the features' scale under the L2 penalty: each feature's own std, one std for all (their "
                             "relative scales kept), or auto (default: global only when the squared loss's CV score "
                             "under it is higher by more than one standard error; per-feature with --train-from)")
    parser.add_argument("--pos-weight", choices=("balanced",),
                        help="bce: weight positives by negatives/positives per class (forces --loss bce)")
    parser.add_argument("--weight-decay", default="auto",
                        help="L2 strength lambda (mean loss + lambda/2 ||w||^2 on standardised features) or 'auto' "
                             "(default: k-fold CV on --train, or --val)")
    parser.add_argument("--cv-folds", type=int, default=3, help="folds of the weight-decay CV (default 3)")
    parser.add_argument("--tol", type=float, default=1e-6, help="stop when max |gradient| <= TOL (default 1e-6)")
    parser.add_argument("--max-iter", type=positive_int, default=1000, help="L-BFGS iteration cap (default 1000)")
    parser.add_argument("--asl-gamma-neg", type=float, default=4.0, help="ASL gamma- (default 4)")
    parser.add_argument("--asl-gamma-pos", type=float, default=0.0, help="ASL gamma+ (default 0)")
    parser.add_argument("--asl-clip", type=float, default=0.05, help="ASL probability margin (default 0.05)")
    parser.add_argument("--decision", choices=("thresholds", "topk", "count"), default="thresholds",
                        help="how predict and the labels output decide before calibrate stores thresholds "
                             "(count: top round(label_count) labels, --loss softmax)")
    parser.add_argument("--top-k", type=positive_int, help="k for --decision topk (default: mean label count)")
    parser.add_argument("--train-from", metavar="TENSOR",
                        help="also fine-tune every layer between TENSOR and the head (`graphfix inspect MODEL --train-from` "
                             "lists the tensors it accepts)")
    parser.add_argument("--epochs", type=int, default=30, help="--train-from: Adam epochs (default 30)")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="--train-from: Adam learning rate, relative to each layer's weight size (default 3e-3)")
    parser.add_argument("--train-batch-size", type=positive_int, default=64, help="--train-from: samples per step (default 64)")
    parser.add_argument("--bn-stats", choices=("frozen", "update"), default="frozen",
                        help="--train-from: BatchNormalization running statistics kept (default) or updated from the "
                             "training batches (torch momentum: 1 - the ONNX momentum, 0.1 by default) and written back")
    parser.add_argument("--keep-best-on-interrupt", action="store_true",
                        help="--train-from: on Ctrl-C during the epochs write the best epoch so far (default: write nothing)")
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    add_data_args(parser)
    add_to_argument(parser)
    add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    from graphfix.train import train_head
    from graphfix.commands._data import (
        check_data_path, load_data, preprocess_for, progress_for, report_skipped, warn_skipped,
    )
    from graphfix.errors import GraphfixError

    if (args.train is None) == (args.features is None):
        raise GraphfixError("give --train DATA or --features FEATURES_DIR (one of them)", kind="usage")
    args.train = args.train or args.features
    out = output_path(args.output, default_output(args.model, "-trained"), model_files(args.model) + [args.train, args.val])
    check_data_path(args.train, "--train")
    check_data_path(args.val, "--val")
    wd: float | str = args.weight_decay
    if wd != "auto":
        try:
            wd = float(wd)
        except ValueError as exc:
            raise GraphfixError(f"--weight-decay {wd!r}: a number or 'auto'", kind="usage") from exc
    model = load_model(args)
    check_output(args, model)  # --to's sources, before any backbone runs
    prep = preprocess_for(model, args, [args.train, args.val], head="fit")
    train, val = load_data(args, model, prep, [args.train, args.val], out)
    new, history = train_head(
        model, train, val, loss=args.loss, weight_decay=wd, pos_weight=args.pos_weight,
        sigmoid_only=args.to != "onnx",  # --to mxnet|caffe write Sigmoid heads only
        asl_gamma_neg=args.asl_gamma_neg, asl_gamma_pos=args.asl_gamma_pos, asl_clip=args.asl_clip,
        cv_folds=args.cv_folds, cv_metric=args.cv_metric, l2=args.l2, standardize=args.standardize, tol=args.tol, max_iter=args.max_iter, decision=args.decision, top_k=args.top_k,
        train_from=args.train_from, epochs=args.epochs, lr=args.lr, batch_size=args.train_batch_size,
        bn_stats=args.bn_stats, keep_best_on_interrupt=args.keep_best_on_interrupt,
        seed=args.seed, features_batch_size=args.batch_size, cache=not args.no_cache,
        progress=progress_for(args), preprocess=prep,
    )
    skipped = {}

    def skipped_list(files) -> None:  # the --skip-bad list is committed with the model: both or neither
        skipped["doc"] = report_skipped(args, out, [train, val], into=files)

    exported = write_output(args, new, out, also=skipped_list)
    warn_skipped(args, skipped.get("doc"))
    s = history["settings"]
    _warn_positives(args, s["few_positives"])
    if s.get("interrupted_epoch") and not getattr(args, "quiet", False):
        import sys

        print(f"graphfix: warning: interrupted in epoch {s['interrupted_epoch']} of {s['epochs']}: wrote the best "
              f"epoch so far ({s['best_epoch']})", file=sys.stderr)
    text = summary_lines(s, history) + [f"wrote {out}"]
    emit(args, {"ok": True, "command": "train-head", "output": out, "history": history, "export": exported,
                "skipped_rows": skipped.get("doc")}, text)
    return 0


def _loss_name(s: dict) -> str:
    """The trained loss ("bce-balanced" for balanced bce), "(auto)" when --loss auto chose it."""
    name = str(s.get("loss")) + ("-balanced" if s.get("pos_weight") else "")
    return name + (" (auto)" if s.get("loss_requested") == "auto" else "")


def _selected_by(how: str) -> str:
    """The history's `selected_by` in words ("validation mAP" -> "validation set mAP")."""
    return {"validation mAP": "validation set mAP", "fixed": "--weight-decay"}.get(how, how)


def training_line(s: dict) -> str:
    """`graphfix.training` (train-head's settings) on one line, for `graphfix inspect`."""
    c = "inf" if s.get("C") is None else f"{s['C']:.4g}"
    line = (f"loss {_loss_name(s)}, {s.get('train_samples')} rows, lambda {s.get('weight_decay', 0):.4g} (C {c}) "
            f"chosen by {_selected_by(str(s.get('selected_by')))}")
    if s.get("selection_score") is not None:
        line += f" {s['selection_score']:.4f}"
    if s.get("standardize") == "global":
        line += ", features scaled global"
    line += f", {s.get('iterations')} iterations" + ("" if s.get("converged", True) else " (NOT converged)")
    if s.get("val_mAP") is not None:
        line += f", validation mAP {s['val_mAP']:.4f}"
    if s.get("train_from"):
        line += f", fine-tuned from {s['train_from']} (kept epoch {s.get('best_epoch')} of {s.get('epochs')}"
        line += f", interrupted in epoch {s['interrupted_epoch']})" if s.get("interrupted_epoch") else ")"
    if s.get("decision") not in (None, "thresholds"):
        line += f", decision {s['decision']}" + (f" (k={s['top_k']})" if s.get("top_k") else "")
    if s.get("few_positives"):
        line += f", {len(s['few_positives'])} labels with < 3 positives"
    return line


def summary_lines(s: dict, history: dict) -> list[str]:
    """What train-head says it did: the loss and data, the chosen L2 strength (lambda and sklearn's C
    = 1 / (lambda N) on standardised features) with the score that chose it, the solver, the
    validation mAP and, with --train-from, the validation mAP per epoch and the kept epoch."""
    c = "inf" if s.get("C") is None else f"{s['C']:.4g}"
    lines = [f"trained head: loss {_loss_name(s)}, {s['train_samples']} training rows"
             + (f", {s['val_samples']} validation rows" if s.get("val_samples") else "")]
    chosen = f"chosen by {_selected_by(s['selected_by'])}"
    if s.get("selection_score") is not None:
        chosen += f" {s['selection_score']:.4f} (best of {s['lambda_values']} values)"
    lines.append(f"regularisation: lambda {s['weight_decay']:.4g}, C = 1/(lambda*N) = {c} "
                 f"(sklearn's C on standardised features, N = {history.get('train_samples', s['train_samples'])}); {chosen}")
    lines += scale_lines(s)
    lines.append(f"solver: {s['iterations']} L-BFGS iterations, max |gradient| {s['grad_norm']:.2e}, "
                 f"objective {s['objective']:.6g}" + ("" if s["converged"] else " (NOT converged: raise --max-iter)"))
    if s.get("train_from"):
        curve = s["epoch_val_mAP"]
        lines.append(f"fine-tuning from {s['train_from']} for {s['epochs']} epochs; mAP on the {s['val_source']} "
                     "by epoch (0 = head only):")
        lines.append("  " + ", ".join(f"{i}: {v:.4f}" for i, v in enumerate(curve)))
        stop = f"; interrupted in epoch {s['interrupted_epoch']}" if s.get("interrupted_epoch") else ""
        lines.append(f"kept epoch {s['best_epoch']} (mAP {curve[s['best_epoch']]:.4f}){stop}")
        if s["best_epoch"] == 0 and (history.get("head_only_train_mAP") or 0) >= 0.999:
            lines.append("the head alone already separates the training rows (training mAP "
                         f"{history['head_only_train_mAP']:.4f}): fine-tuning had nothing left to fit; "
                         "more training rows or a cut nearer the head may help")
    elif s.get("val_mAP") is not None:
        lines.append(f"validation set mAP {s['val_mAP']:.4f}")
    per = s.get("l2_per_class") or {}
    if per.get("weight_decay"):
        lams = per["weight_decay"]
        lines.append(f"per-class lambda: {min(lams):.4g}..{max(lams):.4g} over {len(lams)} labels"
                     + (f", {len(per['shared'])} kept the shared one (missing from a fold)" if per["shared"] else ""))
    return lines + loss_table(s)


def scale_lines(s: dict) -> list[str]:
    """How the features were scaled, and the squared loss's scores that chose it (--standardize auto)."""
    choice = s.get("scale_choice")
    if not choice:
        return [f"features scaled {s['standardize']}"] if s.get("standardize") not in (None, "per-feature") else []
    rows = choice["scales"]
    scores = ", ".join(f"{k} {v['score']:.4f} +- {v['spread']:.4f}" for k, v in rows.items())
    return [f"features scaled {choice['chosen']} (auto: the squared loss's best score under each: {scores}; "
            "global only when higher by more than one standard error)"]


def loss_table(s: dict) -> list[str]:
    """The losses `--loss auto` compared: each one's best lambda and selection score +- fold spread."""
    rows = s.get("losses") or []
    if not rows:
        return []
    how = _selected_by(s["selected_by"])
    spread = "" if how.startswith("validation") else " +- fold spread"
    sub = s.get("compared_on")
    where = f" on a stratified subsample of {sub['rows']} of {sub['of']} rows" if sub else ""
    lines = [f"losses compared{where} ({how}{spread}, each at its best lambda):"]
    for r in rows:
        mark = "  <- chosen" if r["chosen"] else ""
        sd = "" if spread == "" else f" +- {r['spread']:.4f}"
        lines.append(f"  {r['loss']:<13} lambda {r['weight_decay']:<9.4g} {r['score']:.4f}{sd}{mark}")
    top = max(rows, key=lambda r: r["score"])
    if not top["chosen"]:
        lines.append(f"  ({top['loss']} scored highest, by less than one standard error (fold spread / sqrt(k)): "
                     "the first loss within it is kept)")
    if sub:
        lines.append("  (the chosen loss's lambda was then chosen again on all rows: above)")
    return lines


def _warn_positives(args: argparse.Namespace, few: dict[str, int]) -> None:
    """One warning line for labels with no training positives, one for those with 1-2."""
    import sys

    from graphfix.train.head_training import MIN_POSITIVES

    if getattr(args, "quiet", False):
        return
    none = [name for name, n in few.items() if n == 0]
    some = [f"{name} ({n})" for name, n in few.items() if n > 0]
    for names, what in ((none, "no training positives (the head only learns 'absent')"),
                        (some, f"fewer than {MIN_POSITIVES} training positives (unreliable scores)")):
        if names:
            shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
            label = "label has" if len(names) == 1 else "labels have"
            print(f"graphfix: warning: {len(names)} {label} {what}: {shown}", file=sys.stderr)
