"""Convert models to clean ONNX (MXNet, Caffe or ONNX in); folders convert every model in them.

One model: `graphfix convert x-symbol.json -o x.onnx`. The output has an explicit IR version,
its opset kept (importers write 17), unique node names, topological order, no unused nodes and
no initializers listed as graph inputs; `--swap-head N|FILE` also replaces the head.
A fleet: `graphfix convert DIR... -o OUTDIR [--recursive] [--jobs N]` converts each model
(`*-symbol.json` with its params, `*.prototxt` beside a caffemodel, `*.onnx`) in a pool of
long-lived worker processes (a crash or timeout replaces that worker only), mirrors the folder layout under OUTDIR, prints a summary, writes OUTDIR/summary.json,
and exits 1 if any model failed. Re-runs skip models whose output is newer than their sources.
`--ray [ADDRESS]` runs each model of a fleet as a Ray task instead (same rows, summary and rules);
every Ray node must see the input folders and OUTDIR at the same paths (a shared file system),
which is checked before anything is converted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time

from graphfix.commands._options import (
    add_model_args, add_output_args, add_preprocess_args, add_ray_arg, add_target_args, default_output, emit,
    export_lines, load_model, model_files, output_path, positive_float, positive_int, write_model,
)
from graphfix.errors import GraphfixError, Interrupted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, nargs="+")
    parser.add_argument("--swap-head", metavar="N|FILE", help="also replace the head with N labels (or names from FILE)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new head (with --swap-head)")
    add_preprocess_args(parser)
    add_target_args(parser)
    parser.add_argument("--verify", action="store_true",
                        help="run the source framework (mxnet / OpenCV DNN) where importable and report max abs diff")
    fleet = parser.add_argument_group("fleet (folders or several models)")
    fleet.add_argument("--recursive", "-r", action="store_true", help="look into subfolders")
    fleet.add_argument("--jobs", "-j", type=positive_int, default=1, help="models converted at once (default 1)")
    fleet.add_argument("--timeout", type=positive_float, default=600, help="seconds per model before it is stopped (default 600)")
    fleet.add_argument("--force", action="store_true", help="convert even where the output is up to date")
    fleet.add_argument("--recycle-after", type=positive_int, default=100, metavar="N",
                       help="replace a worker process after N models (default 100)")
    fleet.add_argument("--recycle-mb", type=positive_float, default=2000, metavar="MB",
                       help="replace a worker process once its memory is over MB after a model (default 2000; "
                            "not honoured with --ray, where Ray's memory monitor kills a worker when its node runs "
                            "low and that model is retried once)")
    add_ray_arg(fleet, "; folders only: each model is a Ray task on 1 CPU (--jobs does not apply, --recycle-after "
                       "is the tasks' max_calls) and every node must see the input folders and OUTDIR at the same "
                       "paths (a shared file system, checked first)")
    add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    models = args.model
    if len(models) > 1 or os.path.isdir(models[0]):
        return _run_fleet(args)
    if args.ray is not None:
        raise GraphfixError("--ray is for fleets (a folder or several models); convert one model without it", kind="usage",
                            path=models[0])
    return _run_one(args, models[0])


def _run_one(args: argparse.Namespace, path: str) -> int:
    from graphfix.convert.clean import clean

    start = time.perf_counter()
    inputs = model_files(path, args.params, args.weights)
    if args.swap_head and os.path.isfile(args.swap_head):
        inputs.append(args.swap_head)
    if args.output and os.path.isdir(args.output):
        out = output_path(os.path.join(args.output, os.path.basename(default_output(path, ""))), "", inputs)
    else:
        out = output_path(args.output, default_output(path, "" if not path.endswith(".onnx") else "-clean"), inputs)
    source = load_model(args, path)
    from graphfix.commands._data import preprocess_for

    preprocess_for(source, args, [], head="new" if args.swap_head else "keep")
    model = clean(source)
    verify = None
    if args.verify:
        from graphfix.convert.verify import verify as verify_model

        verify = verify_model(path, model, params=args.params, weights=args.weights)
    if args.swap_head:
        from graphfix.surgery import parse_labels_arg, swap_head

        model = swap_head(model, labels=parse_labels_arg(args.swap_head), seed=args.seed)
    exported = write_model(args, model, out)
    seconds = time.perf_counter() - start
    io = model.io_info()
    doc = {
        "ok": True,
        "command": "convert",
        "model": path,
        "output": out,
        "opset": model.opset,
        "ir_version": model.ir.ir_version,
        "nodes": len(model.graph),
        "ops": model.op_histogram(),
        "inputs": io["inputs"],
        "outputs": io["outputs"],
        "verify": verify,
        "export": exported,
        "seconds": round(seconds, 3),
    }
    text = [f"wrote {out} ({len(model.graph)} nodes, opset {model.opset}, {os.path.getsize(out) / 1e6:.2f} MB, {seconds:.2f} s)"]
    text += export_lines(exported)
    if verify is not None:
        text.append(f"verify: {verify.get('summary')}")
    emit(args, doc, text)
    if verify is not None and verify.get("ok") is False:
        raise GraphfixError(f"parity check failed: {verify.get('summary')}", kind="parity", path=path)
    return 0


def _no_models(args: argparse.Namespace) -> None:
    """Refuse a fleet with nothing to convert (exit 2), saying where models were seen in subfolders."""
    from graphfix.fleet import discover

    folders = [m for m in args.model if os.path.isdir(m)]
    deeper = len(discover(folders, args.output, recursive=True)) if folders and not args.recursive else 0
    hint = (f"{deeper} model{'s are' if deeper != 1 else ' is'} in subfolders: add -r (--recursive)" if deeper else
            "looked for *-symbol.json with its .params, *.prototxt beside a .caffemodel, and *.onnx"
            + ("" if args.recursive else "; add -r (--recursive) to look into subfolders"))
    raise GraphfixError("no models found", kind="usage", path=", ".join(args.model), hint=hint)


def _run_fleet(args: argparse.Namespace) -> int:
    from graphfix.fleet import discover, job_dicts, run_fleet, summary_table
    from graphfix.output import atomic_write

    if not args.output:
        raise GraphfixError("converting several models needs -o OUTDIR", kind="usage")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise GraphfixError("-o must be a folder when converting several models", kind="usage", path=args.output)
    if args.params or args.weights:
        raise GraphfixError("--params/--weights name one model's files; not usable with folders", kind="usage")
    start = time.perf_counter()
    jobs = discover(args.model, args.output, recursive=args.recursive)
    if not jobs:
        _no_models(args)
    os.makedirs(args.output, exist_ok=True)
    extra = []
    if args.swap_head:
        labels = args.swap_head
        if args.ray is not None and os.path.isfile(labels):  # a labels file, read on the Ray nodes
            labels = os.path.abspath(labels)
        extra += ["--swap-head", labels, "--seed", str(args.seed)]
    if args.verify:
        extra.append("--verify")
    if args.target:
        extra += ["--target", args.target] + {True: ["--fp16"], "auto": ["--fp16", "auto"]}.get(args.fp16, [])
    for shape in args.input_shape or []:
        extra += ["--input-shape", shape]
    for flag in ("size", "mean", "std", "scale"):
        if getattr(args, flag) is not None:
            extra += [f"--{flag}", str(getattr(args, flag))]
    if args.bgr:
        extra.append("--bgr")
    interrupted = None
    try:
        if args.ray is not None:
            from graphfix.scale.ray_fleet import run_ray_fleet

            run_ray_fleet(jobs, args.model, args.output, address=args.ray, timeout=args.timeout, force=args.force,
                          extra=extra, recycle_after=args.recycle_after)
        else:
            run_fleet(jobs, workers=args.jobs, timeout=args.timeout, force=args.force, extra=extra,
                      recycle_after=args.recycle_after, recycle_mb=args.recycle_mb, tag=os.path.abspath(args.output))
    except KeyboardInterrupt as exc:  # workers are killed; the summary still gets written
        interrupted = exc
    seconds = time.perf_counter() - start
    failed = [j for j in jobs if j.result.get("result") not in ("ok", "skipped")]
    doc = {
        "ok": not failed,
        "command": "convert",
        "output": args.output,
        "models": job_dicts(jobs),
        "counts": {r: sum(1 for j in jobs if j.result.get("result") == r)
                   for r in ("ok", "skipped", "failed", "timeout", "crashed", "interrupted")},
        "seconds": round(seconds, 3),
    }
    summary = os.path.join(args.output, "summary.json")
    with atomic_write(summary) as fh:
        fh.write(json.dumps(doc, indent=2).encode())
    if interrupted is not None:
        signum = getattr(interrupted, "signum", signal.SIGINT)
        unfinished = doc["counts"]["interrupted"]
        raise Interrupted(signum, f"interrupted; {unfinished} unfinished models marked \"interrupted\" in {summary}")
    emit(args, doc, summary_table(jobs) + [f"summary: {os.path.join(args.output, 'summary.json')} ({seconds:.1f} s)"])
    return 1 if failed else 0
