"""Export GPU- and TensorRT-ready ONNX, checked for parity and readiness.

Runs constant folding, Dropout/Identity removal, BatchNorm folding, Shape-chain reshape
removal, opset conversion (default 17, explicit IR version), a single symbolic batch dimension,
int64 range checks and graph hygiene; --fp16 puts float16 into the graph (fp32 inputs and
outputs, Resize and the multi-label head kept fp32). The result is compared with the input in
onnxruntime (fp32: max|diff| <= 1e-5 x max(1, max|ref|); fp16: probabilities within 1e-2) and
checked with the C1-C16 readiness checklist.

Exit status: 0 exported and ready; 1 parity over tolerance (nothing written) or a readiness
FAIL remains (the file is written); 2 bad input or usage.

Example:
  graphfix export resnet-multilabel.onnx --target tensorrt --fp16 --max-batch 32 -o resnet-trt.onnx
"""

from __future__ import annotations

import argparse
import sys

from graphfix.commands._options import add_model_args, add_output_args, check_output_path, default_output, emit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--target", choices=("cpu", "cuda", "tensorrt"), default="tensorrt",
                        help="deployment target (default: tensorrt)")
    parser.add_argument("--fp16", nargs="?", const=True, default=False, type=_fp16_mode, metavar="auto",
                        help="float16 inside the graph (fp32 I/O, head fp32); `--fp16 auto` also keeps in fp32 "
                        "the fewest nodes that bring parity within tolerance")
    parser.add_argument("--opset", type=int, default=17, help="target opset, 13..20 (default: 17)")
    parser.add_argument("--batch", default="dynamic", metavar="dynamic|N",
                        help="symbolic batch dimension (default) or a fixed batch size")
    parser.add_argument("--max-batch", type=int, metavar="N", help="largest batch (stored; TensorRT profile max)")
    parser.add_argument("--inputs", metavar="NPZ", help="sample inputs (arrays named like the model inputs) "
                        "for the parity run and the fp16 activation probe")
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime parity run")
    add_output_args(parser)


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
    from graphfix.commands._options import load_model
    from graphfix.convert.export import export
    from graphfix.errors import GraphfixError

    out = args.output or default_output(args.model, f"-{args.target}" + ("-fp16" if args.fp16 else ""))
    check_output_path(out, [args.model, getattr(args, "params", None), getattr(args, "weights", None)])
    batch = args.batch if args.batch == "dynamic" else _positive(args.batch, "--batch")
    from graphfix.convert import detect_format

    model = load_model(args)
    # an .onnx input is loaded unchanged (metadata aside): parity may run it from the file
    reference = args.model if detect_format(args.model) == "onnx" else None
    try:
        result = export(
            model, out, target=args.target, fp16=args.fp16, opset=args.opset, batch=batch,
            max_batch=args.max_batch, verify=not args.no_verify, sample_inputs=load_inputs(args.inputs),
            reference_path=reference,
        )
    except GraphfixError as exc:
        partial = getattr(exc, "result", None)
        if exc.kind == "parity" and partial is not None:
            print(f"graphfix: error: {exc.one_line()}", file=sys.stderr)
            doc = {"ok": False, "command": "export", "error": exc.to_dict(), **partial.to_dict()}
            doc["ok"] = False
            emit(args, doc, _parity_lines(partial.parity))
            return exc.exit_code
        raise
    doc = {"command": "export", **result.to_dict()}
    fp16 = {True: ", fp16", "auto": ", fp16 auto", False: ""}[args.fp16]
    lines = [f"wrote {result.path} ({args.target}{fp16}, opset {args.opset}, {result.seconds:.2f} s)"]
    auto = result.notes.get("fp16_auto")
    if auto is not None:
        shown = ", ".join(auto["kept_fp32"][:8]) + (" ..." if auto["kept_fp32_count"] > 8 else "")
        lines.append(f"  fp16 auto: {auto['kept_fp32_count']} of {auto['candidates']} nodes kept fp32 "
                     f"({auto['tries']} tries){': ' + shown if shown else ''}")
    changed = [p["name"] for p in result.passes if p["modified"]]
    lines.append(f"  passes that changed the model: {', '.join(changed) or 'none'}")
    if result.parity is not None:
        lines += _parity_lines(result.parity)
    for key, value in result.notes.items():
        if key != "fp16_auto":
            lines.append(f"  {key}: {value}")
    if result.report is not None:
        lines += ["  " + line for line in result.report.text()]
    emit(args, doc, lines)
    if result.report is not None and not result.report.ok:
        fails = ", ".join(sorted({f.id for f in result.report.failures}))
        print(f"graphfix: error: {out}: not ready for {args.target}: {len(result.report.failures)} FAIL ({fails})",
              file=sys.stderr)
        return 1
    return 0


def _parity_lines(parity: dict) -> list[str]:
    lines = [f"  parity ({'fp16' if parity['fp16'] else 'fp32'}, {', '.join(parity['runs'])}): "
             f"{'ok' if parity['ok'] else 'FAILED'}"]
    for name, fig in parity["outputs"].items():
        lines.append(f"    {name}: max|diff| {fig['max_abs_diff']:.3g} (tolerance {fig['tolerance']:.3g})"
                     f"{'' if fig['ok'] else '  OVER'}")
    return lines


def _fp16_mode(text: str):
    if text != "auto":
        raise argparse.ArgumentTypeError(f"expected nothing or 'auto', not {text!r}")
    return "auto"


def _positive(text: str, flag: str) -> int:
    from graphfix.errors import GraphfixError

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise GraphfixError(f"bad {flag} {text!r}", kind="usage", hint="dynamic or a positive integer")
    return value
