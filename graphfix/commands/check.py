"""Check a model for TensorRT / onnxruntime-CUDA readiness and say why (C1-C17 checklist).

Checks: C1 valid model, C2 IR version, C3 opset, C4 domains, C5 TensorRT op allow-list,
C6 per-op limits, C7 dtypes, C8 shapes (only the batch dynamic), C9 constants folded,
C10 control flow, C11 training-only ops, C12 size/external data, C13 hygiene, C14 fp16 sanity
and activation range, C15 onnxruntime CUDA kernel coverage, C16 (--build) TensorRT-RTX parse
and engine build with a (1, opt, max) batch profile when `tensorrt_rtx` is installed, C17
(tensorrt) the explicit-quantization rules of Q/DQ graphs (zero points 0, scales positive and
finite, INT8, per-channel weights on the output channels, every Q feeding a DQ).
Each finding: id, severity (FAIL/WARN/INFO), node, message, fix.

Exit status: 0 ready (no FAIL), 1 not ready, 2 bad input or usage.

Example:
  graphfix check resnet-trt.onnx --target tensorrt --build --json
"""

from __future__ import annotations

import argparse
import sys

from graphfix.commands._options import add_model_args, add_output_args, emit, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    parser.add_argument("--target", choices=("tensorrt", "cuda"), default="tensorrt",
                        help="deployment target (default: tensorrt)")
    parser.add_argument("--build", action="store_true", help="parse and build an engine with TensorRT-RTX (C16)")
    parser.add_argument("--max-batch", type=positive_int, metavar="N", help="profile max batch for --build (default 32)")
    parser.add_argument("--inputs", metavar="NPZ", help="sample inputs for the fp16 activation probe (C14)")
    add_output_args(parser, output=False)


def run(args: argparse.Namespace) -> int:
    from graphfix.commands._options import load_model
    from graphfix.commands._state import warn_head_state
    from graphfix.commands.export import load_inputs
    from graphfix.convert import detect_format
    from graphfix.convert.check import check
    from graphfix.model import read_metadata

    source = args.model if detect_format(args.model) == "onnx" else load_model(args)
    if isinstance(source, str):
        import os

        from graphfix.errors import GraphfixError

        if not os.path.exists(source):
            raise GraphfixError("no such file", path=source)
    report = check(source, target=args.target, build=args.build, sample_inputs=load_inputs(args.inputs),
                   max_batch=args.max_batch)
    if report.path is None:
        report.path = args.model
    state = warn_head_state(args, args.model, read_metadata(source) if isinstance(source, str) else source.metadata)
    emit(args, {"command": "check", **report.to_dict(), "head_state": state}, report.text())
    if not report.ok:
        fails = ", ".join(sorted({f.id for f in report.failures}, key=lambda s: int(s[1:])))
        print(f"graphfix: error: {args.model}: not ready for {args.target}: {len(report.failures)} FAIL ({fails})",
              file=sys.stderr)
        return 1
    return 0
