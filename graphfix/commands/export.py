"""Export GPU- and TensorRT-ready ONNX, checked for parity and readiness.

Runs constant folding, Dropout/Identity removal, BatchNorm folding, Shape-chain reshape
removal, opset conversion (default 17, explicit IR version), a single symbolic batch dimension,
int64 range checks and graph hygiene; --fp16 puts float16 into the graph (fp32 inputs and
outputs, Resize and the multi-label head kept fp32); --fp16 auto also keeps in fp32 the fewest
nodes that bring parity within tolerance (a bisection with a progress bar). The result is
compared with the input in onnxruntime (fp32: max|diff| <= 1e-5 x max(1, max|ref|); fp16:
probabilities within 1e-2) on inputs in the model's range: --inputs when given, else 8 seeded
uint8 images for a uint8 image input, 0..255 images put through the stored graphfix.preprocess
for a float image input, seeded varied floats otherwise. Then the C1-C17 readiness checklist.

Serving: --bake-preprocess makes the model take uint8 images in an input named `image`
(--layout nhwc|nchw, RGB; a tensor already called `image` is renamed inside the graph) and do
graphfix's preprocessing (cast, channel order, mean/std/scale; --image-size H,W adds a linear
resize from that fixed size) inside the graph; it is checked against graphfix's own
preprocessing on random images (fp32 within 1e-5) before the export. What is baked is the
model's stored graphfix.preprocess (--size/--mean/--std/--scale/--bgr store other values first,
and are refused once the head is trained on the stored ones). --triton REPO writes a
Triton model repository REPO/NAME/{config.pbtxt, labels.txt, 1/model.onnx} (--name, default
the output's stem; REPO is created when missing, in an existing folder), adding the bool `labels` output when thresholds are stored.

INT8 (--target tensorrt): --int8 --calibration DATA writes a QDQ ONNX (onnxruntime.quantization):
weights per-channel symmetric int8, activations per-tensor symmetric int8 with ranges from
--int8-method (percentile, default; entropy; max) on DATA's rows read through the stored
graphfix.preprocess, Q/DQ on the inputs of Conv/Gemm/MatMul layers only, the head (Gemm, Sigmoid,
decisions) fp32. fp32 and int8 are then measured on --heldout (else on a seeded 20% split of
--calibration, not calibrated on): mAP, micro/macro-F1 at the stored thresholds and the largest
per-class F1 drop; an mAP drop over --int8-budget (default 0.005) is refused with the figures
(exit 1, nothing written). --int8 auto first keeps the most sensitive layers (measured on the
calibration rows) unquantized until the budget holds; they run fp16 under TensorRT when the engine
enables fp16. With --heldout, stored thresholds are re-fitted on the int8 scores (the calibrate
rule) and stored. --int8 takes neither --fp16 nor --bake-preprocess; a features folder cannot
calibrate a backbone.

Exit status: 0 exported and ready; 1 parity over tolerance or int8 accuracy over budget (nothing
written) or a readiness FAIL remains (the file is written); 2 bad input or usage.

Example:
  graphfix export resnet-multilabel.onnx --target tensorrt --fp16 --max-batch 32 -o resnet-trt.onnx
  graphfix export calibrated.onnx --target tensorrt --bake-preprocess --triton models/ --name resnet
  graphfix export calibrated.onnx --target tensorrt --int8 auto --calibration train.csv --heldout heldout.csv
"""

from __future__ import annotations

import argparse
import sys

from graphfix.commands._options import (
    add_fp16_arg, add_model_args, add_output_args, add_preprocess_args, default_output, emit, model_files, output_path,
    positive_int,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--target", choices=("cpu", "cuda", "tensorrt"), default="tensorrt",
                        help="deployment target (default: tensorrt)")
    add_fp16_arg(parser)
    parser.add_argument("--opset", type=int, default=17, help="target opset, 13..20 (default: 17)")
    parser.add_argument("--batch", default="dynamic", metavar="dynamic|N",
                        help="symbolic batch dimension (default) or a fixed batch size")
    parser.add_argument("--max-batch", type=int, metavar="N", help="largest batch (stored; TensorRT profile max)")
    parser.add_argument("--inputs", metavar="NPZ", help="sample inputs (arrays named like the model inputs): "
                        "parity is judged on them instead of seeded inputs; the fp16 activation probe runs them too")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity run")
    serving = parser.add_argument_group("serving")
    serving.add_argument("--bake-preprocess", action="store_true",
                         help="the model takes uint8 RGB images; preprocessing runs in the graph")
    serving.add_argument("--layout", choices=("nhwc", "nchw"), default="nhwc",
                         help="with --bake-preprocess: image layout (default nhwc)")
    serving.add_argument("--image-size", metavar="H,W",
                         help="with --bake-preprocess: images come at H,W and are resized in the graph "
                         "(linear, half-pixel, no antialias)")
    serving.add_argument("--triton", metavar="REPO", help="write a Triton model repository entry REPO/NAME")
    serving.add_argument("--name", help="with --triton: the model name (default: the output's stem)")
    int8 = parser.add_argument_group("int8 (TensorRT explicit quantization)")
    int8.add_argument("--int8", nargs="?", const=True, default=False, type=_auto_mode, metavar="auto",
                      help="quantize to int8 (QDQ) with --calibration, accuracy measured and held to --int8-budget; "
                           "`--int8 auto` keeps the most sensitive layers unquantized until the budget holds")
    int8.add_argument("--calibration", metavar="DATA", help="rows (.csv or .npz) that set the int8 ranges")
    int8.add_argument("--heldout", metavar="DATA", help="rows to measure fp32 vs int8 on and to re-fit the stored "
                      "thresholds on (default: a seeded 20%% of --calibration, not calibrated on)")
    int8.add_argument("--int8-method", choices=("percentile", "entropy", "max"), default=None,
                      help="activation range calibration (default percentile)")
    int8.add_argument("--int8-budget", type=_budget, default=None, metavar="MAP_DROP",
                      help="largest accepted mAP drop fp32 -> int8 (default 0.005)")
    int8.add_argument("--batch-size", type=positive_int, default=32, help="rows per onnxruntime call (default 32)")
    int8.add_argument("--workers", type=positive_int, default=None, help="image decoding threads (default: up to 8)")
    int8.add_argument("--skip-bad", action="store_true",
                      help="leave out CSV rows whose image is missing or unreadable (listed in OUT.skipped.csv)")
    add_preprocess_args(parser)
    add_output_args(parser)


def _auto_mode(text: str) -> str:
    """The value of `--int8 VALUE`: only "auto" (a bare --int8 is True)."""
    if text.lower() != "auto":
        raise argparse.ArgumentTypeError(f"expected nothing or 'auto', not {text!r} (write --int8 after MODEL)")
    return "auto"


def _budget(text: str) -> float:
    """--int8-budget: a number >= 0 (an mAP drop)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, not {text!r}")
    return value


def load_inputs(path: str | None):
    """Arrays of an .npz file as a feeds dict (None when no path)."""
    if not path:
        return None
    import numpy as np

    from graphfix.errors import GraphfixError

    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise GraphfixError(f"cannot read sample inputs ({exc})", path=path) from exc


def run(args: argparse.Namespace) -> int:
    from graphfix.commands._data import preprocess_for
    from graphfix.commands._options import load_model, note_lines, parity_lines, store_preprocess
    from graphfix.commands._state import warn_head_state
    from graphfix.convert.export import export
    from graphfix.errors import GraphfixError
    from graphfix.model import head_state
    from graphfix.output import OutputSet

    _check_int8_args(args)
    inputs = model_files(args.model, args.params, args.weights) + ([args.inputs] if args.inputs else [])
    inputs += [p for p in (args.calibration, args.heldout) if p]
    default_out = default_output(args.model, f"-{args.target}" + ("-fp16" if args.fp16 else "")
                                 + ("-int8" if args.int8 else ""))
    # with --triton and no -o, only the repository is written
    out = None if (args.triton and not args.output) else output_path(args.output, default_out, inputs)
    batch = args.batch if args.batch == "dynamic" else _positive(args.batch, "--batch")
    from graphfix.convert import detect_format

    serving = _check_serving_args(args, default_out)
    model = load_model(args)
    if args.int8:
        from graphfix.convert.export.int8 import require_trained

        require_trained(model, args.model)
    prep = preprocess_for(model, args, [args.calibration, args.heldout])
    int8_data = _int8_data(args, model, prep, out) if args.int8 else None
    # what baking, Triton and the output read
    model = store_preprocess(args, model, out or f"{args.triton}/{serving['name']}")
    state = head_state(model)
    # an .onnx input is loaded unchanged (metadata aside): parity may run it from the file
    reference = args.model if detect_format(args.model) == "onnx" else None
    sample_inputs = load_inputs(args.inputs)
    source = _inputs_source(args.inputs, sample_inputs)
    baked_check = None
    if serving["triton"]:
        from graphfix.convert.triton import ensure_labels_output

        with_labels = ensure_labels_output(model)
        reference = reference if with_labels is model else None
        model = with_labels
    if args.bake_preprocess:
        model, baked_check = _bake(args, model)
        reference = None
    # one set: -o X, the Triton repository and X's skipped-rows list are committed together or not at all
    staged = skipped = triton_files = None
    try:
        with OutputSet(inputs=inputs) as files:
            staged = files.path(out) if out else None
            if int8_data is not None:
                from graphfix.commands._data import progress_for
                from graphfix.convert.export.int8 import DEFAULT_BUDGET, DEFAULT_METHOD, export_int8

                result = export_int8(
                    model, staged, calibration=int8_data[0], heldout=int8_data[1],
                    method=args.int8_method or DEFAULT_METHOD,
                    budget=DEFAULT_BUDGET if args.int8_budget is None else args.int8_budget, auto=args.int8 == "auto",
                    target=args.target, opset=args.opset, batch=batch, max_batch=args.max_batch,
                    batch_size=args.batch_size, progress=progress_for(args), sample_inputs=sample_inputs,
                    sample_source=source, reference_path=reference,
                )
            else:
                result = export(
                    model, staged, target=args.target, fp16=args.fp16, opset=args.opset, batch=batch,
                    max_batch=args.max_batch, verify=not args.no_verify, sample_inputs=sample_inputs,
                    reference_path=reference, sample_source=source,
                )
            _unstage(result, staged, out)
            if serving["triton"] and (result.report is None or result.report.ok):
                from graphfix.convert.triton import write_repository

                triton_files = write_repository(result.model, args.triton, serving["name"], target=args.target,
                                                fp16=bool(args.fp16), max_batch=args.max_batch, into=files)
            if int8_data is not None:
                from graphfix.commands._data import report_skipped

                skipped = report_skipped(args, out, [d for d in int8_data if d is not None], into=files)
    except GraphfixError as exc:  # (one about the staged X names X: OutputSet)
        partial = getattr(exc, "result", None)
        if exc.kind == "parity" and partial is not None:
            print(f"graphfix: error: {exc.one_line()}", file=sys.stderr)
            doc = {"ok": False, "command": "export", "error": exc.to_dict(), **partial.to_dict(), "head_state": state}
            doc["ok"] = False
            emit(args, doc, int8_lines(partial.int8, written=False) if partial.int8 else parity_lines(partial.parity))
            return exc.exit_code
        raise
    doc = {"command": "export", **result.to_dict(), "head_state": state}
    fp16 = {True: ", fp16", "auto": ", fp16 auto", False: ""}[args.fp16]
    fp16 += {True: ", int8", "auto": ", int8 auto", False: ""}[args.int8]
    lines = [f"{f'wrote {result.path}' if result.path else 'exported'} ({args.target}{fp16}, "
             f"opset {args.opset}, {result.seconds:.2f} s)"]
    if args.bake_preprocess:
        info = result.model.preprocess["baked"]
        shape = next(v["shape"] for v in result.model.io_info()["inputs"] if v["name"] == info["input"])
        doc["baked_input"] = {"name": info["input"], "dtype": info["dtype"], "shape": shape, "layout": info["layout"],
                              "channel_order": info["channel_order"]}
        lines.append(f"  baked input: {info['input']} {info['dtype']} [{','.join(map(str, shape))}] "
                     f"{info['layout']} {info['channel_order']}")
    if baked_check is not None:
        doc["baked_preprocess"] = baked_check
        lines += _baked_lines(baked_check)
    if triton_files is not None:
        doc["triton"] = {"repository": args.triton, "name": serving["name"], "files": triton_files}
        lines.append(f"wrote Triton model {serving['name']} in {args.triton}: {', '.join(triton_files)}")
    changed = [p["name"] for p in result.passes if p["modified"]]
    lines.append(f"  passes that changed the model: {', '.join(changed) or 'none'}")
    if result.parity is not None:
        lines += parity_lines(result.parity)
    if result.int8 is not None:
        lines += int8_lines(result.int8)
    lines += note_lines(result.notes)
    if result.report is not None:
        lines += ["  " + line for line in result.report.text()]
    warn_head_state(args, args.model, model.metadata)  # once it worked: an error stays the only line
    if int8_data is not None:
        from graphfix.commands._data import warn_skipped

        warn_skipped(args, skipped)
        doc["skipped_rows"] = skipped
    emit(args, doc, lines)
    if result.report is not None and not result.report.ok:
        fails = ", ".join(sorted({f.id for f in result.report.failures}))
        print(f"graphfix: error: {out}: not ready for {args.target}: {len(result.report.failures)} FAIL ({fails})",
              file=sys.stderr)
        return 1
    return 0


def _unstage(result, staged: str | None, out: str | None) -> None:
    """Name `out` (not its staged path) in the result, its model and its readiness report."""
    if staged is None:
        return
    result.path = out
    result.model.path = out
    if result.report is not None and result.report.path == staged:
        result.report.path = out


def _check_int8_args(args: argparse.Namespace) -> None:
    """Usage errors of the int8 options, before any work."""
    from graphfix.commands._data import check_data_path
    from graphfix.data.shards import is_shard_dir
    from graphfix.errors import GraphfixError

    given = [f for f, v in (("--calibration", args.calibration), ("--heldout", args.heldout),
                            ("--int8-method", args.int8_method), ("--int8-budget", args.int8_budget),
                            ("--skip-bad", args.skip_bad)) if v not in (None, False)]
    if not args.int8:
        if given:
            raise GraphfixError(f"{given[0]} needs --int8", kind="usage")
        return
    if args.target != "tensorrt":
        raise GraphfixError(f"--int8 is for --target tensorrt, not {args.target}", kind="usage",
                            hint="the Q/DQ placement is TensorRT's; onnxruntime runs the file too")
    for flag, other in (("--fp16", args.fp16), ("--bake-preprocess", args.bake_preprocess),
                        ("--no-verify", args.no_verify)):
        if other:
            why = {"--fp16": "layers left unquantized run fp16 when the TensorRT engine enables fp16 (trtexec --fp16)",
                   "--bake-preprocess": "calibration rows are preprocessed float inputs, not uint8 images",
                   "--no-verify": "the int8 accuracy is always measured"}[flag]
            raise GraphfixError(f"--int8 cannot be combined with {flag}", kind="usage", hint=why)
    if not args.calibration:
        raise GraphfixError("--int8 needs --calibration DATA (the rows that set the int8 ranges)", kind="usage")
    for flag, path in (("--calibration", args.calibration), ("--heldout", args.heldout)):
        check_data_path(path, flag)
        if path and is_shard_dir(path):
            from graphfix.convert.export.int8 import features_refused

            raise features_refused(flag, path)


def _int8_data(args: argparse.Namespace, model, prep, out: str | None):
    """(calibration, heldout) data sets, every row and image header checked before any model runs."""
    from graphfix.commands._data import load_data

    return tuple(load_data(args, model, prep, [args.calibration, args.heldout], out))


def int8_lines(info: dict, written: bool = True) -> list[str]:
    """The int8 figures as text: fp32 vs int8 table, layers kept float, thresholds re-fitted."""
    acc = info["accuracy"]
    a, b = acc["fp32"], acc["int8"]
    lines = [f"  int8: {info['method']} ranges on {info['calibration_rows']} calibration rows ({info['quantizer']}); "
             f"weights {info['weights']}, activations {info['activations']}",
             f"  accuracy on {acc['measured_on']}, at {'the stored thresholds' if acc['thresholds'] == 'stored' else 'threshold 0.5 (none stored)'}:",
             f"    {'':<10}{'fp32':>8}{'int8':>9}{'change':>9}"]
    for key, name in (("mAP", "mAP"), ("micro_f1", "micro-F1"), ("macro_f1", "macro-F1")):
        if a[key] is None or b[key] is None:
            lines.append(f"    {name:<10}{'-':>8}{'-':>9}")
        else:
            lines.append(f"    {name:<10}{a[key]:>8.4f}{b[key]:>9.4f}{b[key] - a[key]:>+9.4f}")
    worst = acc["largest_class_f1_drop"]
    if worst["label"] is not None:
        lines.append(f"    largest class F1 drop: {worst['label']} {worst['fp32']:.4f} -> {worst['int8']:.4f} "
                     f"({-worst['drop']:+.4f})")
    drop = acc["mAP_drop"]
    lines.append(f"    mAP drop {drop:.4f} (budget {acc['budget']:g}): {'within' if drop <= acc['budget'] else 'OVER'}"
                 if drop is not None else "    mAP not measurable (no positive labels)")
    auto = info.get("auto")
    if auto is not None:
        kept = info["float_nodes"]
        lines.append(f"  int8 auto: {len(kept)} of {auto['candidates']} layers kept unquantized "
                     f"({auto['tries']} tries): {', '.join(kept) or 'none'}"
                     + (" (they run fp16 under TensorRT when the engine enables fp16, else fp32)" if kept else ""))
    refit = info.get("thresholds_refit")
    if refit is not None:
        lines.append(f"  thresholds re-fitted on the int8 scores ({refit['objective']}, {refit['rows']} held-out rows) "
                     f"and stored: largest change {refit['max_change']:.4f}")
    elif acc["thresholds"] == "stored" and written:
        lines.append("  thresholds kept as fitted on fp32 scores (give --heldout to re-fit them on the int8 scores)")
    return lines


def _check_serving_args(args: argparse.Namespace, default_out: str) -> dict:
    """Usage errors of the serving options, before any work; the Triton model name."""
    from pathlib import Path

    from graphfix.errors import GraphfixError

    if not args.bake_preprocess and (args.image_size or args.layout != "nhwc"):
        raise GraphfixError("--layout and --image-size need --bake-preprocess", kind="usage")
    if args.bake_preprocess and args.inputs:
        raise GraphfixError("--inputs cannot be used with --bake-preprocess (the parity run feeds random images)",
                            kind="usage")
    if args.name and not args.triton:
        raise GraphfixError("--name needs --triton", kind="usage")
    name = None
    if args.triton:
        from graphfix.convert.triton import check_repository

        name = args.name or Path(args.output or default_out).name.removesuffix(".onnx")
        check_repository(args.triton, name)  # REPO is created if missing (its parent must exist)
    return {"triton": bool(args.triton), "name": name}


def _bake(args: argparse.Namespace, model):
    """The baked model and the check against graphfix's own preprocessing (GraphfixError kind
    "parity" when it differs beyond 1e-5). The export's parity run feeds it uint8 images."""
    from graphfix.convert.export.preprocess import bake_preprocess, verify_baked
    from graphfix.errors import GraphfixError

    size = None
    if args.image_size:
        parts = args.image_size.replace("x", ",").split(",")
        if len(parts) != 2:
            raise GraphfixError(f"bad --image-size {args.image_size!r}", kind="usage", hint="H,W")
        size = (_positive(parts[0], "--image-size"), _positive(parts[1], "--image-size"))
    baked = bake_preprocess(model, layout=args.layout, resize_from=size)
    check = None
    if not args.no_verify:
        check = verify_baked(model, baked)
        if check["ok"] is False:
            name, fig = max(((n, f) for n, f in check["outputs"].items() if not f["ok"]),
                            key=lambda kv: kv[1].get("max_abs_diff", 1.0))
            raise GraphfixError(f"baked preprocessing differs from graphfix's: output {name} by "
                                f"{fig.get('max_abs_diff', fig.get('mismatches'))}", kind="parity", path=args.model,
                                hint="nothing was written; report this model to the graphfix developers")
    return baked, check


def _baked_lines(check: dict) -> list[str]:
    verdict = {True: "ok", False: "FAILED", None: "not compared exactly (in-graph resize)"}[check["ok"]]
    count, *size = check["images"]
    lines = [f"  baked preprocessing vs graphfix's ({count} random images {'x'.join(map(str, size))}): {verdict}"]
    for name, fig in check["outputs"].items():
        if "max_abs_diff" in fig:
            lines.append(f"    {name}: max|diff| {fig['max_abs_diff']:.3g} (tolerance {fig['tolerance']:.3g})")
        else:
            lines.append(f"    {name}: {fig['mismatches']} mismatches")
    return lines


def _inputs_source(path: str | None, feeds: dict | None) -> str | None:
    """`--inputs` in words: "2 rows of --inputs x.npz"."""
    if not feeds:
        return None
    import os

    rows = max((len(a) for a in feeds.values() if getattr(a, "ndim", 0)), default=1)
    return f"{rows} rows of --inputs {os.path.basename(path)}"


def _positive(text: str, flag: str) -> int:
    from graphfix.errors import GraphfixError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise GraphfixError(f"bad {flag} {text!r}", kind="usage", hint="dynamic or a positive integer")
    return value
