"""Export GPU- and TensorRT-ready ONNX: a fixed sequence of onnx-ir passes, parity, readiness.

`export(model, path, target=...)` clones the model, runs the passes below in this order, checks
parity with the input in onnxruntime, writes `path` (external data above 2 GB) and runs the
readiness check (`graphfix.convert.check`) on the result:

1. FoldConstantsPass        constant folding + dead code (onnxscript optimizer)
2. RemoveInferenceNoOpsPass inference Dropout / Identity
3. FoldBatchNormPass        BatchNormalization into the preceding Conv / Gemm
4. ConstantReshapePass      Shape-chain Reshape -> Flatten / constant Reshape
5. EinsumEquationPass       Einsum labels lowercase, no spaces (TensorRT's parser)
6. ConvertOpsetPass         target opset (default 17), explicit ir_version
7. BatchDimPass             only the batch dimension symbolic (or fixed), shapes re-inferred
8. FoldConstantsPass        again (a fixed batch lets more fold)
9. Int64RangePass           int64 constants vs int32 range
10. Float16Pass             with `fp16=True`: fp16 in the graph, fp32 I/O, Resize + head fp32;
                            with `fp16="auto"` after the hygiene pass, searched (`_fp16_auto`)
11. HygienePass             no initializer inputs, unique node names, topological order
"""

from __future__ import annotations

__all__ = ["export", "ExportResult", "TARGETS", "FP16_RETRY"]

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from graphfix.errors import GraphfixError
from graphfix.model import Model, set_metadata

logger = logging.getLogger(__name__)

#: Export targets.
TARGETS = ("cpu", "cuda", "tensorrt")
#: What to do when plain fp16 fails parity (the hint of that error).
FP16_RETRY = ("run the same command with `--fp16 auto` in place of `--fp16`: it keeps in fp32 the fewest nodes "
              "that bring parity within tolerance")


@dataclass
class ExportResult:
    """What `export` produced.

    Attributes:
        model: The exported Model.
        path: The file written, if any.
        options: target, fp16, opset, batch, max_batch.
        passes: Per pass: name, modified, seconds.
        parity: The parity figures (`_parity.compare`), None when not verified.
        report: The readiness Report of the exported model, None when not checked.
        notes: fp16 overflow/underflow and int64 findings of the passes.
        seconds: Total wall time.
        int8: With --int8 (`int8.export_int8`): the quantization and its accuracy figures
            (also stored as `graphfix.int8`).
    """

    model: Model
    path: str | None
    options: dict[str, Any]
    passes: list[dict[str, Any]] = field(default_factory=list)
    parity: dict[str, Any] | None = None
    report: Any = None
    notes: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    int8: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """Parity within tolerance (or not run) and no FAIL in the readiness report."""
        parity_ok = self.parity is None or self.parity["ok"]
        return parity_ok and (self.report is None or self.report.ok)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `--json`."""
        return {
            "ok": self.ok,
            "path": self.path,
            "options": self.options,
            "passes": self.passes,
            "parity": self.parity,
            "notes": self.notes,
            "report": self.report.to_dict() if self.report is not None else None,
            "seconds": round(self.seconds, 3),
            **({"int8": self.int8} if self.int8 is not None else {}),
        }


def export(
    model: Model | str | os.PathLike,
    path: str | os.PathLike | None = None,
    *,
    target: str = "tensorrt",
    fp16: bool | str = False,
    opset: int = 17,
    batch: str | int = "dynamic",
    max_batch: int | None = None,
    verify: bool = True,
    sample_inputs: Any = None,
    check: bool = True,
    reference_path: str | os.PathLike | None = None,
    sample_source: str | None = None,
) -> ExportResult:
    """Export `model` for `target`; write `path` when given.

    Args:
        model: A Model or an ONNX file path. It is not changed.
        path: Where to write the result (external data `<name>.data` above 2 GB).
        target: "cpu", "cuda" or "tensorrt".
        fp16: Put float16 into the graph (fp32 inputs/outputs; Resize and the head stay fp32).
            "auto": the same, then keep in fp32 the fewest nodes that bring parity within
            tolerance (a binary search over topological suffixes and prefixes, with a progress
            bar; `notes["fp16_auto"]`).
        opset: Target default-domain opset (13..20).
        batch: "dynamic" (symbolic batch) or a fixed batch size.
        max_batch: Largest batch the deployment uses (stored in metadata; used for the TensorRT
            profile by `check --build`).
        verify: Compare with the input in onnxruntime (GraphfixError kind "parity" when over).
        sample_inputs: The command's own data (a feeds dict or a list of them): parity is
            judged on it instead of the seeded inputs in the model's range
            (`_parity.varied_feeds`); the fp16 activation probe also runs it.
        check: Run the readiness check on the result.
        reference_path: The ONNX file `model` was loaded from, when its graph is unchanged:
            parity then runs the reference from that file (no temporary copy of big weights).
        sample_source: What `sample_inputs` are, in words (shown with the parity figures).

    Returns:
        An ExportResult. Raises GraphfixError(kind="parity") when outputs differ beyond the
        tolerance (nothing is written then; the figures are in `error.result`).
    """
    from graphfix.convert.export import passes as P
    from graphfix.convert.export._parity import compare

    start = time.perf_counter()
    reference_path = os.fspath(reference_path) if reference_path is not None else None
    if not isinstance(model, Model):
        from graphfix.model import load_onnx

        model = load_onnx(model)
        reference_path = model.path  # loaded here and never edited: run the reference from the file
    if target not in TARGETS:
        raise GraphfixError(f"unknown target {target!r}", kind="usage", hint="cpu, cuda or tensorrt")
    if fp16 not in (True, False, "auto"):
        raise GraphfixError(f"bad --fp16 {fp16!r}", kind="usage", hint="--fp16 or --fp16 auto")
    if fp16 == "auto" and not verify:
        raise GraphfixError("--fp16 auto needs the parity run", kind="usage", hint="drop --no-verify")
    if isinstance(batch, str) and batch != "dynamic":
        try:
            batch = int(batch)
        except ValueError:
            raise GraphfixError(f"bad --batch {batch!r}", kind="usage", hint="dynamic or a positive N") from None
    if max_batch is not None and (max_batch < 1 or (isinstance(batch, int) and max_batch < batch)):
        raise GraphfixError(f"bad --max-batch {max_batch}", kind="usage")
    options = {"target": target, "fp16": fp16, "opset": opset, "batch": batch, "max_batch": max_batch}
    result = ExportResult(model=None, path=None, options=options)  # type: ignore[arg-type]

    work = _working_copy(model)
    int64 = P.Int64RangePass()
    half = P.Float16Pass()
    pipeline: list[tuple[str, Any]] = [
        ("fold_constants", P.FoldConstantsPass()),
        ("remove_inference_noops", P.RemoveInferenceNoOpsPass()),
        ("fold_batchnorm", P.FoldBatchNormPass()),
        ("constant_reshape", P.ConstantReshapePass()),
        ("einsum_equation", P.EinsumEquationPass()),
        ("convert_opset", P.ConvertOpsetPass(opset)),
        ("batch_dim", P.BatchDimPass(batch)),
        ("fold_constants_2", P.FoldConstantsPass()),
        ("int64_range", int64),
    ]
    if fp16 is True:
        pipeline.append(("float16", half))
    pipeline.append(("hygiene", P.HygienePass()))
    for name, pass_ in pipeline:
        t0 = time.perf_counter()
        try:
            outcome = pass_(work.ir)
        except GraphfixError as exc:
            raise exc.with_path(model.path) if model.path else exc
        except Exception as exc:  # a pass bug or a model the pass cannot handle
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if isinstance(cause, GraphfixError):
                raise cause.with_path(model.path) if model.path else cause
            raise
        result.passes.append(
            {"name": name, "modified": bool(outcome.modified), "seconds": round(time.perf_counter() - t0, 4)}
        )
        logger.info("export pass %s: %s", name, "modified" if outcome.modified else "no change")
    if int64.out_of_range:
        result.notes["int64_out_of_range"] = int64.out_of_range
    if fp16 == "auto":
        t0 = time.perf_counter()
        try:
            work, half, result.parity, result.notes["fp16_auto"] = _fp16_auto(
                model, work, sample_inputs=sample_inputs, sample_source=sample_source, reference_path=reference_path)
        except GraphfixError as exc:
            raise exc.with_path(model.path) if model.path else exc
        result.passes.append({"name": "float16_auto", "modified": half.converted > 0,
                              "seconds": round(time.perf_counter() - t0, 4)})
    if fp16:
        result.notes["fp16_converted_nodes"] = half.converted
        if half.overflow:
            result.notes["fp16_overflow_kept_fp32"] = half.overflow
        if half.underflow:
            result.notes["fp16_underflow"] = half.underflow
    set_metadata(
        work.ir,
        export={k: v for k, v in options.items()},
    )
    _preflight(work, model.path)
    result.model = work

    # Big models are written first and verified from the file (one serialization instead of
    # two); when parity fails the written files are removed again, so nothing is left behind.
    early_save = path is not None and _is_big(work)
    if early_save:
        work.save(path)
    if verify and result.parity is None:
        t0 = time.perf_counter()
        try:
            result.parity = compare(model, work, fp16=fp16, sample_inputs=sample_inputs, sample_source=sample_source,
                                    candidate_path=os.fspath(path) if early_save else None,
                                    reference_path=reference_path)
        except BaseException as exc:
            if early_save:
                _remove_written(path)
            if isinstance(exc, GraphfixError) and model.path:
                raise exc.with_path(model.path)  # onnxruntime refused or crashed on a parity session
            raise
        result.parity["seconds"] = round(time.perf_counter() - t0, 3)
    if verify:
        if not result.parity["ok"]:
            if early_save:
                _remove_written(path)
            worst = max(
                result.parity["outputs"].items(),
                key=lambda kv: kv[1]["max_abs_diff"] - kv[1]["tolerance"],
            )
            error = GraphfixError(
                f"parity failed: output {worst[0]} differs by {worst[1]['max_abs_diff']:.3g} "
                f"(tolerance {worst[1]['tolerance']:.3g})",
                kind="parity", path=model.path,
                hint="nothing was written; " + (FP16_RETRY if fp16 is True
                                                else "report this model to the graphfix developers"),
            )
            error.result = result  # type: ignore[attr-defined]
            raise error

    if path is not None:
        if not early_save:
            work.save(path)
        work.path = os.fspath(path)
        result.path = os.fspath(path)
    if check:
        from graphfix.convert.check import check as run_check

        check_target = "cuda" if target == "cpu" else target
        result.report = run_check(
            result.path or work, target=check_target, sample_inputs=sample_inputs,
            max_batch=max_batch, generic_only=(target == "cpu"),
        )
        result.report.target = target  # cpu: the generic checks only, run as for cuda; say cpu
    result.seconds = time.perf_counter() - start
    return result


def _fp16_auto(reference: Model, base: Model, *, sample_inputs: Any, sample_source: str | None,
               reference_path: str | None):
    """fp16 with the fewest nodes kept fp32 that bring parity within tolerance.

    The candidates are the nodes Float16Pass would convert (not the head), in topological order. Two block
    shapes are searched by bisection: a suffix kept fp32 (error made late, near the head) and a
    prefix kept fp32 (error made early and amplified by the layers after it); the one passing
    parity on the parity inputs (`sample_inputs`, else the seeded ones) with fewer fp32 nodes
    wins. Each try converts a fresh copy of `base` (the fp32 graph after every other pass); the
    reference runs once. A progress bar counts the tries (at most 2 + 2 * ceil(log2 n)).

    Returns:
        (model, the Float16Pass that made it, parity figures, notes: kept_fp32 node names,
        converted, candidates, tries, block "none"|"suffix"|"prefix"|"all").
    """
    import math

    from graphfix.convert.export import passes as P
    from graphfix.convert.export._parity import compare
    from graphfix.progress import bar

    probe = P.Float16Pass()
    always_fp32 = probe._kept_nodes(base.ir.graph)  # the head and what follows it
    candidates = [n.name for n in base.ir.graph if n not in always_fp32 and probe._wants_fp16(n)]
    n = len(candidates)
    tries: dict[tuple[int, int], tuple] = {}
    reference_outputs: dict = {}
    progress = bar(total=2 + 2 * math.ceil(math.log2(max(n, 1))), desc="fp16 auto", unit="try")

    def attempt(lo: int, hi: int) -> tuple:
        """fp16 with candidates[lo:hi] kept fp32."""
        key = (lo, hi) if lo < hi else (0, 0)
        if key not in tries:
            trial = _working_copy(base)
            half = P.Float16Pass(fp32_nodes=frozenset(candidates[key[0]:key[1]]))
            half(trial.ir)
            P.HygienePass()(trial.ir)
            parity = compare(reference, trial, fp16=True, sample_inputs=sample_inputs, sample_source=sample_source,
                             reference_path=reference_path, reference_cache=reference_outputs)
            tries[key] = (trial, half, parity)
            progress.update(1)
            logger.info("fp16 auto: nodes %d..%d of %d kept fp32 -> parity %s", key[0], key[1], n,
                        "ok" if parity["ok"] else "over")
        return tries[key]

    def ok(lo: int, hi: int) -> bool:
        return attempt(lo, hi)[2]["ok"]

    with progress:
        best = (0, 0, "none")
        if not ok(0, 0):
            best = (0, n, "all")
            if ok(0, n):
                lo, hi = 0, n  # suffix [cut:n]: the latest cut that passes
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (mid, hi) if ok(mid, n) else (lo, mid)
                if ok(lo, n) and n - lo < best[1] - best[0]:
                    best = (lo, n, "suffix")
                lo, hi = 0, n  # prefix [0:cut]: the earliest cut that passes
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    lo, hi = (lo, mid) if ok(0, mid) else (mid, hi)
                if ok(0, hi) and hi < best[1] - best[0]:
                    best = (0, hi, "prefix")
    trial, half, parity = attempt(best[0], best[1])
    kept = candidates[best[0]:best[1]]
    notes = {"kept_fp32": kept, "kept_fp32_count": len(kept), "converted": half.converted,
             "candidates": n, "tries": len(tries), "block": best[2]}
    return trial, half, parity, notes


def _preflight(model: Model, path: str | None) -> None:
    """Refuse models that cannot be deployed whatever the passes do (before the parity run)."""
    import onnx_ir as ir

    from graphfix.convert.export.passes.noop import dropout_is_training

    graph = model.ir.graph
    strings = [v.name for v in graph.initializers.values() if v.dtype == ir.DataType.STRING]
    strings += [v.name for v in [*graph.inputs, *graph.outputs] if v.dtype == ir.DataType.STRING]
    if strings:
        raise GraphfixError(
            f"STRING tensors cannot run on GPU: {', '.join(list(dict.fromkeys(strings))[:3])}", kind="not_ready",
            path=path,
            hint="keep label names in metadata (graphfix.labels), not in the graph",
        )
    for node in graph:
        if node.op_type == "Dropout" and dropout_is_training(node, model.opset) is not False:
            raise GraphfixError("Dropout is in training mode", kind="not_ready", path=path,
                                node=f"{node.name} (Dropout)", hint="export the source model in eval mode")
        if node.op_type == "BatchNormalization" and node.attributes.get_int("training_mode", 0):
            raise GraphfixError("BatchNormalization is in training mode", kind="not_ready", path=path,
                                node=f"{node.name} (BatchNormalization)", hint="export the source model in eval mode")


def _working_copy(model: Model) -> Model:
    """A clone to edit (tensors shared), topologically sorted first.

    onnx-ir cannot clone a graph whose nodes are out of order; such a (small, malformed) graph
    is copied through serialization instead.
    """
    from onnx_ir.passes.common import TopologicalSortPass

    try:
        work = model.copy()
    except Exception:  # an unsorted graph: onnx-ir's clone needs producers first
        import onnx_ir as ir

        work = Model(ir.serde.deserialize_model(ir.serde.serialize_model(model.ir)), path=model.path)
    TopologicalSortPass()(work.ir)
    return work


def _is_big(model: Model) -> bool:
    """True when the model holds external tensors or more than 256 MiB of weights."""
    import onnx_ir as ir

    total = 0
    for value in model.ir.graph.initializers.values():
        tensor = value.const_value
        if isinstance(tensor, ir.ExternalTensor):
            return True
        if tensor is not None and value.dtype != ir.DataType.STRING:
            total += tensor.nbytes
    return total > (256 << 20)


def _remove_written(path) -> None:
    for name in (os.fspath(path), os.fspath(path) + ".data"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
