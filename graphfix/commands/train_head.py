"""Train the multi-label head of a swapped model on frozen backbone features.

Features are computed with onnxruntime (the backbone only, cached on disk), the linear head is
trained with torch on CPU (pip install 'graphfix[train]'), and the weights are written into the
head initializers. Losses: bce (default), bce with --pos-weight balanced, asl (asymmetric loss),
softmax (1/k targets; `probabilities` becomes a Softmax). With --val the weight decay is chosen by
validation mAP. Same inputs and --seed give a byte-identical model.

Data: CSV (`path,labels` with `;`-separated names, or `path,<name>,...` 0/1 columns) or NPZ
(`x` [N,C,H,W] preprocessed, `y` [N,L]).
"""

from __future__ import annotations

import argparse

from graphfix.commands._options import add_data_args, add_output_args, default_output, emit, load_model, model_files, output_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="swapped ONNX model (from swap-head)")
    parser.add_argument("--train", required=True, metavar="DATA", help="training data (.csv or .npz)")
    parser.add_argument("--val", metavar="DATA", help="validation data: picks the weight decay, reports val mAP")
    parser.add_argument("--loss", choices=("bce", "asl", "softmax"), default="bce", help="default bce")
    parser.add_argument("--pos-weight", choices=("balanced",), help="bce: weight positives by negatives/positives per class")
    parser.add_argument("--epochs", type=int, default=30, help="default 30")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate (default 0.01)")
    parser.add_argument("--train-batch-size", type=int, default=256, help="samples per step (default 256)")
    parser.add_argument("--weight-decay", default="auto", help="L2 strength or 'auto' (default: sweep with --val, else 1e-4)")
    parser.add_argument("--asl-gamma-neg", type=float, default=4.0, help="ASL gamma- (default 4)")
    parser.add_argument("--asl-gamma-pos", type=float, default=0.0, help="ASL gamma+ (default 0)")
    parser.add_argument("--asl-clip", type=float, default=0.05, help="ASL probability margin (default 0.05)")
    parser.add_argument("--decision", choices=("thresholds", "topk"), default="thresholds",
                        help="how predict decides before calibrate stores thresholds")
    parser.add_argument("--top-k", type=int, help="k for --decision topk (default: mean label count)")
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    add_data_args(parser)
    add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    from graphfix.calibrate import train_head
    from graphfix.calibrate._cli import check_data_path, preprocess_for, progress_for
    from graphfix.errors import GraphfixError

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
    prep = preprocess_for(model, args, [args.train, args.val])
    new, history = train_head(
        model, args.train, args.val, epochs=args.epochs, loss=args.loss, lr=args.lr,
        batch_size=args.train_batch_size, weight_decay=wd, pos_weight=args.pos_weight,
        asl_gamma_neg=args.asl_gamma_neg, asl_gamma_pos=args.asl_gamma_pos, asl_clip=args.asl_clip,
        decision=args.decision, top_k=args.top_k, seed=args.seed, features_batch_size=args.batch_size,
        cache=not args.no_cache, progress=progress_for(args), preprocess=prep,
    )
    new.save(out)
    s = history["settings"]
    text = [
        f"trained head: loss {s['loss']}, {s['epochs']} epochs, weight decay {s['weight_decay']:g} ({s['selected_by']})",
        f"train loss {s['final_train_loss']:.4f}" + (f", val mAP {s['val_mAP']:.4f}" if s.get("val_mAP") is not None else ""),
        f"wrote {out}",
    ]
    emit(args, {"ok": True, "command": "train-head", "output": out, "history": history}, text)
    return 0
