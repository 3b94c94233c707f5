"""A Triton Inference Server model repository for an exported model.

`write_repository(model, "repo", "resnet")` writes, all files or none (a `graphfix.output.OutputSet`
of its own, or the caller's `into=`, committed with the caller's other outputs; `repo` is created
when missing, its parent must exist, as for -o):

    repo/resnet/config.pbtxt     platform onnxruntime_onnx, inputs/outputs with dtypes and dims
    repo/resnet/labels.txt       one label per line, `label_filename` of `probabilities`
    repo/resnet/1/model.onnx     the model

`triton_config` writes the text (protobuf text format of Triton's `ModelConfig`):

- max_batch_size: with a symbolic batch dimension, `max_batch` (else the export's stored
  `max_batch`, else DEFAULT_MAX_BATCH) and `dynamic_batching {}`; dims then leave the batch
  out. A fixed batch gives max_batch_size 0 and full dims (Triton cannot batch it).
- Other symbolic dims are -1. A baked image input (`bake_preprocess`) states its format
  (FORMAT_NHWC / FORMAT_NCHW).
- `--target tensorrt`: the onnxruntime TensorRT execution accelerator (precision_mode INT8 for a
  model with `graphfix.int8` metadata, else FP16 with `fp16`, else FP32; a 1 GiB workspace;
  engine cache on), one GPU instance. `cuda`: one GPU instance. `cpu`: one CPU instance.
  INT8 turns on `trt_int8_enable`; the model is explicitly quantized (QuantizeLinear /
  DequantizeLinear), so no calibration table is named: onnxruntime's TensorRT EP documents that
  a Q/DQ model must not get one (TensorRT refuses to load a table for it).

`ensure_labels_output` adds the bool `labels` output (probabilities >= stored thresholds) to
a model that stores thresholds but was calibrated with --no-labels-output.
"""

from __future__ import annotations

__all__ = ["triton_config", "write_repository", "ensure_labels_output", "check_name", "check_repository",
           "DEFAULT_MAX_BATCH"]

import contextlib
import os
import re
from pathlib import Path

from graphfix.errors import GraphfixError
from graphfix.model import Model
from graphfix.output import OutputSet

#: max_batch_size when the batch is dynamic and no --max-batch is stored or given.
DEFAULT_MAX_BATCH = 8
#: The labels file next to config.pbtxt.
LABELS_FILE = "labels.txt"
#: onnx-ir dtype name -> Triton DataType.
_DTYPES = {
    "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64", "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64", "FLOAT16": "TYPE_FP16", "FLOAT": "TYPE_FP32", "DOUBLE": "TYPE_FP64",
    "BFLOAT16": "TYPE_BF16",
}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def check_name(name: str) -> str:
    """A Triton model name usable as a folder name (letters, digits, `_ . -`)."""
    if not _NAME.match(name or "") or name in (".", ".."):
        raise GraphfixError(f"bad Triton model name {name!r}", kind="usage",
                            hint="letters, digits, '_', '.', '-' (it becomes a folder name)")
    return name


def triton_config(
    model: Model, name: str, *, target: str = "tensorrt", fp16: bool = False, max_batch: int | None = None,
) -> str:
    """The config.pbtxt text for `model` served as `name` (see module docstring)."""
    check_name(name)
    info = model.io_info()
    values = [*info["inputs"], *info["outputs"]]
    batch0 = [v["shape"][0] for v in values if v["shape"]]
    dynamic = bool(batch0) and all(not isinstance(d, int) for d in batch0)
    if max_batch is None:
        max_batch = (model.metadata.get("export") or {}).get("max_batch") or DEFAULT_MAX_BATCH
    lines = [f"name: {_q(name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch if dynamic else 0}"]
    labels = model.labels
    baked = (model.preprocess or {}).get("baked") or {}
    for section, entries in (("input", info["inputs"]), ("output", info["outputs"])):
        lines.append(f"{section} [")
        for i, v in enumerate(entries):
            dtype = _DTYPES.get(v["dtype"] or "")
            if dtype is None:
                raise GraphfixError(f"{section} {v['name']} has type {v['dtype']}, which Triton cannot serve",
                                    kind="not_ready", path=model.path)
            if v["shape"] is None:
                raise GraphfixError(f"{section} {v['name']} has no shape", kind="not_ready", path=model.path,
                                    hint="export the model (`graphfix export`) to infer it")
            dims = [d if isinstance(d, int) else -1 for d in (v["shape"][1:] if dynamic else v["shape"])]
            body = [f"name: {_q(v['name'])}", f"data_type: {dtype}"]
            if section == "input" and v["name"] == baked.get("input") and len(dims) == 3:
                body.append(f"format: FORMAT_{baked['layout']}")
            body.append(f"dims: [ {', '.join(map(str, dims))} ]")
            if section == "output" and v["name"] == "probabilities" and labels:
                body.append(f"label_filename: {_q(LABELS_FILE)}")
            lines.append("  {")
            lines += [f"    {b}" for b in body]
            lines.append("  }" + ("," if i < len(entries) - 1 else ""))
        lines.append("]")
    if dynamic:
        lines.append("dynamic_batching { }")
    kind = "KIND_CPU" if target == "cpu" else "KIND_GPU"
    lines.append(f"instance_group [ {{ kind: {kind}, count: 1 }} ]")
    if target == "tensorrt":
        precision = "INT8" if model.metadata.get("int8") else "FP16" if fp16 else "FP32"
        params = {"precision_mode": precision, "max_workspace_size_bytes": str(1 << 30),
                  "trt_engine_cache_enable": "1", "trt_engine_cache_path": "/tmp/triton_trt_cache"}
        lines += ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator [", "      {",
                  '        name: "tensorrt"']
        lines += [f"        parameters {{ key: {_q(k)} value: {_q(v)} }}" for k, v in params.items()]
        lines += ["      }", "    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


def ensure_labels_output(model: Model) -> Model:
    """`model`, or a copy with a `labels` output when thresholds are stored and it has none."""
    from graphfix.calibrate import stored_decision

    if "labels" in model.output_names or "probabilities" not in model.output_names:
        return model
    rule = stored_decision(model)
    if rule["rule"] != "thresholds":
        return model
    import numpy as np

    from graphfix.train.head_graph import add_labels_output

    work = model.copy()
    add_labels_output(work, np.asarray(rule["thresholds"], np.float32), at_least_one=rule["at_least_one"])
    return work


def check_repository(repo: str | os.PathLike, name: str) -> Path:
    """`repo/name` when it can be written: `repo` a folder, or absent in an existing folder (it is
    then created), `repo/name` absent, the folder writable. Returns `repo/name`.

    Raises:
        GraphfixError: kind "usage", one line naming the path at fault.
    """
    from graphfix.output import check_output

    repo = Path(repo)
    final = repo / check_name(name)
    if os.path.lexists(repo) and not repo.is_dir():
        raise GraphfixError("is not a folder; --triton needs a model repository folder", kind="usage", path=repo)
    if not repo.is_dir():
        parent = os.path.dirname(os.path.abspath(repo))
        if not os.path.isdir(parent):
            raise GraphfixError("cannot create the Triton repository: the folder it goes in does not exist",
                                kind="usage", path=repo, hint="create the parent folders first")
        check_output(repo)  # the parent can be written (a probe folder is made and removed)
    elif os.path.lexists(final):
        raise GraphfixError("already exists", kind="usage", path=final, hint="remove it or pick another --name")
    else:
        check_output(final)  # the repository can be written
    return final


def write_repository(
    model: Model, repo: str | os.PathLike, name: str, *, target: str = "tensorrt", fp16: bool = False,
    max_batch: int | None = None, into: OutputSet | None = None,
) -> list[str]:
    """Write `repo/name/{config.pbtxt, labels.txt, 1/model.onnx}`; returns the files written.

    `repo` is created when it does not exist (its parent must). Every file is staged and renamed
    into place together (`graphfix.output.OutputSet`); on any failure the folders made here are
    removed again, so no partial repository is left.

    Args:
        into: An open OutputSet to stage into: the repository is then committed (or not) with
            the rest of that set (`graphfix export -o X --triton R`); else a set of its own.

    Raises:
        GraphfixError: kind "usage" when `repo` is not a folder, its parent is missing, or
            `repo/name` exists; kind "not_ready" when an input/output cannot be served.
    """
    final = check_repository(repo, name)
    config = triton_config(model, name, target=target, fp16=fp16, max_batch=max_batch)
    labels = model.labels
    if labels and any("\n" in s or "\r" in s for s in labels):
        raise GraphfixError("a label name contains a line break; Triton's labels file is one per line",
                            kind="usage", path=model.path)
    names = ["config.pbtxt", *([LABELS_FILE] if labels else []), "1/model.onnx"]
    with contextlib.nullcontext(into) if into is not None else OutputSet() as staging:
        if not final.parent.is_dir():
            staging.folder(final.parent)  # created, and removed again on failure
        staging.folder(final)
        staging.folder(final / "1")
        staged_model = staging.path(final / "1" / "model.onnx")
        model.save(staged_model)
        with staging.open(final / "config.pbtxt") as fh:
            fh.write(config.encode())
        if labels:
            with staging.open(final / LABELS_FILE) as fh:
                fh.write("".join(f"{s}\n" for s in labels).encode())
        if os.path.exists(staged_model + ".data"):  # external data, committed with the model
            names.append("1/model.onnx.data")
    return [str(final / n) for n in names]


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

