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


#: Integer (and bool) value domains tried in turn until the reference runs: small positive ints
#: (indices kept within the data's axis), ones, zeros. Zeros alone divide by zero and make
#: empty ranges; a shape-like input may only accept ones.
INT_DOMAINS = ("small", "ones", "zeros")
#: Ops whose input 1 indexes input 0 along `axis` (default 0); GatherND/ScatterND index its
#: leading dims.
_INDEXING = {"Gather": 0, "GatherElements": 0, "Scatter": 0, "ScatterElements": 0, "GatherND": None,
             "ScatterND": None}


class _Sampler:
    """How one graph input is sampled, from its own declared type, shape and value domain: raw
    uint8 images, 0..255 images put through the stored `graphfix.preprocess`, seeded varied
    floats, small positive ints (indices within the indexed axis), random bools.

    Only a symbolic dimension 0 is a batch axis (its rows are the run's rows); a fixed
    dimension 0 is fed as declared, a scalar stays a scalar; other symbolic dimensions are 1
    (the stored size for a preprocessed image).
    """

    def __init__(self, model, value) -> None:
        from graphfix.errors import GraphfixError

        import onnx_ir as ir

        self.name = value.name
        self.containers: list[str] = []  # outermost first: "sequence" (3 tensors) / "optional" (present)
        kind = value.type
        while isinstance(kind, (ir.SequenceType, ir.OptionalType)):
            self.containers.append("sequence" if isinstance(kind, ir.SequenceType) else "optional")
            kind = kind.elem_type
        if kind is not None and not isinstance(kind, ir.TensorType):
            raise GraphfixError(
                f"input {value.name} is a {value.type}: the parity run feeds tensors and sequences of them only",
                kind="failed", hint="export with --no-verify to skip the parity run")
        if value.shape is None:
            what = f"input {value.name}" + (f" ({value.type})" if self.containers else "")
            raise GraphfixError(f"{what} has no declared shape: the parity run cannot feed it",
                                kind="failed", hint="give its shape with --input-shape, or sample inputs with --inputs")
        self.dtype = kind.dtype.numpy() if kind is not None else np.float32
        shape = list(value.shape)
        self.scalar = not shape
        self.batch = None if self.scalar or not isinstance(shape[0], int) else shape[0]
        self.dims = [d if isinstance(d, int) else 1 for d in shape[1:]]
        self.prep = None
        self.high = _index_bound(value)
        if self.dtype == np.uint8 and len(shape) == 4:
            self.kind = "images"
        elif np.issubdtype(self.dtype, np.floating):
            self.prep = _stored_preprocess(model, value)
            self.kind = "preprocessed" if self.prep is not None else "varied"
            if self.prep is not None:
                self.dims = [self.prep.channels, *self.prep.size]
        elif self.dtype == np.bool_:
            self.kind = "bools"
        else:
            self.kind = "ints"

    def array(self, rng: np.random.Generator, start: int, rows: int, domain: str = "small"):
        """The input of one run: `rows` rows (samples start, start+1, ...) for a batch axis,
        the declared dim 0 otherwise, a scalar for a scalar; a list of 3 such tensors for a
        sequence, the value itself for an optional."""

        def build(level: int, offset: int):
            if level == len(self.containers):
                return self._tensor(rng, start + offset, rows, domain)
            if self.containers[level] == "optional":
                return build(level + 1, offset)
            return [build(level + 1, offset + k) for k in range(3)]

        return build(0, 0)

    def _tensor(self, rng: np.random.Generator, start: int, rows: int, domain: str) -> np.ndarray:
        if self.scalar:
            return np.asarray(self.sample(rng, start, domain, []), dtype=self.dtype)
        count = rows if self.batch is None else self.batch
        return np.stack([self.sample(rng, start + i, domain) for i in range(count)]) if count else \
            np.zeros([0, *self.dims], self.dtype)

    def sample(self, rng: np.random.Generator, index: int, domain: str = "small", dims=None) -> np.ndarray:
        """One row (no batch axis)."""
        dims = self.dims if dims is None else dims
        if self.kind == "images":
            return _pixels(rng, index, dims)
        if self.kind == "preprocessed":
            from PIL import Image

            channels, height, width = dims
            pixels = _pixels(rng, index, [height, width] if channels == 1 else [height, width, channels])
            return self.prep.apply(Image.fromarray(pixels)).astype(self.dtype)
        if self.kind == "varied":
            return _sample(rng, index, dims).astype(self.dtype)
        if domain == "zeros":
            return np.zeros(dims, self.dtype)
        if domain == "ones":
            return np.ones(dims, self.dtype)
        if self.kind == "bools":
            return rng.integers(0, 2, dims).astype(np.bool_)
        high = 3 if self.high is None else min(3, self.high)
        return rng.integers(min(1, high), high + 1, dims).astype(self.dtype)

    def describe(self) -> str:
        text = self._describe_tensor()
        return f"sequences of 3 tensors of {text}" if "sequence" in self.containers else text

    def _describe_tensor(self) -> str:
        if self.kind == "images":
            return "random uint8 images 0..255"
        if self.kind == "preprocessed":
            return f"random 0..255 images through the stored preprocessing ({describe_preprocess(self.prep)})"
        if self.kind == "varied":
            return "seeded varied inputs (normal x0.5..x4, uniform, Laplace)"
        if self.kind == "bools":
            return "random bools"
        return "small positive integers"


def _index_bound(value) -> int | None:
    """The largest index `value` may hold where it indexes a known axis (Gather indices)."""
    bound = None
    for use in value.uses():
        node, index = use.node, use.idx
        if node.op_type not in _INDEXING or index != 1 or node.inputs[0] is None or node.inputs[0].shape is None:
            continue
        dims = list(node.inputs[0].shape)
        if _INDEXING[node.op_type] is None:
            sizes = dims
        else:
            axis = node.attributes.get_int("axis", 0)
            sizes = [dims[axis]] if -len(dims) <= axis < len(dims) else []
        for size in sizes:
            if isinstance(size, int):
                bound = size - 1 if bound is None else min(bound, size - 1)
    return None if bound is None else max(bound, 0)


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

    from graphfix.data.images import show_values as nums

    pixel = "pixel" if prep.pixel_range == 255.0 else f"pixel*{prep.pixel_range:g}/255"
    return f"{prep.channel_order if prep.channels == 3 else 'grey'}, x = ({pixel} - {nums(prep.mean)}) * {prep.scale:g} / {nums(prep.std)}"


def _samplers(model) -> list[_Sampler]:
    return [_Sampler(model, v) for v in model.ir.graph.inputs if not v.is_initializer()]


def describe_inputs(model, samples: int = PARITY_SAMPLES) -> str:
    """What `varied_feeds(model, samples=samples)` feeds, in words."""
    samplers = _samplers(model)
    if len(samplers) == 1:
        return f"{samples} {samplers[0].describe()}"
    return f"{samples} rows of " + "; ".join(f"{s.name}: {s.describe()}" for s in samplers)


def random_feeds(model, *, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for `model` (a graphfix Model) in its real range: uniform 0..255 uint8
    images for an image input, such images put through the stored `graphfix.preprocess` for a
    float image input described there, standard normal floats otherwise, small positive ints,
    random bools; each input in its own declared shape.

    A symbolic dimension 0 becomes `batch`; any other symbolic dimension becomes 1 (the stored
    size for a preprocessed image).
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for sampler in _samplers(model):
        if sampler.kind == "varied":
            rows = [] if sampler.scalar else [sampler.batch or batch]
            feeds[sampler.name] = rng.standard_normal([*rows, *sampler.dims]).astype(sampler.dtype)
        else:
            feeds[sampler.name] = sampler.array(rng, 0, batch)
    return feeds


def varied_feeds(model, *, samples: int = PARITY_SAMPLES, batch: int | None = None,
                 seed: int = 0, domain: str = "small") -> list[dict[str, np.ndarray]]:
    """`samples` seeded inputs in the model's real range, in batches of `batch` (all in one
    when None), each input built from its own declared type, shape and value domain:

    - a uint8 image input (a baked image): uint8 images 0..255, uniform noise, black-or-white,
      dark, bright and low-contrast in turn;
    - a float image input that the stored `graphfix.preprocess` describes: such images put
      through that preprocessing (`Preprocess.apply`), so they have the real range;
    - any other float input: varied scale and distribution (normal x0.5..x4, uniform [0, 1] and
      [-3, 3], shifted normal, Laplace);
    - integer inputs: `domain` (`INT_DOMAINS`): small positive ints 1..3 (indices within the
      axis they index), ones or zeros; bool inputs: random, True or False.

    Only a symbolic dimension 0 takes the batch's rows; a fixed one is fed as declared and a
    scalar stays a scalar. Other symbolic dimensions become 1.
    """
    rng = np.random.default_rng(seed)
    samplers = _samplers(model)
    per_batch = batch or samples
    feeds_list = []
    for start in range(0, samples, per_batch):
        rows = min(per_batch, samples - start) if batch is None else per_batch
        feeds_list.append({s.name: s.array(rng, start, rows, domain) for s in samplers})
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
    from graphfix.model import cpu_session

    sess = cpu_session(path, path)

    def run(feeds, outputs=None):
        names = outputs or [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))

    return run


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(exc).__name__


def _run_sessions(reference, candidate, candidate_path, reference_path, domains: list[list[dict]],
                  names: list[str], cache: dict) -> tuple[dict, list[dict]]:
    """The reference (cached per run) and candidate outputs of each run, on the first domain's
    runs the reference accepts. -> (cache, candidate outputs per run).

    Raises `_SessionFailed(which, message)` when onnxruntime refuses a model or its run.
    """
    if "domain" not in cache:
        first = None
        for index, runs in enumerate(domains):
            try:
                run_reference = _file_runner(reference_path) if reference_path else reference.run
                outputs = [run_reference(feeds, outputs=names) for feeds in runs]
            except Exception as exc:
                first = first or _first_line(exc)  # the error on the main domain says most
                if index + 1 < len(domains):
                    continue
                raise _SessionFailed("input", first) from None
            cache.update({"domain": index, **dict(enumerate(outputs))})
            break
    runs = domains[cache["domain"]]
    try:
        run_candidate = _file_runner(candidate_path) if candidate_path else candidate.run
        got = [run_candidate(feeds, outputs=names) for feeds in runs]
    except Exception as exc:
        raise _SessionFailed("exported", _first_line(exc)) from None
    return cache, got


class _SessionFailed(Exception):
    """onnxruntime refused (or crashed on) the `which` model ("input" or "exported")."""

    def __init__(self, which: str, message: str) -> None:
        super().__init__(which, message)
        self.which, self.message = which, message


def _isolated(fn, *args):
    """`fn(*args)` in a forked child process when the platform can fork, so that a native crash
    in onnxruntime (a segfault while creating a session) is an error here, not the end of
    graphfix; the child's stderr (onnxruntime's log lines) is dropped. The child shares the
    parent's memory copy-on-write: nothing is serialized on the way in, the result is pickled
    back. Set GRAPHFIX_PARITY_INPROCESS=1 to run in this process.
    """
    import os
    import pickle
    import signal

    if not hasattr(os, "fork") or os.environ.get("GRAPHFIX_PARITY_INPROCESS"):
        return fn(*args)
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, send the outcome, leave without cleanup handlers
        code = 0
        try:
            os.close(read)
            import faulthandler

            faulthandler.disable()  # a crash here is reported by the parent, in one line
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
            try:
                outcome = ("ok", fn(*args))
            except _SessionFailed as exc:
                outcome = ("failed", (exc.which, exc.message))
            except BaseException:
                import traceback

                outcome = ("bug", traceback.format_exc())
            with os.fdopen(write, "wb") as out:
                pickle.dump(outcome, out, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 70
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not data:
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            name = signal.Signals(number).name if number in set(signal.Signals) else str(number)
            raise _SessionFailed("either", f"onnxruntime crashed ({name})")
        raise _SessionFailed("either", f"the parity process ended with exit status {os.waitstatus_to_exitcode(status)}")
    kind, value = pickle.loads(data)
    if kind == "failed":
        raise _SessionFailed(*value)
    if kind == "bug":
        raise RuntimeError(f"the parity run failed:\n{value}")
    return value


def compare(
    reference, candidate, *, fp16: bool = False, sample_inputs: Any = None, samples: int = PARITY_SAMPLES,
    candidate_path: str | None = None, reference_path: str | None = None, sample_source: str | None = None,
    reference_cache: dict | None = None,
) -> dict:
    """Run `reference` and `candidate` (graphfix Models) on the same inputs and diff the outputs.

    The inputs are the command's own data when it has some (`sample_inputs`), else `samples`
    seeded inputs in the model's real range (`varied_feeds` of the reference: each input in its
    own declared shape; integer inputs in the first of `INT_DOMAINS` the reference accepts).
    The onnxruntime sessions run in a child process (`_isolated`): a model onnxruntime refuses
    or crashes on is a GraphfixError (kind "parity", one line), never a crash of graphfix.

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
    import warnings

    from graphfix.errors import GraphfixError

    static = _static_batch(candidate) or _static_batch(reference)
    if sample_inputs is not None:
        sets = sample_inputs if isinstance(sample_inputs, (list, tuple)) else [sample_inputs]
        sets = [part for feeds in sets for part in _rebatch(dict(feeds), static)]
        domains = [sets]
        labels = [f"sample {i}" for i in range(len(sets))]
        rows = sum(_rows(feeds) for feeds in sets)
        described = sample_source or f"{rows} given input rows"
    else:
        samplers = _samplers(reference)
        tried = INT_DOMAINS if any(s.kind in ("ints", "bools") for s in samplers) else INT_DOMAINS[:1]
        domains = [varied_feeds(reference, samples=samples, batch=static, seed=0, domain=d) for d in tried]
        labels = [f"seeded varied inputs {i}" for i in range(len(domains[0]))]
        described = describe_inputs(reference, sum(_rows(feeds) for feeds in domains[0]))
    probs = _prob_outputs(reference) | _prob_outputs(candidate)
    names = [n for n in candidate.output_names if n in set(reference.output_names)]
    cache = reference_cache if reference_cache is not None else {}
    try:
        filled, got = _isolated(_run_sessions, reference, candidate, candidate_path, reference_path,
                                domains, names, dict(cache))
    except _SessionFailed as exc:
        which = {"input": "the input model", "exported": "the exported model",
                 "either": "the parity session"}[exc.which]
        raise GraphfixError(f"parity run: onnxruntime cannot run {which} on the parity inputs: {exc.message}",
                            kind="parity", hint="nothing was written"
                            + ("; give sample inputs with --inputs" if exc.which == "input" and sample_inputs is None
                               else "; report this model to the graphfix developers")) from None
    cache.update(filled)
    if cache.get("domain"):
        described += f" (integer inputs: {tried[cache['domain']]})"
    figures: dict[str, dict] = {}
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for index, outputs in enumerate(got):
            for name in names:
                _diff(figures, name, cache[index][name], outputs[name], fp16, name in probs, fp16 and bool(probs))
    ok = all(e["ok"] for e in figures.values())
    return {"ok": ok, "fp16": fp16, "inputs": described, "runs": labels, "outputs": figures}


def _diff(figures: dict, name: str, ref, got, fp16: bool, prob: bool, labels_follow: bool) -> None:
    """Fold one run's output `name` into `figures[name]`: NaN where the reference has NaN and
    equal infinities are equal; any other difference counts. Integer and bool outputs must be
    equal, except with `labels_follow` (fp16 with probability outputs: labels follow them)."""
    entry = figures.setdefault(name, {"max_abs_diff": 0.0, "max_abs_ref": 0.0, "tolerance": 0.0, "ok": True})
    if isinstance(ref, list) or isinstance(got, list) or ref is None or got is None:
        same = type(ref) is type(got) and (ref is None or (len(ref) == len(got) and all(
            np.array_equal(np.asarray(a), np.asarray(b), equal_nan=np.asarray(a).dtype.kind in "fc")
            for a, b in zip(ref, got))))
        entry["max_abs_diff"] = max(entry["max_abs_diff"], float(not same))
        entry["ok"] = entry["ok"] and same
        return
    a, b = np.asarray(ref), np.asarray(got)
    if a.shape != b.shape:
        entry.update(ok=False, error=f"shape {list(b.shape)} != {list(a.shape)}")
        return
    if a.dtype.kind not in "fc":
        mism = int(np.count_nonzero(a != b))
        entry["mismatches"] = entry.get("mismatches", 0) + mism
        entry["max_abs_diff"] = max(entry["max_abs_diff"], float(mism > 0))
        entry["ok"] = entry["ok"] and (mism == 0 or labels_follow)
        return
    kind = np.complex128 if a.dtype.kind == "c" or b.dtype.kind == "c" else np.float64
    a64, b64 = a.astype(kind), b.astype(kind)
    equal = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    finite = np.isfinite(a64)
    ref_max = float(np.max(np.abs(a64[finite]))) if finite.any() else 0.0
    both = ~equal & finite & np.isfinite(b64)
    diff = float(np.max(np.abs(a64[both] - b64[both]))) if both.any() else 0.0
    broken = bool((~equal & ~(finite & np.isfinite(b64))).any())  # NaN or inf on one side only
    tol = (FP16_ATOL if prob else FP16_OTHER_RTOL * max(1.0, ref_max)) if fp16 else FP32_RTOL * max(1.0, ref_max)
    entry["max_abs_diff"] = max(entry["max_abs_diff"], float("inf") if broken else diff)
    entry["max_abs_ref"] = max(entry["max_abs_ref"], ref_max)
    entry["tolerance"] = max(entry["tolerance"], tol)
    if diff > tol or broken:
        entry["ok"] = False


def _rows(feeds: dict[str, np.ndarray]) -> int:
    return max((int(a.shape[0]) for a in feeds.values() if isinstance(a, np.ndarray) and a.ndim), default=1)


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
