"""Parity of an exported model with its input, in onnxruntime on CPU."""

from __future__ import annotations

__all__ = ["compare", "random_feeds", "varied_feeds", "PARITY_SAMPLES", "FP32_RTOL", "FP16_ATOL", "FP16_OTHER_RTOL"]

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: fp32: max |exported - input| <= FP32_RTOL * max(1, max |input|).
FP32_RTOL = 1e-5
#: fp16: probabilities (Sigmoid/Softmax outputs, or the output named `probabilities`) within
#: FP16_ATOL absolute (the contract). Other float outputs (logits, features) are reported and
#: only caught when broken: within FP16_OTHER_RTOL * max(1, max |input|), and never NaN/inf.
FP16_ATOL = 1e-2
FP16_OTHER_RTOL = 1e-1
_PROB_OPS = ("Sigmoid", "Softmax")
#: Inputs in the seeded parity batch. One input can pass where another fails (a model within
#: the fp16 tolerance on its seed-0 input was off by 0.015 on another), so parity is judged on
#: this many inputs of varied scale and distribution.
PARITY_SAMPLES = 8


def _sample(rng: np.random.Generator, index: int, shape: list[int]) -> np.ndarray:
    """Sample `index` of the parity batch: cycles through scales and distributions."""
    kind = index % 8
    if kind < 4:
        return rng.standard_normal(shape) * (0.5, 1.0, 2.0, 4.0)[kind]
    if kind == 4:
        return rng.uniform(0.0, 1.0, shape)
    if kind == 5:
        return rng.uniform(-3.0, 3.0, shape)
    if kind == 6:
        return rng.standard_normal(shape) + 1.0
    return rng.laplace(0.0, 1.0, shape)


def random_feeds(model, *, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for `model` (a graphfix Model): normal floats, zero ints and bools.

    Symbolic dimension 0 becomes `batch`; any other symbolic dimension becomes 1.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for value in model.ir.graph.inputs:
        if value.is_initializer():
            continue
        shape = []
        for axis, dim in enumerate(value.shape or []):
            shape.append(dim if isinstance(dim, int) else (batch if axis == 0 else 1))
        dtype = value.dtype.numpy() if value.dtype is not None else np.float32
        if np.issubdtype(dtype, np.floating):
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[value.name] = np.zeros(shape, dtype=dtype)
    return feeds


def varied_feeds(model, *, samples: int = PARITY_SAMPLES, batch: int | None = None,
                 seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`samples` seeded inputs of varied scale and distribution (normal x0.5..x4, uniform [0, 1]
    and [-3, 3], shifted normal, Laplace), in batches of `batch` (all in one when None).

    Symbolic dimensions other than the batch become 1; integer and bool inputs are zeros.
    """
    rng = np.random.default_rng(seed)
    per_batch = batch or samples
    feeds_list = []
    for start in range(0, samples, per_batch):
        feeds: dict[str, np.ndarray] = {}
        for value in model.ir.graph.inputs:
            if value.is_initializer():
                continue
            dims = [d if isinstance(d, int) else 1 for d in list(value.shape or [])[1:]]
            dtype = value.dtype.numpy() if value.dtype is not None else np.float32
            rows = range(start, min(start + per_batch, samples)) if batch is None else range(start, start + per_batch)
            if np.issubdtype(dtype, np.floating):
                feeds[value.name] = np.stack([_sample(rng, i, dims) for i in rows]).astype(dtype)
            else:
                feeds[value.name] = np.zeros([len(rows), *dims], dtype)
        feeds_list.append(feeds)
    return feeds_list


def _prob_outputs(model) -> set[str]:
    out = set()
    for value in model.ir.graph.outputs:
        producer = value.producer()
        # Look through the Cast an fp16 export puts before each output.
        while producer is not None and producer.op_type == "Cast" and producer.inputs[0] is not None:
            producer = producer.inputs[0].producer()
        if value.name == "probabilities" or (producer is not None and producer.op_type in _PROB_OPS):
            out.add(value.name)
    return out


def _file_runner(path: str):
    """A `run(feeds, outputs)` over an onnxruntime CPU session of a saved model file."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def run(feeds, outputs=None):
        names = outputs or [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))

    return run


def compare(
    reference, candidate, *, fp16: bool = False, sample_inputs: Any = None, samples: int = PARITY_SAMPLES,
    candidate_path: str | None = None, reference_path: str | None = None,
) -> dict:
    """Run `reference` and `candidate` (graphfix Models) on the same inputs and diff the outputs.

    Args:
        reference: The model before export.
        candidate: The exported model (same input and output names).
        candidate_path: The candidate as already saved (loaded from the file instead of
            serializing it again: saves a copy of the weights on big models).
        reference_path: The file `reference` was loaded from unchanged, to run it from there.
        fp16: Use the fp16 tolerances.
        sample_inputs: Extra feeds: a dict name -> array, or a list of such dicts.
        samples: How many seeded varied inputs (`varied_feeds`): one batch when the batch is
            dynamic, batches of the fixed size otherwise.

    Returns:
        `{"ok", "fp16", "runs", "outputs": {name: {"max_abs_diff", "max_abs_ref", "tolerance",
        "ok"[, "mismatches"]}}}`, the worst figures over all runs.
    """
    static = _static_batch(candidate) or _static_batch(reference)
    runs: list[tuple[str, dict[str, np.ndarray]]] = [
        (f"seeded varied inputs {i}", feeds)
        for i, feeds in enumerate(varied_feeds(candidate, samples=samples, batch=static, seed=0))
    ]
    if sample_inputs is not None:
        sets = sample_inputs if isinstance(sample_inputs, (list, tuple)) else [sample_inputs]
        for i, feeds in enumerate(sets):
            runs.append((f"sample {i}", dict(feeds)))
    probs = _prob_outputs(reference) | _prob_outputs(candidate)
    names = [n for n in candidate.output_names if n in set(reference.output_names)]
    run_candidate = _file_runner(candidate_path) if candidate_path else candidate.run
    run_reference = _file_runner(reference_path) if reference_path else reference.run
    figures: dict[str, dict] = {}
    for _label, feeds in runs:
        ref = run_reference(feeds, outputs=names)
        got = run_candidate(feeds, outputs=names)
        for name in names:
            a, b = np.asarray(ref[name]), np.asarray(got[name])
            entry = figures.setdefault(name, {"max_abs_diff": 0.0, "max_abs_ref": 0.0, "tolerance": 0.0, "ok": True})
            if a.shape != b.shape:
                entry.update(ok=False, error=f"shape {list(b.shape)} != {list(a.shape)}")
                continue
            if not np.issubdtype(a.dtype, np.floating):
                mism = int(np.count_nonzero(a != b))
                entry["mismatches"] = entry.get("mismatches", 0) + mism
                entry["max_abs_diff"] = max(entry["max_abs_diff"], float(mism > 0))
                continue  # labels follow the probabilities, which are checked
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            ref_max = float(np.max(np.abs(a64))) if a64.size else 0.0
            bad = np.isnan(b64) & ~np.isnan(a64)
            diff = float(np.nanmax(np.abs(a64 - b64))) if a64.size else 0.0
            if fp16:
                tol = FP16_ATOL if name in probs else FP16_OTHER_RTOL * max(1.0, ref_max)
            else:
                tol = FP32_RTOL * max(1.0, ref_max)
            entry["max_abs_diff"] = max(entry["max_abs_diff"], diff)
            entry["max_abs_ref"] = max(entry["max_abs_ref"], ref_max)
            entry["tolerance"] = max(entry["tolerance"], tol)
            if diff > tol or bool(bad.any()) or not np.isfinite(diff):
                entry["ok"] = False
    ok = all(e["ok"] for e in figures.values())
    return {"ok": ok, "fp16": fp16, "runs": [label for label, _ in runs], "outputs": figures}


def _static_batch(model) -> int | None:
    for value in model.ir.graph.inputs:
        if value.is_initializer() or not value.shape or len(value.shape) == 0:
            continue
        dim = value.shape[0]
        return dim if isinstance(dim, int) else None
    return None
