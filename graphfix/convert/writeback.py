"""Write a multi-label model back in its source format (MXNet symbol + params, Caffe
prototxt + caffemodel), the source graph kept as it was except the head.

    import graphfix as gf
    m = gf.swap_head(gf.load("resnet-18-symbol.json"), labels=20)
    gf.write_back(m, "out/resnet-18-ml", to="mxnet")   # -symbol.json, -0000.params, ...

The writers work from the original source files, found by the names and sha256 recorded in
`graphfix.source` (beside the model's own file, or in `sources=`) and refused when gone or
changed. The ONNX head `Gemm(transB=1)` with `graphfix_head.weight` [L, F] and `.bias` [L] (+
GlobalAveragePool when the features are a spatial map) + Sigmoid becomes FullyConnected /
InnerProduct with exactly those weights (+ global average Pooling) + sigmoid. Before anything
is renamed into place, the written deploy files are re-read by graphfix and run beside the
model in onnxruntime; a difference over 1e-5 in the probabilities, or in any other output the
source keeps (a detector's box regression), refuses the write. Those other outputs stay outputs
of the written files; the training net keeps them without a gradient (the writers say how).

Backbone weights that differ from the source (`train-head --train-from` fine-tuned them) are
found by converting the source files again and comparing every initializer the written graph
keeps (`tuned_weights`). Each changed one is written into the param or blob it was made from:
the writer finds that array among the params/blobs of the layer that owns the initializer and
inverts the import's transform (identity, dtype cast, reshape, 2-D transpose), checked bit for
bit against the conversion; a few layer-level cases are written by the format writers (MXNet
BatchNorm `fix_gamma`, Caffe BatchNorm statistics and its scale/shift). A changed initializer
that no param or blob holds (a constant the import derived from attributes) is refused with one
line naming it; params and blobs that did not change are copied byte for byte.
"""

from __future__ import annotations

__all__ = [
    "write_back", "HeadSpec", "WritePlan", "TunedWeight", "Tuning", "head_spec", "tuned_weights", "check_tunable",
    "find_sources", "output_paths", "source_array", "to_source", "refuse_tuned", "WRITEBACK_FORMATS",
]

import contextlib
import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from graphfix.errors import GraphfixError
from graphfix.model import Model, sha256_file
from graphfix.output import OutputSet, check_output

#: Formats a model can be written back to (besides plain ONNX).
WRITEBACK_FORMATS = ("mxnet", "caffe")
#: Name of the new classifier layer/node in the written files.
HEAD_NAME = "graphfix_head"
#: Largest max abs difference of the probabilities accepted by the parity check.
TOLERANCE = 1e-5
_SOURCE_EXTS = {"mxnet": (".json", ".params"), "caffe": (".prototxt", ".caffemodel")}


@dataclass
class HeadSpec:
    """The trained multi-label head of a swapped model, as the writers need it.

    Attributes:
        weight: [L, F] float32, the Gemm weight (transB=1 layout).
        bias: [L] float32.
        pooled: Whether the head averages a spatial feature map first (GlobalAveragePool).
        features: Name of the ONNX tensor the head reads (before pooling).
        replaced: Source node/layer names the swap removed (the old classifier first among them).
        old_kind: How the old classifier looked: "gemm", "matmul_add", "conv" or "features".
        labels: The L label names.
        thresholds: Per-label thresholds, if calibrated.
    """

    weight: np.ndarray
    bias: np.ndarray
    pooled: bool
    features: str
    replaced: list[str]
    old_kind: str
    labels: list[str]
    thresholds: list[float] | None


@dataclass
class TunedWeight:
    """A backbone initializer whose value differs from the source's conversion.

    Attributes:
        name: The initializer's name (the same in the model and in the source's conversion).
        value: The model's value (float32).
        before: The value the source's conversion gives it.
    """

    name: str
    value: np.ndarray
    before: np.ndarray


@dataclass
class Tuning:
    """The changed backbone weights of a model and the source's own conversion (`reference`:
    the writers read its graph to see which nodes read an initializer)."""

    changed: dict[str, TunedWeight]
    reference: Model | None = None

    def value(self, name: str) -> np.ndarray:
        """The model's value of initializer `name` (the conversion's where it did not change)."""
        if name in self.changed:
            return self.changed[name].value
        return self.reference.ir.graph.initializers[name].const_value.numpy()


@dataclass
class WritePlan:
    """What a format writer prepared: one callable per file (each writes to the path given) and
    the names users need (`io`: data inputs, label input, probabilities output)."""

    write_deploy: Callable[[str], None]
    write_weights: Callable[[str], None]
    write_train: Callable[[str], None]
    io: dict[str, Any]


def head_spec(model: Model) -> HeadSpec:
    """Read the graphfix head of `model`; refuse heads the source formats cannot express."""
    from graphfix.irutil import const_array
    from graphfix.surgery.swap import head_gemm

    gemm = head_gemm(model)
    path = model.path
    attrs = {k: a.value for k, a in gemm.attributes.items()}
    if attrs.get("transB", 0) != 1 or attrs.get("transA", 0) != 0 or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        raise GraphfixError(f"head Gemm has attributes {attrs}; only transB=1 is written back", kind="usage", path=path)
    weight = np.asarray(const_array(gemm.inputs[1]), dtype=np.float32)
    bias = np.asarray(const_array(gemm.inputs[2]), dtype=np.float32).reshape(-1)
    if weight.ndim != 2 or bias.shape != (weight.shape[0],):
        raise GraphfixError(f"head weight {weight.shape} / bias {bias.shape} are not [L, F] / [L]", kind="usage", path=path)
    users = [u.node for u in gemm.outputs[0].uses()]
    sig = [n for n in users if n.op_type == "Sigmoid" and n.outputs[0].name == "probabilities"]
    if not sig:
        kinds = ", ".join(sorted({n.op_type for n in users})) or "nothing"
        raise GraphfixError(
            f"probabilities are not Sigmoid(logits) (logits feed {kinds}); only sigmoid heads are written back",
            kind="usage", path=path, hint="softmax-trained heads (train-head --loss softmax) stay ONNX",
        )
    x = gemm.inputs[0]
    pooled = False
    producer = x.producer()
    if producer is not None and producer.op_type == "Flatten" and producer.name == f"{HEAD_NAME}.flatten":
        pool = producer.inputs[0].producer()
        if pool is None or pool.op_type != "GlobalAveragePool":
            raise GraphfixError("head Flatten is not fed by GlobalAveragePool", kind="usage", path=path)
        x = pool.inputs[0]
        pooled = True
    meta = model.metadata
    head = meta.get("head") or {}
    labels = list(meta.get("labels") or [f"label_{i:02d}" for i in range(weight.shape[0])])
    return HeadSpec(
        weight=weight, bias=bias, pooled=pooled, features=x.name, replaced=list(head.get("replaced") or []),
        old_kind=str(head.get("old_kind") or "features"), labels=labels, thresholds=meta.get("thresholds"),
    )


def find_sources(model: Model, to: str, sources: Sequence[str | os.PathLike] | str | os.PathLike | None = None) -> list[str]:
    """The source files recorded in `graphfix.source`, checked by sha256.

    Args:
        model: A model converted from `to`'s format (directly or through later stages).
        to: "mxnet" or "caffe".
        sources: Files, or folders to look in, for the recorded names (default: the folder of
            the model's own file).

    Returns:
        [symbol, params] or [prototxt, caffemodel].
    """
    meta = model.metadata.get("source") or {}
    fmt = meta.get("format")
    if fmt != to:
        came = f"came from {fmt}" if fmt else "records no source (graphfix.source)"
        raise GraphfixError(f"--to {to} needs a model converted from {to}; this one {came}", kind="usage", path=model.path)
    recorded: dict[str, str] = dict(meta.get("files") or {})
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    places = [os.fspath(s) for s in sources] if sources else [os.path.dirname(os.path.abspath(model.path or "."))]
    found: dict[str, str] = {}
    for name, digest in recorded.items():
        candidates = [p for p in places if os.path.basename(p) == name and os.path.isfile(p)]
        candidates += [os.path.join(p, name) for p in places if os.path.isdir(p) and os.path.isfile(os.path.join(p, name))]
        if not candidates:
            raise GraphfixError(
                f"source file {name} is gone (looked in {', '.join(places)})", kind="usage", path=model.path,
                hint="pass --source FILE|DIR",
            )
        if sha256_file(candidates[0]) != digest:
            raise GraphfixError("source file has changed since conversion (sha256 differs from graphfix.source)", kind="usage", path=candidates[0])
        found[name] = candidates[0]
    graph_ext, weights_ext = _SOURCE_EXTS[to]
    graph = [p for n, p in found.items() if n.lower().endswith(graph_ext) or (to == "caffe" and n.lower().endswith(".pbtxt"))]
    weights = [p for n, p in found.items() if n.lower().endswith(weights_ext)]
    if len(graph) != 1 or len(weights) != 1:
        raise GraphfixError(
            f"graphfix.source lists {sorted(recorded)}; write-back needs one {graph_ext} and one {weights_ext} file",
            kind="usage", path=model.path,
        )
    return [graph[0], weights[0]]


def output_paths(prefix: str, to: str) -> dict[str, str]:
    """The files of a write-back set, by role."""
    if to == "mxnet":
        files = {"deploy": f"{prefix}-symbol.json", "weights": f"{prefix}-0000.params", "train": f"{prefix}-train-symbol.json"}
    elif to == "caffe":
        files = {"deploy": f"{prefix}-deploy.prototxt", "weights": f"{prefix}.caffemodel", "train": f"{prefix}-train.prototxt"}
    else:
        raise GraphfixError(f"--to {to!r}: expected one of onnx, {', '.join(WRITEBACK_FORMATS)}", kind="usage")
    files["sidecar"] = f"{prefix}-graphfix.json"
    return files


def write_back(
    model: Model,
    prefix: str | os.PathLike,
    to: str,
    *,
    sources: Sequence[str | os.PathLike] | str | os.PathLike | None = None,
    into: OutputSet | None = None,
) -> dict[str, Any]:
    """Write `model` (a swapped, maybe trained and calibrated model) in its source format.

    Args:
        model: The multi-label model; its source must be `to`'s format.
        prefix: Output prefix; files are `PREFIX-symbol.json`, `PREFIX-0000.params`,
            `PREFIX-train-symbol.json` (MXNet) or `PREFIX-deploy.prototxt`, `PREFIX.caffemodel`,
            `PREFIX-train.prototxt` (Caffe), plus `PREFIX-graphfix.json` (labels, thresholds).
        to: "mxnet" or "caffe".
        sources: Where the source files are (see `find_sources`).
        into: An open `graphfix.output.OutputSet` to stage into: the files are then committed
            (or not) with the caller's other outputs (a calibrate --report); else a set of its own.

    Returns:
        A summary: files written, parity (max abs diff of the probabilities, or why not run).

    Raises:
        GraphfixError: the head or source cannot be written back exactly (kind usage, nothing
            written), or the written files do not match the model (kind parity, nothing written).
    """
    prefix = os.fspath(prefix)
    files = output_paths(prefix, to)
    folder = os.path.dirname(os.path.abspath(prefix))
    if not os.path.isdir(folder):
        raise GraphfixError("output folder does not exist", kind="usage", path=prefix)
    graph_src, weights_src = find_sources(model, to, sources)
    if any(os.path.abspath(p) in {os.path.abspath(graph_src), os.path.abspath(weights_src)} for p in files.values()):
        raise GraphfixError("output would overwrite a source file", kind="usage", path=prefix)
    spec = head_spec(model)
    tuning = tuned_weights(model, spec, to, graph_src, weights_src)
    if to == "mxnet":
        from graphfix.convert.mxnet.writer import build_mxnet

        plan = build_mxnet(graph_src, weights_src, spec, tuning)
    else:
        from graphfix.convert.caffe.writer import build_caffe

        plan = build_caffe(graph_src, weights_src, spec, tuning)
    sidecar = {
        "format": to,
        "labels": spec.labels,
        "thresholds": spec.thresholds,
        "preprocess": model.metadata.get("preprocess"),
        "source": model.metadata.get("source"),
        "files": {role: os.path.basename(p) for role, p in files.items() if role != "sidecar"},
        "io": plan.io,
        "graphfix_version": model.metadata.get("version"),
    }
    sidecar_bytes = (json.dumps(sidecar, indent=1, sort_keys=True) + "\n").encode()
    parity: dict[str, Any] = {}

    def check(temps: dict[str, str]) -> None:
        parity.update(_parity(model, to, temps[files["deploy"]], temps[files["weights"]], plan.io["probabilities"]))

    writers = {
        files["deploy"]: plan.write_deploy,
        files["weights"]: plan.write_weights,
        files["train"]: plan.write_train,
        files["sidecar"]: lambda tmp: _write_bytes(tmp, sidecar_bytes),
    }
    inputs = [graph_src, weights_src]
    with contextlib.nullcontext(into) if into is not None else OutputSet(inputs=inputs) as out:  # all or none
        temps = {path: out.path(check_output(path, inputs)) for path in writers}
        for path, write in writers.items():
            write(temps[path])
        check(temps)
    return {"format": to, "files": files, "sources": [graph_src, weights_src], "parity": parity, "io": plan.io,
            "tuned": sorted(tuning.changed)}


#: What a source format calls a stored weight array.
_PARAM = {"mxnet": "param", "caffe": "blob"}
#: Model outputs that belong to the graphfix head (every other output is the source's own).
_HEAD_OUTPUTS = ("probabilities", "logits", "labels", "label_count")


def _backbone_initializers(model: Model, spec: HeadSpec) -> list[Any]:
    """The initializers the written graph keeps: those the head's features, and every output the
    source keeps, are computed from."""
    graph = model.ir.graph
    produced = {o.name: o for n in graph for o in n.outputs}
    starts = [produced[spec.features]] if spec.features in produced else []
    starts += [v for v in graph.outputs if v.name not in _HEAD_OUTPUTS]
    seen: set[int] = set()
    found: dict[str, Any] = {}
    stack = list(starts)
    while stack:
        node = stack.pop().producer()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        for v in node.inputs:
            if v is None:
                continue
            if v.const_value is not None and v.name in graph.initializers:
                found[v.name] = v
            else:
                stack.append(v)
    return [found[k] for k in sorted(found)]


def tuned_weights(model: Model, spec: HeadSpec, to: str, graph_src: str, weights_src: str) -> Tuning:
    """The backbone initializers of `model` that differ from a fresh conversion of the source files.

    Raises:
        GraphfixError: an initializer the conversion does not make (an untied `<name>.finetuned`
            copy of a weight the layers before the cut share, or one added by hand), or one whose
            dtype or shape differs (kind usage; nothing is written).
    """
    inits = _backbone_initializers(model, spec)
    if not inits:
        return Tuning({})
    reference = _reference(model, to, graph_src, weights_src)
    known = reference.ir.graph.initializers
    changed: dict[str, TunedWeight] = {}
    for value in inits:
        name = value.name
        ref = known.get(name)
        base = name[: name.rindex(".finetuned")] if ".finetuned" in name else None
        if (ref is None or ref.const_value is None) and base in known:
            if value.const_value.numpy().tobytes() == known[base].const_value.numpy().tobytes():
                continue  # an untied copy that kept its value: the shared param as it is
            raise _untied(base, to, model.path)
        if ref is None or ref.const_value is None:
            raise _unknown(name, to, model.path)
        new, old = value.const_value.numpy(), ref.const_value.numpy()
        if new.dtype != old.dtype or new.shape != old.shape:
            raise GraphfixError(
                f"initializer {name!r} is {new.dtype} {list(new.shape)}; the {to} source gives {old.dtype} "
                f"{list(old.shape)}: it cannot be written back", kind="usage", path=model.path,
            )
        if new.tobytes() != old.tobytes():
            changed[name] = TunedWeight(name, np.asarray(new), np.asarray(old))
    return Tuning(changed, reference)


def check_tunable(model: Model, to: str, sources: Any, trained: list[str], shared: list[str]) -> None:
    """Before fine-tuning: refuse what `write_back` would refuse once `trained` (the initializers
    `--train-from` trains) have changed; `shared` are those of them layers before the cut also
    read (fine-tuning unties them as `<name>.finetuned`)."""
    graph_src, weights_src = find_sources(model, to, sources)
    if shared:
        raise _untied(sorted(shared)[0], to, model.path)
    if not trained:
        return
    reference = _reference(model, to, graph_src, weights_src)
    changed = {}
    for name in trained:
        ref = reference.ir.graph.initializers.get(name)
        if ref is None or ref.const_value is None:
            raise _unknown(name, to, model.path)
        before = np.asarray(ref.const_value.numpy())
        changed[name] = TunedWeight(name, (before + np.float32(0.5)).astype(before.dtype), before)
    tuning = Tuning(changed, reference)
    if to == "mxnet":
        from graphfix.convert.mxnet.writer import check_tuned
    else:
        from graphfix.convert.caffe.writer import check_tuned
    check_tuned(graph_src, weights_src, tuning)


def _reference(model: Model, to: str, graph_src: str, weights_src: str) -> Model:
    """The source files converted again (at the model's input size where it is fixed)."""
    from graphfix.convert import load

    shapes = {}
    for info in model.io_info()["inputs"]:
        dims = info["shape"][1:]
        if dims and all(isinstance(d, int) and d > 0 for d in dims):
            shapes[info["name"]] = (1, *dims)
    kw = {"params": weights_src} if to == "mxnet" else {"weights": weights_src}
    try:
        return load(graph_src, format=to, input_shape=shapes or None, **kw)
    except GraphfixError as exc:
        raise GraphfixError(f"the source files do not convert again: {exc.message}", kind="usage", path=graph_src) from exc


def _untied(base: str, to: str, path: str | None) -> GraphfixError:
    return GraphfixError(
        f"initializer '{base}.finetuned': fine-tuning unties {base!r}, which layers before the cut also read; "
        f"the {to} source holds one {_PARAM[to]} for both, so the fine-tuned copy cannot be written back",
        kind="usage", path=path,
        hint="fine-tune from a cut before every reader of it (graphfix inspect MODEL --train-from), or write ONNX",
    )


def _unknown(name: str, to: str, path: str | None) -> GraphfixError:
    return GraphfixError(f"initializer {name!r} is not in the conversion of the {to} source; it cannot be "
                         "written back", kind="usage", path=path)


def source_array(before: np.ndarray, candidates: dict[Any, np.ndarray]) -> tuple[Any, str] | None:
    """Which candidate source array `before` (an initializer as converted) was made from, and how:
    (key, "reshape" | "transpose"), checked bit for bit (after the cast to float32); None when no
    candidate, or more than one, fits (an ambiguous source is not guessed)."""
    found = []
    for key, arr in candidates.items():
        if arr.size != before.size:
            continue
        src = np.asarray(arr).astype(np.float32)
        if np.array_equal(src.reshape(before.shape), before):
            found.append((key, "reshape"))
        elif src.ndim == 2 and before.shape == src.T.shape and np.array_equal(src.T, before):
            found.append((key, "transpose"))
    return found[0] if len(found) == 1 else None


def to_source(new: np.ndarray, like: np.ndarray, how: str) -> np.ndarray | None:
    """`new` (an initializer's value) as the source array `like` (shape, dtype) by inverting `how`;
    None when the source dtype cannot hold the values exactly."""
    arr = new.T if how == "transpose" else new.reshape(like.shape)
    out = np.ascontiguousarray(arr).astype(like.dtype)
    return out if np.array_equal(out.astype(np.float32), arr) else None


def refuse_tuned(change: TunedWeight, to: str, why: str, path: str | None = None) -> GraphfixError:
    """The one-line refusal of a fine-tuned initializer the writer cannot map back."""
    return GraphfixError(
        f"fine-tuning changes initializer {change.name!r}, but {why}; the {to} files cannot hold it "
        "exactly (nothing written)", kind="usage", path=path,
        hint="fine-tune from a later cut (graphfix inspect MODEL --train-from), or write ONNX",
    )


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _static_input(model: Model) -> dict[str, tuple[int, ...]] | str:
    """Input name -> shape with batch 2, or why the model cannot be run on a made-up input."""
    shapes = {}
    for info in model.io_info()["inputs"]:
        dims = info["shape"]
        if not dims or not all(isinstance(d, int) for d in dims[1:]):
            return f"input {info['name']} has no fixed shape {dims} (pass --input-shape when converting)"
        if info["dtype"] != "FLOAT":
            return f"input {info['name']} is {info['dtype']}, not float"
        shapes[info["name"]] = (2, *dims[1:])
    return shapes


def _parity(model: Model, to: str, deploy: str, weights: str, output: str) -> dict[str, Any]:
    """Re-read the written deploy files with graphfix and compare probabilities on a seeded input."""
    from graphfix.convert import load

    shapes = _static_input(model)
    if isinstance(shapes, str):
        return {"checked": False, "reason": shapes}
    kw = {"params": weights} if to == "mxnet" else {"weights": weights}
    try:
        written = load(deploy, format=to, input_shape={k: v for k, v in shapes.items()}, **kw)
    except GraphfixError as exc:
        raise GraphfixError(f"written {to} files do not re-read: {exc.message}", kind="failed", path=deploy) from exc
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
    got_all = written.run({k: v for k, v in feeds.items() if k in written.input_names})
    ours = model.run(feeds)
    # the probabilities, and every other output the source keeps (MTCNN's box regression)
    pairs = {"probabilities": output, **{n: n for n in ours if n not in ("probabilities", "logits", "labels")}}
    diffs = {}
    for name, written_name in pairs.items():
        if written_name not in got_all:
            raise GraphfixError(f"written {to} files have no output {written_name} (outputs {sorted(got_all)})",
                                kind="failed", path=deploy)
        want, got = ours[name], got_all[written_name]
        diff = float(np.max(np.abs(want - got))) if want.shape == got.shape else float("inf")
        if not diff <= TOLERANCE:
            raise GraphfixError(
                f"written {to} model differs from the ONNX model: output {written_name} max abs diff {diff:.3g} > "
                f"{TOLERANCE:g} (shapes {want.shape} vs {got.shape}); nothing written", kind="parity", path=deploy,
            )
        diffs[name] = diff
    return {"checked": True, "max_abs_diff": diffs.pop("probabilities"), "other_outputs": diffs,
            "input": {k: list(v) for k, v in shapes.items()}}
