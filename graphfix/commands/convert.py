"""Convert a model to clean ONNX with unchanged semantics (MXNet, Caffe or ONNX in).

The output has an explicit IR version, its opset kept (importers write 17), unique node names,
topological order, no unused nodes, and no initializers listed as graph inputs.
Example: graphfix convert resnet-18-symbol.json -o resnet-18.onnx
"""

from __future__ import annotations

import argparse
import os
import time

from graphfix.commands._options import add_model_args, add_output_args, check_output_path, default_output, emit, load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser)
    add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    from graphfix.convert.clean import clean

    start = time.perf_counter()
    out = args.output or default_output(args.model, "" if not args.model.endswith(".onnx") else "-clean")
    check_output_path(out, [args.model, args.params, args.weights])
    model = clean(load_model(args))
    model.save(out)
    seconds = time.perf_counter() - start
    doc = {
        "ok": True,
        "command": "convert",
        "model": args.model,
        "output": out,
        "opset": model.opset,
        "ir_version": model.ir.ir_version,
        "nodes": len(model.graph),
        "ops": model.op_histogram(),
        "inputs": model.io_info()["inputs"],
        "outputs": model.io_info()["outputs"],
        "seconds": round(seconds, 3),
    }
    emit(args, doc, f"wrote {out} ({len(model.graph)} nodes, opset {model.opset}, {os.path.getsize(out) / 1e6:.2f} MB, {seconds:.2f} s)")
    return 0
