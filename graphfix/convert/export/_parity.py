"""Parity of an exported model with its input, in onnxruntime on CPU."""

from __future__ import annotations

__all__ = [
    "compare", "random_feeds", "varied_feeds", "dataset_feeds", "describe_inputs", "describe_preprocess",
    "PARITY_SAMPLES", "FP32_RTOL", "FP16_ATOL", "FP16_OTHER_RTOL",
]

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


def _pixels(rng: np.random.Generator, index: int, shape: list[int]) -> np.ndarray:
    """Image `index` of the parity batch as uint8 pixels 0..255: cycles through uniform noise,
    black-or-white, dark, bright and low-contrast images (the first two reach 0 and 255)."""
    kind = index % 5
    if kind == 0:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == 1:
        return (rng.integers(0, 2, shape) * 255).astype(np.uint8)
    low, high = ((0, 64), (192, 256), (112, 144))[kind - 2]
    return rng.integers(low, high, shape, dtype=np.uint8)


class _Sampler:
    """How one graph input is sampled: raw uint8 images, 0..255 images put through the stored
    `graphfix.preprocess`, seeded varied floats, or zeros (other integer and bool inputs)."""

    def __init__(self, model, value) -> None:
        self.name = value.name
        self.dtype = value.dtype.numpy() if value.dtype is not None else np.float32
        shape = list(value.shape or [])
        self.batch = shape[0] if shape and isinstance(shape[0], int) else None
        self.dims = [d if isinstance(d, int) else 1 for d in shape[1:]]
        self.prep = None
        if self.dtype == np.uint8:
            self.kind = "images"
        elif np.issubdtype(self.dtype, np.floating):
            self.prep = _stored_preprocess(model, value)
            self.kind = "preprocessed" if self.prep is not None else "varied"
            if self.prep is not None:
                self.dims = [self.prep.channels, *self.prep.size]
        else:
            self.kind = "zeros"

    def sample(self, rng: np.random.Generator, index: int) -> np.ndarray:
        """One row (no batch axis)."""
        if self.kind == "images":
            return _pixels(rng, index, self.dims)
        if self.kind == "preprocessed":
            from PIL import Image

            channels, height, width = self.dims
            pixels = _pixels(rng, index, [height, width] if channels == 1 else [height, width, channels])
            return self.prep.apply(Image.fromarray(pixels)).astype(self.dtype)
        if self.kind == "varied":
            return _sample(rng, index, self.dims).astype(self.dtype)
        return np.zeros(self.dims, self.dtype)

    def describe(self) -> str:
        if self.kind == "images":
            return "random uint8 images 0..255"
        if self.kind == "preprocessed":
            return f"random 0..255 images through the stored preprocessing ({describe_preprocess(self.prep)})"
        if self.kind == "varied":
            return "seeded varied inputs (normal x0.5..x4, uniform, Laplace)"
        return "zeros"


def _stored_preprocess(model, value):
    """The model's stored `graphfix.preprocess` as a Preprocess, when `value` is the image input
    it describes (float [N, C, H, W], C 1 or 3, H and W as stored or symbolic); else None."""
    meta = getattr(model, "preprocess", None)
    shape = list(value.shape or [])
    if not meta or meta.get("baked") or len(shape) != 4:
        return None
    from graphfix.data.images import Preprocess
    from graphfix.errors import GraphfixError

    try:
        prep = Preprocess.for_model(model)
    except GraphfixError:
        return None
    c, h, w = shape[1:]
    if prep.channels not in (1, 3) or (isinstance(c, int) and c != prep.channels) or any(isinstance(d, int) and d != s for d, s in zip((h, w), prep.size)):
        return None
    return prep


def describe_preprocess(prep) -> str:
    """`RGB, x = (pixel - 104,117,123) * 1 / 1` style text of a Preprocess."""

    def nums(values) -> str:
        return ",".join(f"{float(v):g}" for v in values)

    pixel = "pixel" if prep.pixel_range == 255.0 else f"pixel*{prep.pixel_range:g}/255"
    return f"{prep.channel_order if prep.channels == 3 else 'grey'}, x = ({pixel} - {nums(prep.mean)}) * {prep.scale:g} / {nums(prep.std)}"


def _samplers(model) -> list[_Sampler]:
    return [_Sampler(model, v) for v in model.ir.graph.inputs if not v.is_initializer()]


def describe_inputs(model, samples: int = PARITY_SAMPLES) -> str:
    """What `varied_feeds(model, samples=samples)` feeds, in words."""
    samplers = [s for s in _samplers(model) if s.kind != "zeros"] or _samplers(model)
    if len(samplers) == 1:
        return f"{samples} {samplers[0].describe()}"
    return f"{samples} rows of " + "; ".join(f"{s.name}: {s.describe()}" for s in samplers)


def random_feeds(model, *, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for `model` (a graphfix Model) in its real range: uniform 0..255 uint8
    images for an image input, such images put through the stored `graphfix.preprocess` for a
    float image input described there, standard normal floats otherwise, zero ints and bools.

    A symbolic dimension 0 becomes `batch`; any other symbolic dimension becomes 1 (the stored
    size for a preprocessed image).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for sampler in _samplers(model):
        rows = sampler.batch or batch
        if sampler.kind == "varied":
            feeds[sampler.name] = rng.standard_normal([rows, *sampler.dims]).astype(sampler.dtype)
        else:
            feeds[sampler.name] = np.stack([sampler.sample(rng, 0) for _ in range(rows)])
    return feeds


def varied_feeds(model, *, samples: int = PARITY_SAMPLES, batch: int | None = None,
                 seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`samples` seeded inputs in the model's real range, in batches of `batch` (all in one
    when None).

    - a uint8 input (a baked image): uint8 images 0..255, uniform noise, black-or-white, dark,
      bright and low-contrast in turn;
    - a float image input that the stored `graphfix.preprocess` describes: such images put
      through that preprocessing (`Preprocess.apply`), so they have the real range;
    - any other float input: varied scale and distribution (normal x0.5..x4, uniform [0, 1] and
      [-3, 3], shifted normal, Laplace);
    - other integer and bool inputs: zeros.

    Symbolic dimensions other than the batch become 1.
    """
    rng = np.random.default_rng(seed)
    samplers = _samplers(model)
    per_batch = batch or samples
    feeds_list = []
    for start in range(0, samples, per_batch):
        rows = range(start, min(start + per_batch, samples)) if batch is None else range(start, start + per_batch)
        feeds_list.append({s.name: np.stack([s.sample(rng, i) for i in rows]) for s in samplers})
    return feeds_list


def dataset_feeds(model, data, preprocess: Any = None, *, rows: int = PARITY_SAMPLES) -> tuple[list[dict], str] | None:
    """The first `rows` model inputs of a data set (CSV or NPZ) as parity feeds, and their
    description; None for a features folder or a model that has not exactly one input.

    Args:
        model: The model the rows are fed to (its only input is named in the feeds).
        data: A `.csv`/`.npz` path or a `graphfix.data.Dataset`.
        preprocess: How CSV images become inputs (default: the model's).
    """
    import os

    from graphfix.data import as_dataset

    inputs = [v for v in model.ir.graph.inputs if not v.is_initializer()]
    if len(inputs) != 1 or (isinstance(data, (str, os.PathLike)) and os.path.isdir(data)):
        return None  # a features folder holds no model inputs
    ds = as_dataset(model, data, preprocess)
    if ds.features is not None or (ds.x is None and ds.paths is None):
        return None
    count = min(rows, len(ds))
    x = next(ds.batches(count, stop=count))
    dtype = inputs[0].dtype.numpy() if inputs[0].dtype is not None else np.float32
    name = os.path.basename(ds.source) if ds.source else "the data set"
    return [{inputs[0].name: np.ascontiguousarray(x, dtype=dtype)}], f"{count} rows of {name}"


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
    candidate_path: str | None = None, reference_path: str | None = None, sample_source: str | None = None,
    reference_cache: dict | None = None,
) -> dict:
    """Run `reference` and `candidate` (graphfix Models) on the same inputs and diff the outputs.

    The inputs are the command's own data when it has some (`sample_inputs`), else `samples`
    seeded inputs in the model's real range (`varied_feeds`).

    Args:
        reference: The model before export.
        candidate: The exported model (same input and output names).
        candidate_path: The candidate as already saved (loaded from the file instead of
            serializing it again: saves a copy of the weights on big models).
        reference_path: The file `reference` was loaded from unchanged, to run it from there.
        fp16: Use the fp16 tolerances.
        sample_inputs: The feeds to judge on: a dict name -> array, or a list of such dicts
            (split into batches of the model's fixed batch size, if it has one).
        samples: How many seeded inputs when no `sample_inputs`: one batch when the batch is
            dynamic, batches of the fixed size otherwise.
        sample_source: What `sample_inputs` are, in words (default "N given input rows").
        reference_cache: Reference outputs per run, filled on first use: a search that
            compares many candidates with one reference runs the reference once.

    Returns:
        `{"ok", "fp16", "inputs", "runs", "outputs": {name: {"max_abs_diff", "max_abs_ref",
        "tolerance", "ok"[, "mismatches"]}}}`, the worst figures over all runs; "inputs" says
        in words what was fed.
    """
    static = _static_batch(candidate) or _static_batch(reference)
    if sample_inputs is not None:
        sets = sample_inputs if isinstance(sample_inputs, (list, tuple)) else [sample_inputs]
        sets = [part for feeds in sets for part in _rebatch(dict(feeds), static)]
        runs = [(f"sample {i}", feeds) for i, feeds in enumerate(sets)]
        rows = sum(_rows(feeds) for feeds in sets)
        described = sample_source or f"{rows} given input rows"
    else:
        runs = [(f"seeded varied inputs {i}", feeds)
                for i, feeds in enumerate(varied_feeds(candidate, samples=samples, batch=static, seed=0))]
        described = describe_inputs(candidate, sum(_rows(feeds) for _, feeds in runs))
    probs = _prob_outputs(reference) | _prob_outputs(candidate)
    names = [n for n in candidate.output_names if n in set(reference.output_names)]
    run_candidate = _file_runner(candidate_path) if candidate_path else candidate.run
    run_reference = _file_runner(reference_path) if reference_path else reference.run
    cache = reference_cache if reference_cache is not None else {}
    figures: dict[str, dict] = {}
    for index, (_label, feeds) in enumerate(runs):
        if index not in cache:
            cache[index] = run_reference(feeds, outputs=names)
        ref = cache[index]
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
    return {"ok": ok, "fp16": fp16, "inputs": described, "runs": [label for label, _ in runs], "outputs": figures}


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return max((int(np.shape(a)[0]) for a in feeds.values() if np.ndim(a)), default=1)


def _rebatch(feeds: dict[str, np.ndarray], static: int | None) -> list[dict[str, np.ndarray]]:
    """`feeds` as batches of the fixed batch size `static` (rows repeated to fill the last one)."""
    rows = _rows(feeds)
    if static is None or rows == static:
        return [feeds]
    out = []
    for start in range(0, rows, static):
        take = [(start + i) % rows for i in range(static)]
        out.append({k: np.asarray(v)[take] for k, v in feeds.items()})
    return out


def _static_batch(model) -> int | None:
    for value in model.ir.graph.inputs:
        if value.is_initializer() or not value.shape or len(value.shape) == 0:
            continue
        dim = value.shape[0]
        return dim if isinstance(dim, int) else None
    return None
