"""Backbone features: the swapped model cut at the head's input, run with onnxruntime, cached.

`feature_model` clones the model, makes the head Gemm's input[0] (the [N, F] feature vector) the
only graph output and drops everything no longer needed (head, sigmoid, thresholds, metadata), so
the backbone runs alone. `extract_features` runs it in batches and caches the result as
`<cache>/features/<model-hash>-<data-hash>.npy`, where the model hash covers the backbone only
(so training a new head keeps the cache valid) and the data hash covers the inputs. The cache
folder is `$GRAPHFIX_CACHE` or `~/.cache/graphfix`.
"""

from __future__ import annotations

__all__ = [
    "HEAD_NAME",
    "find_head_gemm",
    "head_parameters",
    "feature_model",
    "find_value",
    "extract_features",
    "save_features",
    "scores_from_features",
    "activate",
    "probability_op",
    "cache_dir",
]

import contextlib
import logging
import os
import tempfile
from pathlib import Path
import numpy as np
import onnx_ir as ir

from graphfix.data.arrays import allocate, over_budget
from graphfix.data.datasets import Dataset
from graphfix.data.shards import DEFAULT_SHARD_ROWS
from graphfix.errors import GraphfixError
from graphfix.model import Model
from graphfix.progress import bar

logger = logging.getLogger(__name__)

#: Name of the swapped head's Gemm node; its initializers are `<HEAD_NAME>.weight/.bias`.
HEAD_NAME = "graphfix_head"


def find_head_gemm(model: Model) -> ir.Node:
    """The swapped head's Gemm node.

    Raises:
        GraphfixError: (no_head) when the model has not been through swap-head.
    """
    for node in model.ir.graph:
        if node.op_type == "Gemm" and node.name == HEAD_NAME:
            return node
    raise GraphfixError(
        f"no multi-label head (Gemm node {HEAD_NAME!r})", kind="no_head", path=model.path,
        hint="run `graphfix swap-head` first",
    )


def head_parameters(model: Model) -> tuple[np.ndarray, np.ndarray]:
    """The head's weight [L, F] and bias [L] as float32 arrays."""
    gemm = find_head_gemm(model)
    w = gemm.inputs[1]
    b = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    if w is None or w.const_value is None:
        raise GraphfixError("the head's weight is not an initializer", kind="no_head", path=model.path)
    weight = w.const_value.numpy().astype(np.float32)
    if gemm.attributes.get("transB") is None or gemm.attributes["transB"].as_int() != 1:
        weight = weight.T
    bias = b.const_value.numpy().astype(np.float32) if b is not None and b.const_value is not None else np.zeros(len(weight), np.float32)
    return np.ascontiguousarray(weight), bias.reshape(-1)


def find_value(model: Model, name: str) -> ir.Value:
    """The tensor `name` computed by a node of the model's graph."""
    for node in model.ir.graph:
        for out in node.outputs:
            if out.name == name:
                return out
    inputs = [v.name for v in model.ir.graph.inputs]
    why = "it is a graph input" if name in inputs else "no node computes it"
    raise GraphfixError(f"tensor {name!r} not found ({why})", kind="usage", path=model.path,
                        hint="`graphfix inspect MODEL` lists the tensors")


def feature_model(model: Model, tensor: str | None = None) -> Model:
    """A new Model whose only output is the head's features tensor [N, F] (head dropped), or the
    tensor named `tensor` (everything after it dropped)."""
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    new = model.copy()
    gemm = find_head_gemm(new)
    features = gemm.inputs[0] if tensor is None else find_value(new, tensor)
    graph = new.ir.graph
    graph.outputs.clear()
    graph.outputs.append(features)
    if features.dtype is None:
        features.dtype = ir.DataType.FLOAT
    if features.shape is None and tensor is None:
        weight, _ = head_parameters(model)
        features.shape = ir.Shape([ir.SymbolicDim("N"), weight.shape[1]])
    RemoveUnusedNodesPass()(new.ir)
    new.ir.metadata_props.clear()
    new.ir.doc_string = None
    new.path = model.path
    return new


def cache_dir() -> Path:
    """`$GRAPHFIX_CACHE` or `~/.cache/graphfix`."""
    return Path(os.environ.get("GRAPHFIX_CACHE") or Path.home() / ".cache" / "graphfix")


def extract_features(
    model: Model,
    data: Dataset,
    *,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool | None = None,
    workers: int | None = None,
    tensor: str | None = None,
) -> np.ndarray:
    """Run the backbone over `data` and return float32 features [N, F] (flattened per sample).

    Args:
        model: A swapped model (has the `graphfix_head` Gemm).
        data: The inputs.
        batch_size: Samples per onnxruntime call.
        cache: Read/write the on-disk cache.
        progress: Show a tqdm bar (None: only when stderr is a terminal).
        workers: Image decoding threads.
        tensor: Cut the backbone at this tensor instead of the head's input.
    """
    fm = feature_model(model, tensor)
    if data.features is not None:
        return _stored_features(fm, data, tensor)
    key = None
    target = None
    if cache:
        key = f"{fm.sha256()[:24]}-{data.fingerprint()[:24]}"
        target = cache_dir() / "features" / f"{key}.npy"
        if target.is_file():
            try:
                feats = np.load(target, allow_pickle=False, mmap_mode="r")
                if feats.shape[0] == len(data):
                    logger.info("features from cache %s", target)
                    return feats if over_budget(feats.nbytes) else np.array(feats)
            except (OSError, ValueError):
                logger.warning("ignoring unreadable feature cache %s", target)
    return _run_batches(fm, data, batch_size=batch_size, progress=progress, workers=workers, target=target)


def save_features(
    model: Model,
    data: Dataset,
    folder: str | os.PathLike,
    *,
    batch_size: int = 64,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    workers: int | None = None,
    ray: str | None = None,
    force: bool = False,
    progress: bool | None = None,
    inputs: tuple[str | None, ...] = (),
) -> dict:
    """Write the backbone features of `data` to a features folder (see `graphfix.data.shards`).

    Args:
        model: A swapped model; its backbone (`feature_model`) runs, its head does not matter.
        data: The rows (with targets, so `train-head` and `calibrate` can read the folder as data).
        folder: Created if missing; a folder from an interrupted run with the same backbone and
            data is resumed (complete shards are skipped).
        batch_size, shard_rows: Rows per onnxruntime call and per shard file (a multiple of it).
        workers: Image decoding threads per process.
        ray: None runs here; "local", "auto" or an address runs the shards on an actor pool on
            Ray (`graphfix[ray]`), with bitwise-equal features.
        force: Start over in a folder made with another backbone, data set or shard size.
        inputs: Files the folder must not hold (the command's inputs).

    Returns:
        The run's summary (rows, shards written and skipped, retried shards, rows per worker).
    """
    from graphfix.data.shards import FEATURES_FORMAT, ShardPlan, runner_for, write_shards

    fm = feature_model(model)
    plan = ShardPlan(FEATURES_FORMAT, {fm.output_names[0]: "features"}, batch_size=batch_size,
                     shard_rows=shard_rows, workers=workers)
    return write_shards(fm.to_bytes(), data, folder, plan, runner=runner_for(ray), force=force,
                        inputs=inputs, progress=progress)


def _stored_features(fm: Model, data: Dataset, tensor: str | None) -> np.ndarray:
    """The features of a features folder, once its backbone is checked to be `fm`."""
    if tensor is not None:
        raise GraphfixError("a features folder holds the head's input features only; --train-from needs images",
                            kind="usage", path=data.source)
    sha = fm.sha256()
    if sha != data.backbone:
        raise GraphfixError(f"the features were extracted with another backbone (sha256 {str(data.backbone)[:12]}, "
                            f"this model's {sha[:12]})", path=data.source, hint="run `graphfix features` with this model")
    return data.features


def _run_batches(
    fm: Model, data: Dataset, *, batch_size: int, progress: bool | None, workers: int | None, target: Path | None
) -> np.ndarray:
    """Features [N, F] float32, written batch by batch into one array (never concatenated): in
    memory, or, above the memory budget, a memory-mapped file (the cache file when caching, else
    a temporary file) that the streamed head solver reads chunk by chunk. The cache file is
    written under a temporary name and renamed when complete."""
    sess = fm.session()
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise GraphfixError(f"the backbone has {len(inputs)} inputs; one image input expected", path=fm.path)
    name = inputs[0].name
    out_name = sess.get_outputs()[0].name
    feats: np.ndarray | None = None
    tmp: str | None = None
    done = 0
    pbar = bar(total=len(data), desc="features", unit="img", show=progress)
    try:
        for batch in data.batches(batch_size, workers=workers):
            try:
                (out,) = sess.run([out_name], {name: np.ascontiguousarray(batch)})
            except Exception as exc:  # shape mismatch and the like
                raise GraphfixError(
                    f"the backbone rejects inputs of shape {list(batch.shape)}: {str(exc).splitlines()[0]}",
                    path=data.source,
                ) from exc
            out = np.asarray(out, dtype=np.float32).reshape(len(batch), -1)
            if feats is None:
                feats, tmp = allocate((len(data), out.shape[1]), target)
            feats[done : done + len(out)] = out
            done += len(out)
            pbar.update(len(batch))
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    finally:
        pbar.close()
    assert feats is not None
    if target is not None:
        _finish_cache(feats, tmp, target)
    elif isinstance(feats, np.memmap):
        feats.flush()
    return feats


def _finish_cache(feats: np.ndarray, tmp: str | None, path: Path) -> None:
    """Make `path` the cache file of `feats` (rename the memory-mapped file, or save the array)."""
    try:
        if tmp is not None:
            feats.flush()
            os.replace(tmp, path)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".features.", suffix=".npy", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, feats, allow_pickle=False)
        os.replace(name, path)
    except OSError as exc:  # a read-only cache must not stop the job
        logger.warning("cannot write feature cache %s: %s", path, exc)


def scores_from_features(model: Model, feats: np.ndarray, *, kind: str | None = None) -> np.ndarray:
    """The model's `probabilities` computed from features in NumPy (same head, same activation)."""
    w, b = head_parameters(model)
    if feats.shape[1] != w.shape[1]:
        raise GraphfixError(f"features have {feats.shape[1]} columns, the head reads {w.shape[1]}", path=model.path)
    logits = feats @ w.T + b
    return activate(logits, kind or probability_op(model))


def activate(logits: np.ndarray, op: str) -> np.ndarray:
    """Sigmoid or Softmax (over classes) in float32."""
    logits = logits.astype(np.float32)
    if op == "Softmax":
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def probability_op(model: Model) -> str:
    """"Sigmoid" or "Softmax": the op producing the `probabilities` output."""
    for out in model.ir.graph.outputs:
        if out.name == "probabilities" and out.producer() is not None:
            return out.producer().op_type
    return "Sigmoid"
