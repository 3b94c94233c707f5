"""INT8 for TensorRT: explicit quantization (QDQ) calibrated on the user's data, accuracy measured.

The quantizer is onnxruntime.quantization's QDQ path (`quantize_static`): onnxruntime is already a
dependency, it runs on CPU, and its Q/DQ output is the explicit-quantization form TensorRT builds
from. NVIDIA Model Optimizer's ONNX PTQ was compared and not adopted: with graphfix's onnx 1.23
its current release does not install (it pins onnx~=1.21) and the release pip falls back to
does not import (see the README's INT8 section).

What is written:

1. Weights per-channel symmetric int8 (Conv/ConvTranspose axis 0, Gemm the output axis, MatMul
   axis 1: the output channels, as TensorRT wants), stored int8 with a DequantizeLinear.
2. Activations per-tensor symmetric int8 (zero points 0), ranges from `method` on the
   calibration rows: "entropy" (KL, TensorRT's own calibrator), "percentile" (99.999th) or "max".
3. Q/DQ only on the inputs of the weighted layers (`QUANTIZED_OPS`); their outputs, biases and
   everything else stay fp32 -- TensorRT propagates the scales and fuses Q/DQ into the layers.
4. The head (`graphfix_head` Gemm, its Sigmoid and the decision nodes after it) stays fp32 with
   no Q/DQ around it; so do the layers `--int8 auto` keeps (`float_nodes`).

`export_int8` runs the fp32 export first (passes + parity), quantizes, measures mAP and F1 fp32
vs int8 on the held-out rows (or a seeded split of the calibration rows), refuses over budget,
and with `auto` keeps the most sensitive layers unquantized until the budget holds.
"""

from __future__ import annotations

__all__ = [
    "METHODS", "DEFAULT_METHOD", "DEFAULT_BUDGET", "QUANTIZED_OPS", "SPLIT_SEED", "SPLIT_FRACTION",
    "Int8Quantizer", "export_int8", "head_nodes", "split_rows", "features_refused", "require_trained", "accuracy", "probabilities",
]

import contextlib
import io
import logging
import os
import tempfile
import time
from typing import Any, Iterator, Sequence

import numpy as np

from graphfix.data.datasets import Dataset
from graphfix.errors import GraphfixError
from graphfix.model import Model, set_metadata

logger = logging.getLogger(__name__)

#: --int8-method -> onnxruntime's CalibrationMethod name.
METHODS = {"entropy": "Entropy", "percentile": "Percentile", "max": "MinMax"}
#: Chosen by measurement (benchmarks/int8_quantizers.py, open_nsfw on an image task): the mAP drop was
#: -0.003 with percentile, 0.017 with entropy, 0.020 with max (equal on the digit mosaics).
DEFAULT_METHOD = "percentile"
#: Largest mAP drop fp32 -> int8 accepted by default.
DEFAULT_BUDGET = 0.005
#: Layers whose inputs get Q/DQ (TensorRT's recommended placement: weighted layers).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Without --heldout: rows drawn (seeded) from --calibration to measure on, not calibrated on.
SPLIT_SEED = 0
SPLIT_FRACTION = 0.2
#: Rows per calibration batch: onnxruntime's calibrator holds every activation of a batch at once.
CALIBRATION_BATCH = 8
#: Calibration rows the per-layer sensitivity of `--int8 auto` is measured on.
SENSITIVITY_ROWS = 64
#: Evaluation inputs up to this size are decoded once and kept (the auto search reruns them).
_KEEP_BYTES = 512 << 20

_WEIGHTS = "per-channel symmetric int8"
_ACTIVATIONS = "per-tensor symmetric int8"
_EXTRA = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "CalibTensorRangeSymmetric": True,
    "QuantizeBias": False,
    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},
    "CalibStridedMinMax": 1,  # one reader item (a batch) per collection: see `_Feeder.reader`
}


def head_nodes(model: Model) -> set[str]:
    """Names of the head's nodes: `graphfix_head` and everything downstream of it (Sigmoid, decisions)."""
    from graphfix.convert.export.passes.fp16 import HEAD_NODE
    from graphfix.irutil import downstream_nodes

    seeds = [n for n in model.ir.graph if n.name == HEAD_NODE]
    if not seeds:
        raise GraphfixError("no graphfix head (node graphfix_head): --int8 quantizes a model from swap-head and "
                            "train-head", kind="usage", path=model.path)
    return {n.name for n in seeds} | {n.name for n in downstream_nodes(o for n in seeds for o in n.outputs)}


def require_trained(model: Model, path: str | None = None) -> None:
    """Refuse (usage) a model whose graphfix head is missing or untrained: its int8 figures would mean nothing."""
    from graphfix.model import head_state

    state = head_state(model)
    if state in (None, "untrained"):
        what = "has no graphfix head" if state is None else "has an untrained head (no graphfix.training)"
        raise GraphfixError(f"the model {what}: int8 accuracy is measured on the trained multi-label head",
                            kind="usage", path=path or model.path,
                            hint="run `graphfix swap-head` and `graphfix train-head MODEL --train DATA` first")
    head_nodes(model)


def features_refused(flag: str, path: str | None) -> GraphfixError:
    """The error for a features folder given as int8 data."""
    return GraphfixError(f"{flag}: a features folder holds backbone outputs, not model inputs: it cannot calibrate "
                         "or measure an int8 backbone", kind="usage", path=path,
                         hint="give the CSV or NPZ the features were extracted from")


def split_rows(calibration: Dataset, heldout: Dataset | None, *, seed: int = SPLIT_SEED,
               fraction: float = SPLIT_FRACTION) -> tuple[Dataset, Dataset, str]:
    """(rows to calibrate on, rows to measure on, what the measured rows are in words).

    With `heldout` it is measured on; else a seeded `fraction` of the calibration rows (at least
    one, file order kept) is set aside and the rest calibrates."""
    for ds, flag in ((calibration, "--calibration"), (heldout, "--heldout")):
        if ds is not None and ds.features is not None:
            raise features_refused(flag, ds.source)
    if heldout is not None:
        return calibration, heldout, f"{len(heldout)} rows of --heldout {_name(heldout)}"
    n = len(calibration)
    if n < 2:
        raise GraphfixError("--calibration has fewer than 2 rows: nothing to split off to measure on",
                            path=calibration.source, hint="give more rows, or --heldout DATA")
    take = max(1, int(round(n * fraction)))
    order = np.random.default_rng(seed).permutation(n)
    measure, keep = np.sort(order[:take]), np.sort(order[take:])
    words = (f"{take} rows of --calibration {_name(calibration)} (seeded split, seed {seed}: "
             f"{take} measure, {n - take} calibrate)")
    return calibration.take(keep), calibration.take(measure), words


def _name(ds: Dataset) -> str:
    return os.path.basename(ds.source) if ds.source else "the data set"


class _Feeder:
    """A data set's model inputs for one input name, batch by batch (padded to a fixed batch size)."""

    def __init__(self, ds: Dataset, name: str, batch_size: int, static: int | None, dtype) -> None:
        self.ds, self.name, self.static, self.dtype = ds, name, static, dtype
        self.batch_size = static or batch_size
        self.starts = list(range(0, len(ds), self.batch_size))
        self._kept: dict[int, np.ndarray] = {}
        self._keep = len(ds) * _row_bytes(ds) <= _KEEP_BYTES
        self.bar: Any = None  # a progress bar counting the batches served, while set

    def batch(self, i: int) -> np.ndarray:
        """Batch `i` (decoded once and kept when the whole set is small)."""
        if self.bar is not None:
            self.bar.update(1)
        if i in self._kept:
            return self._kept[i]
        start = self.starts[i]
        x = next(self.ds.batches(self.batch_size, start=start, stop=min(len(self.ds), start + self.batch_size)))
        x = np.ascontiguousarray(x, dtype=self.dtype)
        if self._keep:
            self._kept[i] = x
        return x

    def batches(self) -> Iterator[np.ndarray]:
        for i in range(len(self.starts)):
            yield self.batch(i)

    def reader(self):
        """An onnxruntime CalibrationDataReader, one batch per item: quantize_static is given
        `CalibStridedMinMax` 1, so each batch is collected on its own (its histogram calibrators
        otherwise hold every batch's activations at once, and refuse batches of unequal size)."""
        from onnxruntime.quantization import CalibrationDataReader

        feeder = self

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._todo: Iterator[int] = iter(())

            def __len__(self) -> int:
                return len(feeder.starts)

            def set_range(self, start_index: int, end_index: int) -> None:
                self._todo = iter(range(start_index, min(end_index, len(feeder.starts))))

            def get_next(self):
                i = next(self._todo, None)
                return None if i is None else {feeder.name: feeder.pad(feeder.batch(i))[0]}

        return Reader()

    def pad(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        rows = len(x)
        if self.static and rows < self.static:
            x = np.concatenate([x, np.repeat(x[-1:], self.static - rows, axis=0)])
        return x, rows


def _row_bytes(ds: Dataset) -> int:
    """Bytes of one model input row (float32)."""
    if ds.x is not None:
        return int(np.prod(ds.x.shape[1:])) * 4
    size = ds.preprocess.size if ds.preprocess is not None and getattr(ds.preprocess, "size", None) else (224, 224)
    return 3 * int(size[0]) * int(size[1]) * 4


def probabilities(model: Model, feeder: _Feeder) -> np.ndarray:
    """The model's `probabilities` output [N, L] on the feeder's rows (onnxruntime CPU)."""
    sess = model.session()
    out = []
    for x in feeder.batches():
        padded, rows = feeder.pad(x)
        try:
            out.append(sess.run(["probabilities"], {feeder.name: padded})[0][:rows])
        except Exception as exc:  # onnxruntime refuses a run (a quantized graph it cannot execute)
            raise GraphfixError(f"onnxruntime cannot run the model on the int8 data: {_first_line(exc)}",
                                kind="not_ready", path=model.path, hint="nothing was written") from exc
    return np.concatenate(out).astype(np.float32)


class Int8Quantizer:
    """onnxruntime's QDQ quantizer over one fp32 model: calibrates once (the ranges are cached in
    `workdir`), then quantizes with any set of layers left in float, cheaply."""

    def __init__(self, model: Model, feeder: _Feeder, method: str, workdir: str) -> None:
        _check_method(method)
        self.model, self.feeder, self.method = model, feeder, method
        self.head = head_nodes(model)
        self.candidates = [n.name for n in model.ir.graph if n.op_type in QUANTIZED_OPS and n.domain in ("", "ai.onnx")
                           and n.name not in self.head]
        self.source = os.path.join(workdir, "fp32.onnx")
        self.cache = os.path.join(workdir, "ranges.json")
        self.workdir = workdir
        model.save(self.source)
        self.tries = 0

    def quantize(self, keep: Sequence[str] = (), only: Sequence[str] | None = None) -> Model:
        """The int8 model with the layers `keep` left in float (or only the layers `only` quantized)."""
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        import onnx

        out = os.path.join(self.workdir, "int8.onnx")
        first = not os.path.exists(self.cache)
        big = _big(self.model)
        try:
            with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
                quantize_static(
                    self.source, out, self.feeder.reader() if first else None, quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=list(only) if only else None,
                    nodes_to_exclude=sorted(self.head | set(keep)), use_external_data_format=big,
                    calibrate_method=getattr(CalibrationMethod, METHODS[self.method]), extra_options=dict(_EXTRA),
                    calibration_cache_path=self.cache,
                )
        except GraphfixError:
            raise  # a calibration row that cannot be read
        except Exception as exc:  # onnxruntime.quantization cannot handle this graph
            raise GraphfixError(f"onnxruntime.quantization failed: {_first_line(exc)}", kind="not_ready",
                                path=self.model.path, hint="nothing was written") from exc
        self.tries += 1
        proto = onnx.load(out, load_external_data=True)
        kept = [(p.key, p.value) for p in proto.metadata_props if p.key.startswith("graphfix.")]
        del proto.metadata_props[:]  # onnxruntime's own marks (onnx.infer) are not graphfix's to keep
        for key, value in kept:
            proto.metadata_props.add(key=key, value=value)
        proto.producer_name, proto.producer_version = self.model.ir.producer_name or "", self.model.ir.producer_version or ""
        from graphfix.convert.export.passes import HygienePass

        result = Model.from_proto(proto, path=self.model.path)
        HygienePass()(result.ir)
        return result


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise GraphfixError(f"unknown --int8-method {method!r}", kind="usage", hint="entropy, percentile or max")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_logging():
    """onnxruntime.quantization logs to the root logger ("consider pre-processing"): not ours to print."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _big(model: Model) -> bool:
    return model.weight_bytes() > (1 << 30)


def accuracy(y: np.ndarray, fp32: np.ndarray, int8: np.ndarray, thresholds: Any, labels: Sequence[str]) -> dict:
    """fp32 vs int8 on the same rows: mAP, micro/macro-F1 at `thresholds`, the largest per-class F1 drop."""
    from graphfix.calibrate.calibration import evaluate

    a, b = evaluate(fp32, y, thresholds, labels), evaluate(int8, y, thresholds, labels)
    worst = {"label": None, "fp32": None, "int8": None, "drop": 0.0}
    for pa, pb in zip(a["per_class"], b["per_class"]):
        if pa["f1"] is not None and pb["f1"] is not None and pa["f1"] - pb["f1"] > worst["drop"]:
            worst = {"label": pa["label"], "fp32": pa["f1"], "int8": pb["f1"], "drop": round(pa["f1"] - pb["f1"], 6)}

    def brief(m: dict) -> dict:
        return {"mAP": m["mAP"], "micro_f1": m["micro_f1"], "macro_f1": m["macro_f1"]}

    drop = None if a["mAP"] is None or b["mAP"] is None else round(a["mAP"] - b["mAP"], 6)
    return {"rows": int(len(y)), "fp32": brief(a), "int8": brief(b), "mAP_drop": drop, "largest_class_f1_drop": worst,
            "max_abs_prob_diff": round(float(np.max(np.abs(fp32 - int8))) if len(y) else 0.0, 6)}


def _over(figures: dict, budget: float) -> bool:
    return figures["mAP_drop"] is None or figures["mAP_drop"] > budget


def export_int8(
    model: Model,
    path: str | os.PathLike | None,
    *,
    calibration: Dataset,
    heldout: Dataset | None = None,
    method: str = DEFAULT_METHOD,
    budget: float = DEFAULT_BUDGET,
    auto: bool = False,
    target: str = "tensorrt",
    opset: int = 17,
    batch: str | int = "dynamic",
    max_batch: int | None = None,
    batch_size: int = 32,
    check: bool = True,
    progress: bool | None = None,
    **parity: Any,
):
    """Export `model` as a QDQ int8 ONNX for TensorRT, calibrated on `calibration`, accuracy proven.

    Args:
        model: A swapped, trained model (not changed).
        path: Where to write the result (nothing is written when the accuracy is over budget).
        calibration: Rows whose activations set the int8 ranges (through the model's preprocessing).
        heldout: Rows to measure fp32 vs int8 on, and to re-fit stored thresholds on; without
            it a seeded `SPLIT_FRACTION` of `calibration` is measured on (and not calibrated on).
        method: "entropy", "percentile" or "max".
        budget: Largest accepted mAP drop.
        auto: Keep the most sensitive layers (measured on the calibration rows) in float until
            the drop is within budget.
        target, opset, batch, max_batch, check: As for `export`.
        batch_size: Rows per onnxruntime call.
        progress: Bars for the `auto` search (None: on a terminal).
        parity: `sample_inputs`, `sample_source`, `reference_path` of the fp32 export's parity run.

    Returns:
        An ExportResult whose `int8` holds the figures (also stored as `graphfix.int8`). Raises
        GraphfixError(kind="parity") over budget, the figures in `error.result`.
    """
    from graphfix.convert.export import export

    if target != "tensorrt":
        raise GraphfixError(f"--int8 is for --target tensorrt, not {target}", kind="usage")
    _check_method(method)
    if not (budget >= 0 and np.isfinite(budget)):
        raise GraphfixError(f"bad --int8-budget {budget!r}", kind="usage", hint="a number >= 0, e.g. 0.005")
    require_trained(model)
    calib, measure, measured_on = split_rows(calibration, heldout)
    start = time.perf_counter()
    result = export(model, None, target=target, fp16=False, opset=opset, batch=batch, max_batch=max_batch,
                    verify=True, check=False, **parity)
    fp32 = result.model
    inputs = [v for v in fp32.ir.graph.inputs if not v.is_initializer()]
    if len(inputs) != 1:
        raise GraphfixError(f"--int8 needs a model with one image input, this one has {len(inputs)}", kind="usage",
                            path=model.path)
    name = inputs[0].name
    dtype = inputs[0].dtype.numpy() if inputs[0].dtype is not None else np.float32
    static = inputs[0].shape[0] if inputs[0].shape is not None and isinstance(inputs[0].shape[0], int) else None
    calib_feed = _Feeder(calib, name, min(batch_size, CALIBRATION_BATCH), static, dtype)
    measure_feed = _Feeder(measure, name, batch_size, static, dtype)
    stored = model.thresholds
    thresholds = np.asarray(stored, np.float32) if stored else np.float32(0.5)
    labels = model.labels or [str(j) for j in range(measure.y.shape[1])]

    with tempfile.TemporaryDirectory(prefix="graphfix-int8-") as work:
        q = Int8Quantizer(fp32, calib_feed, method, work)
        t0 = time.perf_counter()
        from graphfix.progress import bar

        with bar(total=len(calib_feed.starts) + 2 * len(measure_feed.starts), desc="int8 calibrate + measure",
                 unit="batch") as calib_feed.bar:
            measure_feed.bar = calib_feed.bar
            int8 = q.quantize()
            reference = probabilities(fp32, measure_feed)
            scores = probabilities(int8, measure_feed)
        calib_feed.bar = measure_feed.bar = None
        figures = accuracy(measure.y, reference, scores, thresholds, labels)
        search = None
        if auto and _over(figures, budget) and q.candidates:
            full = figures
            int8, scores, figures, search = _auto(q, calib, name, static, dtype, measure_feed, reference, measure.y,
                                                  thresholds, labels, budget, progress)
            if len(search["float_nodes"]) == len(q.candidates):  # nothing quantized: not an int8 model
                figures, search["all_float"] = full, True
        seconds = time.perf_counter() - t0
    kept = search["float_nodes"] if search else []
    info = {
        "method": method,
        "quantizer": f"onnxruntime.quantization {_ort_version()} (QDQ)",
        "weights": _WEIGHTS,
        "activations": _ACTIVATIONS,
        "calibration_rows": len(calib),
        "float_nodes": kept,
        "accuracy": {**figures, "measured_on": measured_on, "thresholds": "stored" if stored else "0.5 (none stored)",
                     "budget": budget},
    }
    if search:
        info["auto"] = {k: v for k, v in search.items() if k != "float_nodes"}
    if _over(figures, budget) or (search or {}).get("all_float"):
        text = _over_text(figures, budget, measured_on)
        if (search or {}).get("all_float"):
            text = ("int8 auto: the budget holds only with every layer unquantized; with every layer int8: "
                    + text.removeprefix("int8 accuracy over budget: "))
        error = GraphfixError(text, kind="parity", path=model.path,
                              hint="nothing was written; " + (
                                  "try another --int8-method, more --calibration rows or a larger --int8-budget"
                                  if auto else "try --int8 auto (keeps the most sensitive layers unquantized), "
                                               "another --int8-method or more --calibration rows"))
        result.int8 = info
        error.result = result  # type: ignore[attr-defined]
        raise error
    refit = None
    if heldout is not None and stored:
        int8, refit = _refit(int8, model, scores, measure.y, labels)
        info["thresholds_refit"] = refit
    options = dict(result.options, int8="auto" if auto else True, int8_method=method)
    set_metadata(int8.ir, export=options, int8=info)
    result.options = options
    result.model = int8
    result.int8 = info
    result.passes.append({"name": "int8_qdq", "modified": True, "seconds": round(seconds, 4)})
    if path is not None:
        int8.save(path)
        int8.path = os.fspath(path)
        result.path = os.fspath(path)
    if check:
        from graphfix.convert.check import check as run_check

        result.report = run_check(result.path or int8, target=target, max_batch=max_batch)
    result.seconds = time.perf_counter() - start
    return result


def _over_text(figures: dict, budget: float, measured_on: str) -> str:
    a, b = figures["fp32"], figures["int8"]
    if figures["mAP_drop"] is None:
        return f"int8 accuracy cannot be measured: no positive labels in {measured_on}"
    worst = figures["largest_class_f1_drop"]
    return (f"int8 accuracy over budget: mAP {a['mAP']:.4f} -> {b['mAP']:.4f} (drop {figures['mAP_drop']:.4f} > "
            f"{budget:g}), micro-F1 {a['micro_f1']:.4f} -> {b['micro_f1']:.4f}, macro-F1 {a['macro_f1']:.4f} -> "
            f"{b['macro_f1']:.4f}, largest class F1 drop {worst['drop']:.4f}"
            + (f" ({worst['label']})" if worst["label"] else "") + f", on {measured_on}")


def _auto(q: Int8Quantizer, calib: Dataset, name: str, static, dtype, measure_feed: _Feeder, reference: np.ndarray,
          y: np.ndarray, thresholds, labels, budget: float, progress: bool | None):
    """Keep the most sensitive layers in float until the mAP drop is within budget.

    Sensitivity of a layer: the mean squared change of the probabilities on the first
    `SENSITIVITY_ROWS` calibration rows when only that layer is quantized. Then the k most
    sensitive are kept for k = 1, 2, 4, ... until the budget holds, and k is bisected down.
    Returns (model, scores, figures, search notes) of the smallest k found (all kept: over budget)."""
    from graphfix.progress import bar

    probe = _Feeder(calib.take(np.arange(min(SENSITIVITY_ROWS, len(calib)))), name, q.feeder.batch_size, static,
                    dtype)
    base = probabilities(q.model, probe)
    sensitivity: dict[str, float] = {}
    with bar(total=len(q.candidates), desc="int8 sensitivity", unit="layer") as b:
        for node in q.candidates:
            got = probabilities(q.quantize(only=[node]), probe)
            sensitivity[node] = float(np.mean((got - base) ** 2))
            b.update(1)
    order = sorted(q.candidates, key=lambda n: -sensitivity[n])  # stable: graph order among equals
    tried: dict[int, tuple] = {}

    def attempt(k: int) -> tuple:
        if k not in tried:
            model = q.quantize(keep=order[:k])
            scores = probabilities(model, measure_feed)
            tried[k] = (model, scores, accuracy(y, reference, scores, thresholds, labels))
            logger.info("int8 auto: %d layers kept float -> mAP drop %s", k, tried[k][2]["mAP_drop"])
        return tried[k]

    n = len(order)
    lo, hi = 0, 1
    while hi < n and _over(attempt(hi)[2], budget):
        lo, hi = hi, min(2 * hi, n)
    if hi >= n:
        hi = n
        attempt(n)
    while hi - lo > 1 and not _over(attempt(hi)[2], budget):
        mid = (lo + hi) // 2
        if _over(attempt(mid)[2], budget):
            lo = mid
        else:
            hi = mid
    model, scores, figures = attempt(hi)
    notes = {"float_nodes": order[:hi], "candidates": n, "tries": len(tried),
             "sensitivity": {k: round(sensitivity[k], 9) for k in order[: max(hi, 5)]},
             "sensitivity_rows": len(probe.ds)}
    return model, scores, figures, notes


def _refit(int8: Model, source: Model, scores: np.ndarray, y: np.ndarray, labels) -> tuple[Model, dict]:
    """Thresholds re-fitted on the int8 scores with the stored fitting rule, stored in the int8 model."""
    from graphfix.calibrate.calibration import DEFAULT_MIN_POSITIVES, apply_thresholds, fit_thresholds_from_scores

    rule = source.metadata.get("calibration") or {}
    th = fit_thresholds_from_scores(
        scores, y, rule.get("objective") or "f1", labels=labels,
        min_positives=rule.get("min_positives") or DEFAULT_MIN_POSITIVES,
        at_least_one=bool(rule.get("at_least_one")),
    )
    with_labels = "labels" in source.output_names
    new = apply_thresholds(int8, th, labels_output=with_labels)
    before = [float(v) for v in source.thresholds]
    after = [float(v) for v in th.values]
    return new, {"objective": th.objective, "rows": int(len(y)), "before": before, "after": after,
                 "max_change": round(max(abs(a - b) for a, b in zip(before, after)), 6)}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
