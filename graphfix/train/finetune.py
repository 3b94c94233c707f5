"""`train-head --train-from TENSOR`: fine-tune the layers between TENSOR and the head (torch).

1. The *segment* is every node between TENSOR and the head's features. TENSOR must be a cut: every
   data path from the input to the head passes through it (a skip connection across it is refused;
   Shape/Size of earlier tensors are folded at the batch's shape). An op outside
   `graphfix.train.torch_ops.OPS` is refused, every such node named in one error. `-N` names the
   cut before the last N blocks (`train_from_candidates`).
2. Activations at TENSOR (and the head's features) are extracted once with onnxruntime into one
   array (`_Activations`): float16 when the first batch shows it exact enough (FP16_TOLERANCE,
   FP16_RANGE), else float32; in memory below the memory budget, a memory-mapped unlinked
   temporary file above it (`graphfix.data.arrays.allocate`), read back in seeded mini-batches.
   The segment is rebuilt in torch from the ONNX nodes and checked against onnxruntime on every
   training batch (max abs diff <= 1e-4 x max(1, |features|), else refused: never a silently
   different network).
3. The head starts from the converged head-only solution on onnxruntime's features
   (`graphfix.train.head_fit.fit_head`: standardised, CV-chosen L2). Then the segment's
   weights (Gemm/MatMul/Conv weights and biases, BatchNormalization scale and bias; running
   statistics frozen unless `bn_stats="update"`, Dropout is inference-mode) and the head (on
   standardised features) are trained jointly with Adam on mini-batches: the loss of the head
   plus L2 towards the starting weights (L2-SP) at the chosen strength (chosen on the validation
   set when `--val` is given, else by CV on the training rows). The epoch with the best
   validation mAP is kept (`--val`, else a seeded 10% of the training rows; epoch 0, the
   head-only solution, included: fine-tuning never ends worse on validation than head-only
   training). The history holds the mAP of every epoch. Ctrl-C re-raises (nothing is written)
   unless `keep_best_on_interrupt`.
4. The trained weights (and updated BN statistics) go back into the same ONNX initializers (same
   names, shapes, float32; one also read before TENSOR is untied as `<name>.finetuned`);
   everything before TENSOR stays bit-identical. Adam steps are relative to each layer's weight
   RMS; training stops after `PATIENCE` epochs without a better validation mAP.
Seeded, one torch thread: the same inputs give the same bytes.
"""

from __future__ import annotations

__all__ = ["BN_STATS", "OPS", "finetune", "resolve_train_from", "segment_nodes", "train_from_candidates"]

import logging
import math
from typing import Any

import numpy as np
import onnx_ir as ir

from graphfix.data.datasets import Dataset
from graphfix.data.arrays import allocate, memory_budget
from graphfix.data.features import activate, feature_model, find_head_gemm, find_value
from graphfix.metrics import mean_average_precision
from graphfix.train.head_fit import TrainConfig, fit_head
from graphfix.train.torch_ops import OPS, TRAINED_INPUTS, WEIGHT_OPS, apply, batch_norm
from graphfix.errors import GraphfixError
from graphfix.model import Model

logger = logging.getLogger(__name__)

#: Early stopping: epochs without a better validation mAP before fine-tuning stops.
PATIENCE = 5
#: `--bn-stats`: BatchNormalization running statistics kept (default) or updated while fine-tuning.
BN_STATS = ("frozen", "update")
#: Activations are stored float16 when, on the first batch, the segment's features from the
#: rounded activations are within this many standard deviations (each feature's, over the batch)
#: of the float32 ones ...
FP16_TOLERANCE = 1e-2
#: ... and no value exceeds this (float16's largest is 65504: 16x headroom for later batches).
FP16_RANGE = 4096.0


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise GraphfixError("--train-from needs torch", kind="usage",
                            hint="pip install 'graphfix[train]' (the CPU wheel of torch is enough)") from exc
    return torch


def _data_inputs(node: ir.Node) -> list[ir.Value]:
    """The inputs a node's values depend on: none for Shape/Size (only the shape is read)."""
    if node.op_type in ("Shape", "Size"):
        return []
    return [v for v in node.inputs if v is not None and v.const_value is None]


def _trained(node: ir.Node) -> list[ir.Value]:
    """The float32 initializers of `node` that fine-tuning trains."""
    return [v for i, v in enumerate(node.inputs) if v is not None and v.const_value is not None
            and i in TRAINED_INPUTS.get(node.op_type, ()) and v.const_value.dtype == ir.DataType.FLOAT]


def segment_nodes(model: Model, tensor: str) -> list[ir.Node]:
    """The nodes between `tensor` and the head's features, in graph order (see module docstring)."""
    start = find_value(model, tensor)
    features = find_head_gemm(model).inputs[0]
    if features is start:
        raise GraphfixError(f"{tensor!r} is the head's input: there is nothing to fine-tune before the head",
                            kind="usage", path=model.path, hint="leave out --train-from to train the head only")
    if start.producer() is None:
        raise GraphfixError(f"{tensor!r} is a graph input: give a tensor the backbone computes", kind="usage",
                            path=model.path, hint="`graphfix inspect MODEL --train-from` lists them")
    members: set[int] = set()
    stack = [features]
    bypass: list[str] = []
    while stack:
        value = stack.pop()
        if value is start:
            continue
        node = value.producer()
        if node is None:
            bypass.append(value.name)
            continue
        if id(node) in members:
            continue
        members.add(id(node))
        stack.extend(_data_inputs(node))  # Shape/Size read only a shape: folded, not a path through the data
    nodes = [n for n in model.ir.graph if id(n) in members]
    problems: list[str] = []
    if bypass:
        problems.append(f"{tensor!r} is not a cut: the head also reads the backbone through a path that bypasses it "
                        f"(from {', '.join(repr(b) for b in dict.fromkeys(bypass))})")
    elif not any(start in n.inputs for n in nodes):
        problems.append(f"the head's features do not depend on {tensor!r}")
    bad_ops = sorted({f"{n.name} ({n.op_type})" for n in nodes if n.op_type not in OPS or n.domain not in ("", "ai.onnx")})
    if bad_ops:
        problems.append(f"unsupported op{'s' if len(bad_ops) > 1 else ''} between {tensor!r} and the head: "
                        + ", ".join(bad_ops))
    for n in nodes:
        if n.op_type in ("Dropout", "MaxPool", "BatchNormalization", "LayerNormalization") and \
                any(o.uses() for o in n.outputs[1:]):
            problems.append(f"{n.name} ({n.op_type}): its second output is used")
    if problems:
        raise GraphfixError("; ".join(dict.fromkeys(problems)), kind="usage", path=model.path,
                            hint="`graphfix inspect MODEL --train-from` lists the tensors it accepts")
    return nodes


def _cuts(model: Model) -> list[tuple[ir.Value, list[ir.Node]]]:
    """Every cut tensor (one every data path from the input to the head passes through), nearest the
    head first, with the nodes after it: one sweep over the graph order, where a tensor is a cut
    when it is the only computed value still to be read."""
    features = find_head_gemm(model).inputs[0]
    needed: set[int] = set()
    stack = [features]
    while stack:
        node = stack.pop().producer()
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(_data_inputs(node) + [v for v in node.inputs if v is not None and v.const_value is None
                                               and node.op_type in ("Shape", "Size")])
    order = [n for n in model.ir.graph if id(n) in needed]
    live: set[int] = {id(v) for v in model.ir.graph.inputs}
    last: dict[int, int] = {}
    for i, node in enumerate(order):
        if any(id(v) in live for v in _data_inputs(node)):
            live.update(id(o) for o in node.outputs)
        for v in _data_inputs(node):
            last[id(v)] = i
    last[id(features)] = len(order)
    open_ = {id(v) for v in model.ir.graph.inputs if id(v) in last}
    found = []
    for i, node in enumerate(order):
        open_.update(id(o) for o in node.outputs if id(o) in live and id(o) in last)
        open_ -= {k for k in open_ if last[k] == i}
        if len(open_) == 1 and node.outputs[0] is not features:
            (key,) = open_
            value = next((o for o in node.outputs if id(o) == key), None)
            if value is not None and value.name:
                found.append((value, order[i + 1:]))
    return found[::-1]


def train_from_candidates(model: Model, limit: int | None = 10) -> list[dict[str, Any]]:
    """Tensors `--train-from` accepts, nearest the head first, each with what it would train.

    A candidate is a cut tensor with a trained initializer after it. Each one says how many
    parameters it trains and the activation size per image at it (float32, from shape inference);
    `block` is N for the cut `--train-from -N` names (the nearest-head cut for each new set of
    layer weights: the last N blocks), else None.

    Returns:
        [{"tensor", "nodes", "trains", "parameters", "activation_values", "activation_bytes", "block"}].
    """
    from onnx_ir.passes.common import ShapeInferencePass

    shapes: dict[str, Any] = {}
    work = model.copy()
    try:
        ShapeInferencePass(strict_mode=False)(work.ir)
        shapes = {v.name: v.shape for n in work.ir.graph for v in n.outputs}
    except Exception:  # noqa: BLE001 - sizes are informative; a model ONNX cannot infer still lists its cuts
        pass
    found: list[dict[str, Any]] = []
    seen_weights: list[frozenset[str]] = []
    for value, after in _cuts(model):
        trained = {v.name: v for n in after for v in _trained(n)}
        if not trained:
            continue
        weights = frozenset(v.name for n in after if n.op_type in WEIGHT_OPS for v in _trained(n))
        block = None
        if weights and weights not in seen_weights:
            seen_weights.append(weights)
            block = len(seen_weights)
        shape = shapes.get(value.name)
        per_image = None
        if shape is not None and all(isinstance(d, int) for d in list(shape)[1:]):
            per_image = int(np.prod(list(shape)[1:]))
        found.append({"tensor": value.name, "nodes": len(after), "trains": sorted(trained),
                      "parameters": int(sum(v.const_value.size for v in trained.values())),
                      "activation_values": per_image, "activation_bytes": None if per_image is None else 4 * per_image,
                      "block": block})
    return found if limit is None else found[:limit]


def resolve_train_from(model: Model, spec: str) -> str:
    """`--train-from` as a tensor name: `-N` is the cut before the last N blocks (see train_from_candidates)."""
    try:
        n = int(spec)
    except ValueError:
        return spec
    if n >= 0:
        raise GraphfixError(f"--train-from {spec}: a tensor name or -N (the last N blocks)", kind="usage", path=model.path)
    blocks = [c for c in train_from_candidates(model, limit=None) if c["block"] is not None]
    if -n > len(blocks):
        raise GraphfixError(f"--train-from {spec}: the model has {len(blocks)} block{'s' if len(blocks) != 1 else ''} "
                            "with trainable weights before the head", kind="usage", path=model.path,
                            hint="`graphfix inspect MODEL --train-from` lists them")
    return blocks[-n - 1]["tensor"]


class _Segment:
    """The segment as a torch function of the activations at TENSOR, with its trained parameters.

    `shapes` folds Shape/Size of tensors before the cut: name -> (value at batch 1, at batch 2), so
    a batch of B gives value1 + (value2 - value1) * (B - 1).
    """

    def __init__(self, torch: Any, model: Model, nodes: list[ir.Node], start: ir.Value, features: ir.Value,
                 shapes: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, *, bn_update: bool = False) -> None:
        self.torch = torch
        self.nodes, self.start, self.features = nodes, start, features
        self.opset = model.opset
        self.shapes = shapes or {}
        self.bn_update = bn_update
        self.training = False  # with bn_update: batch statistics, running mean/var updated
        #: the BatchNormalization running mean/var initializers that bn_update changes
        self.statistics = sorted({v.name for n in nodes if n.op_type == "BatchNormalization"
                                  for v in n.inputs[3:5] if v is not None and v.const_value is not None}) \
            if bn_update else []
        self.params: dict[str, Any] = {}
        self.initial: dict[str, np.ndarray] = {}
        self.consts: dict[str, Any] = {}
        for node in nodes:
            trained = {id(v) for v in _trained(node)}
            for v in node.inputs:
                if v is None or v.const_value is None:
                    continue
                arr = v.const_value.numpy()
                if id(v) in trained and v.name not in self.params:
                    self.initial[v.name] = arr.copy()
                    self.params[v.name] = torch.nn.Parameter(torch.from_numpy(arr.copy()))
                elif v.name not in self.consts and v.name not in self.params:
                    self.consts[v.name] = torch.from_numpy(np.array(arr))

    def __call__(self, x: Any) -> Any:
        env: dict[int, Any] = {id(self.start): x}
        batch = x.shape[0]

        def get(v: ir.Value | None) -> Any:
            if v is None:
                return None
            if id(v) in env:
                return env[id(v)]
            return self.params.get(v.name, self.consts.get(v.name))

        for node in self.nodes:
            folded = self.shapes.get(node.outputs[0].name)
            if folded is not None:
                env[id(node.outputs[0])] = self.torch.from_numpy(folded[0] + (folded[1] - folded[0]) * (batch - 1))
                continue
            ins = [get(v) for v in node.inputs]
            if node.op_type == "BatchNormalization" and self.training and self.bn_update:
                env[id(node.outputs[0])] = batch_norm(self.torch, node, ins, update=True)
                continue
            for out, value in zip(node.outputs, apply(self.torch, node, ins, self.opset)):
                env[id(out)] = value
        return env[id(self.features)]


def _folded_shapes(model: Model, nodes: list[ir.Node], start: ir.Value, sample: np.ndarray) -> dict:
    """Shape/Size nodes of the segment that read a tensor before the cut: their values at batch 1 and
    2 (onnxruntime on `sample`), keyed by output name."""
    produced = {id(o) for n in nodes for o in n.outputs} | {id(start)}
    folds = [n for n in nodes if n.op_type in ("Shape", "Size") and id(n.inputs[0]) not in produced]
    if not folds:
        return {}
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    probe = model.copy()
    graph = probe.ir.graph
    names = [n.outputs[0].name for n in folds]
    values = {v.name: v for n in graph for v in n.outputs}
    graph.outputs.clear()
    for name in names:
        graph.outputs.append(values[name])
    RemoveUnusedNodesPass()(probe.ir)
    probe.ir.metadata_props.clear()
    one = sample[:1]
    runs = [probe.run(np.concatenate([one] * b)) for b in (1, 2)]
    return {name: (np.asarray(runs[0][name]), np.asarray(runs[1][name])) for name in names}


def _torch_loss(torch: Any, cfg: TrainConfig, y: np.ndarray):
    F = torch.nn.functional
    if cfg.loss == "bce":
        pw = None
        if cfg.pos_weight == "balanced":
            pos = y.sum(axis=0).astype(np.float64)
            pw = torch.from_numpy(np.clip((len(y) - pos) / np.maximum(pos, 1.0), 1.0, 1000.0).astype(np.float32))
        return lambda z, t: F.binary_cross_entropy_with_logits(z, t, pos_weight=pw, reduction="sum") / len(t)

    def asl(z: Any, t: Any) -> Any:
        p = torch.sigmoid(z)
        log_p = F.logsigmoid(z)
        pm = (p - cfg.asl_clip).clamp(min=0) if cfg.asl_clip > 0 else p
        log_1m = torch.log1p(-pm) if cfg.asl_clip > 0 else F.logsigmoid(-z)
        pos = -((1 - p) ** cfg.asl_gamma_pos) * log_p
        neg = -(pm**cfg.asl_gamma_neg) * log_1m
        return (t * pos + (1 - t) * neg).sum() / len(t)

    return asl


def finetune(model: Model, train: Dataset, val: Dataset | None, cfg: TrainConfig, *, tensor: str, epochs: int,
             lr: float, batch_size: int, features_kw: dict[str, Any], progress: Any = None,
             bn_stats: str = "frozen", keep_best_on_interrupt: bool = False) -> tuple[Model, dict[str, Any]]:
    """Fine-tune the segment after `tensor` and the head (see module docstring): (new model, history).

    Args:
        bn_stats: "frozen" (BatchNormalization uses and keeps its running statistics) or "update"
            (batch statistics in training, running mean/var updated with torch's momentum and
            written back).
        keep_best_on_interrupt: On Ctrl-C (KeyboardInterrupt) during the epochs, return the best
            epoch so far (`interrupted_epoch` in the history) instead of re-raising.
    """
    if cfg.loss in ("softmax", "squared"):
        raise GraphfixError(f"--train-from trains the bce and asl losses (not {cfg.loss})", kind="usage")
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise GraphfixError("--epochs >= 0, --train-batch-size >= 1 and --lr > 0 are needed", kind="usage")
    if bn_stats not in BN_STATS:
        raise GraphfixError(f"--bn-stats {bn_stats!r}: one of {', '.join(BN_STATS)}", kind="usage")
    for data in (train, val):
        if data is not None and data.features is not None:
            raise GraphfixError("a features folder holds the head's input features only; --train-from needs images",
                                kind="usage", path=data.source)
    torch = _import_torch()
    tensor = resolve_train_from(model, tensor)
    nodes = segment_nodes(model, tensor)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(int(cfg.seed))
        return _finetune(torch, model, nodes, train, val, cfg, tensor, epochs, lr, batch_size, features_kw, progress,
                         bn_stats == "update", keep_best_on_interrupt)
    finally:
        torch.set_num_threads(threads)


class _Activations:
    """Activations at the cut and the head's features (onnxruntime) of every row of the data sets,
    extracted once, in one array each within one shared memory budget (`graphfix.data.arrays.allocate`:
    in memory below it, an unlinked temporary file memory-mapped above it, so nothing is left on
    disk after an error or Ctrl-C). Activations are stored float16 when the first batch shows that
    exact enough (`fp16_error` <= FP16_TOLERANCE and values far inside float16's range), else
    float32. Every batch also checks the torch rebuild against onnxruntime (in float32)."""

    def __init__(self, torch: Any, model: Model, seg: _Segment, tensor: str, datasets: list[Dataset],
                 features_kw: dict[str, Any]) -> None:
        from graphfix.progress import bar

        self.torch, self.model, self.seg, self.tensor = torch, model, seg, tensor
        fm = feature_model(model)
        cut = find_value(fm, tensor)
        if cut.dtype is None:
            cut.dtype = ir.DataType.FLOAT
        fm.ir.graph.outputs.append(cut)
        self.sess = fm.session()
        self.input = self.sess.get_inputs()[0].name
        self.datasets = datasets
        self.batch = int(features_kw.get("batch_size", 64))
        self.rows = sum(len(d) for d in datasets)
        self.max_diff = 0.0
        self.fp16_error: float | None = None
        show = features_kw.get("progress")
        self.bar = bar(total=self.rows, desc="activations", unit="img") if show is not False else None
        try:
            if not self._fill(np.float16):  # a later batch left float16's range: start again in float32
                logger.info("activations at %s leave float16's range: stored float32", tensor)
                self._fill(np.float32)
        finally:
            if self.bar is not None:
                self.bar.close()

    def _fill(self, dtype: Any) -> bool:
        done = 0
        self.acts = self.feats = None
        if self.bar is not None:
            self.bar.reset()
        for data in self.datasets:
            for batch in data.batches(self.batch):
                feats, acts = self.sess.run(None, {self.input: np.ascontiguousarray(batch, dtype=np.float32)})
                feats = np.asarray(feats, np.float32).reshape(len(batch), -1)
                acts = np.asarray(acts, np.float32)
                ours = self._check(acts, feats)
                if self.acts is None:
                    if dtype == np.float16:
                        dtype = self._storage_dtype(acts, ours, feats)
                    # one budget for both arrays: the features (the smaller) first, the activations in what is left
                    self.feats, _ = allocate((self.rows, feats.shape[1]), None, np.float32)
                    left = memory_budget() - (0 if isinstance(self.feats, np.memmap) else self.feats.nbytes)
                    self.acts, _ = allocate((self.rows, *acts.shape[1:]), None, dtype, budget=left)
                if self.acts.dtype == np.float16 and np.abs(acts).max(initial=0.0) > FP16_RANGE:
                    return False
                self.acts[done : done + len(acts)] = acts
                self.feats[done : done + len(acts)] = feats
                done += len(acts)
                if self.bar is not None:
                    self.bar.update(len(acts))
        self.dtype = str(self.acts.dtype)
        return True

    def _check(self, acts: np.ndarray, feats: np.ndarray) -> np.ndarray:
        """The rebuild's features of one batch; refused beyond 1e-4 x max(1, |features|)."""
        ours = _forward(self.torch, self.seg, acts, len(acts))
        diff = float(np.abs(ours - feats).max(initial=0.0))
        self.max_diff = max(self.max_diff, diff)
        if diff > 1e-4 * max(1.0, float(np.abs(feats).max(initial=0.0))):
            raise GraphfixError(f"the torch rebuild of the layers after {self.tensor!r} differs from onnxruntime "
                                f"(max abs diff {diff:.3g})", kind="failed", path=self.model.path)
        return ours

    def _storage_dtype(self, acts: np.ndarray, ours: np.ndarray, feats: np.ndarray) -> Any:
        """float16 when the first batch's features from float16-rounded activations stay within
        FP16_TOLERANCE of the float32 ones in units of each feature's spread in the batch (the head
        trains on standardised features: an error small next to |features| can still be a whole
        standard deviation of a feature that barely varies, and the head's weight on it is then
        large) and its values are within FP16_RANGE, else float32."""
        if not np.isfinite(acts).all() or np.abs(acts).max(initial=0.0) > FP16_RANGE:
            return np.float32
        rounded = _forward(self.torch, self.seg, acts.astype(np.float16).astype(np.float32), len(acts))
        floor = 1e-6 * max(1.0, float(np.abs(feats).max(initial=0.0)))
        spread = np.maximum(feats.astype(np.float64).std(axis=0), floor)
        self.fp16_error = float((np.abs(rounded - ours) / spread).max(initial=0.0))
        return np.float16 if self.fp16_error <= FP16_TOLERANCE else np.float32

    def take(self, rows: np.ndarray) -> Any:
        """float32 torch tensor of the activations of `rows` (indices into the concatenated data sets)."""
        return self.torch.from_numpy(np.asarray(self.acts[rows], dtype=np.float32))


def _finetune(torch: Any, model: Model, nodes: list[ir.Node], train: Dataset, val: Dataset | None, cfg: TrainConfig,
              tensor: str, epochs: int, lr: float, batch_size: int, features_kw: dict[str, Any], progress: Any,
              bn_update: bool, keep_best: bool):
    from graphfix.train.head_graph import remove_count_head, remove_labels_output, set_head

    start = find_value(model, tensor)
    shapes = _folded_shapes(model, nodes, start, np.asarray(next(iter(train.batches(1)))))
    seg = _Segment(torch, model, nodes, start, find_head_gemm(model).inputs[0], shapes, bn_update=bn_update)
    cache = _Activations(torch, model, seg, tensor, [train] + ([val] if val is not None else []), features_kw)
    n_train = len(train)
    y_all = np.concatenate([train.y] + ([val.y] if val is not None else [])).astype(np.float32)
    if val is not None:
        rows, held = np.arange(n_train), np.arange(n_train, n_train + len(val))
        fit = fit_head(cache.feats[:n_train], train.y, cfg, cache.feats[n_train:], val.y, progress=progress)
        val_source = "validation set"
    else:
        order = np.random.default_rng(cfg.seed).permutation(n_train)
        n_val = max(1, n_train // 10)
        rows, held = np.sort(order[n_val:]), np.sort(order[:n_val])
        fit = fit_head(_take_rows(cache.feats, rows), train.y[rows], cfg, progress=progress)
        val_source = f"held-out tenth of the training rows ({n_val}, seeded)"
    trainer = _Trainer(torch, seg, cache, y_all, rows, held, fit, cfg, lr, batch_size, train.y[rows])
    state0 = trainer.snapshot()[2]
    head0 = (fit.weight.astype(np.float32), fit.bias.astype(np.float32))
    best = (trainer.val_map(head0), 0, (*head0, state0))  # epoch 0: the head-only solution, bit for bit
    train_map = trainer.train_map(head0)
    curve = [round(best[0], 6)]
    interrupted = None
    ebar = _epoch_bar(progress, epochs, trainer.batches_per_epoch)
    try:
        for epoch in range(1, epochs + 1):
            if ebar is not None:
                ebar.set_description_str(f"fine-tune epoch {epoch}/{epochs}", refresh=False)
            try:
                trainer.epoch(ebar)
            except KeyboardInterrupt:
                if not keep_best:
                    raise
                interrupted = epoch
                break
            value = trainer.val_map()
            curve.append(round(value, 6))
            if progress is not None:
                progress.update(1)
            if value > best[0]:
                best = (value, epoch, trainer.snapshot())
            if ebar is not None:
                ebar.set_postfix_str(f"val mAP {value:.4f}, best {best[0]:.4f} @ epoch {best[1]}")
            if epoch - best[1] >= PATIENCE:
                break
    finally:
        if ebar is not None:
            ebar.close()
    _, best_epoch, (wb, bb, seg_state) = best
    if not (np.isfinite(wb).all() and all(np.isfinite(v).all() for v in seg_state.values())):
        raise GraphfixError("fine-tuning diverged (non-finite weights)", kind="failed", hint="lower --lr")
    new = model.copy()
    remove_labels_output(new)
    remove_count_head(new)
    _write_back(model, new, nodes, seg_state)
    set_head(new, wb, bb)
    history = {
        **fit.history,
        "train_from": tensor,
        "segment": [f"{n.name} ({n.op_type})" for n in nodes],
        "trained_initializers": sorted(k for k in seg_state if k in seg.params),
        "bn_stats": "update" if bn_update else "frozen",
        "updated_statistics": sorted(k for k in seg_state if k not in seg.params),
        "activations": {"dtype": cache.dtype, "fp16_error": cache.fp16_error, "bytes": int(cache.acts.nbytes),
                        "memory_mapped": isinstance(cache.acts, np.memmap), "rebuild_max_diff": cache.max_diff},
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "epochs_run": len(curve) - 1,
        "interrupted_epoch": interrupted,
        "best_epoch": best_epoch,
        "epoch_val_mAP": curve,
        "val_source": val_source,
        "val_mAP": curve[best_epoch],
        "head_only_val_mAP": curve[0],
        # 1.0: the head alone already separates the training rows, so fine-tuning has nothing left
        # to fit and can only overfit (the Caffe resnet_block teacher task: 1600 features, 400 rows)
        "head_only_train_mAP": round(train_map, 6),
        "selected_by": fit.history["selected_by"],
    }
    return new, history


def _epoch_bar(progress: Any, epochs: int, batches: int) -> Any:
    """The fine-tuning bar (batches of every epoch, the epoch and validation mAP beside it), or None
    when the caller shows no bars (`progress` None or disabled: -q, --json, no terminal)."""
    if progress is None or getattr(progress, "disable", True) or epochs == 0:
        return None
    from graphfix.progress import bar

    return bar(total=epochs * batches, desc="fine-tune", unit="batch")


class _Trainer:
    """Adam on the segment's parameters and the head, mini-batches streamed from the activation cache."""

    def __init__(self, torch: Any, seg: _Segment, cache: _Activations, y_all: np.ndarray, rows: np.ndarray,
                 held: np.ndarray, fit: Any, cfg: TrainConfig, lr: float, batch_size: int, y_train: np.ndarray) -> None:
        self.torch, self.seg, self.cache, self.y_all = torch, seg, cache, y_all
        self.rows, self.held, self.batch_size = rows, held, batch_size
        self.lam = float(fit.history["weight_decay"])
        # the head is trained on centred features divided by their overall spread (one number: the
        # root mean of the starting features' variances), so Adam's steps mean the same whatever the
        # features' scale. Not one sd per feature: fine-tuning moves the features, and a feature that
        # barely varied at the start would be amplified by its tiny sd (logits in the thousands,
        # float32 probabilities saturated at 0 and 1: squeezenet_v1.1's teacher task)
        mu, sd = _mean_sd(cache.feats, rows)
        spread = float(np.sqrt(np.mean(np.square(sd))))
        if not spread > 1e-6 * max(1.0, float(np.abs(mu).max(initial=0.0))):
            spread = 1.0
        self.mu, self.sd = mu.astype(np.float32), np.float32(spread)
        w, b = fit.weight.astype(np.float64), fit.bias.astype(np.float64)
        self.w = torch.nn.Parameter(torch.from_numpy((w * spread).astype(np.float32)))  # standardised weights
        self.b = torch.nn.Parameter(torch.from_numpy((b + w @ mu).astype(np.float32)))
        self.mu_t, self.sd_t = torch.from_numpy(self.mu), torch.tensor(self.sd)
        self.loss_fn = _torch_loss(torch, cfg, y_train)
        self.start = {k: torch.from_numpy(v) for k, v in seg.initial.items()}

        # Adam moves every weight by about lr per step whatever its scale: each layer's step is relative to
        # its own size (lr x RMS of its starting weights), so small conv weights are not overwritten.
        def rel(arr: np.ndarray) -> float:
            return lr * max(float(np.sqrt(np.mean(np.square(arr, dtype=np.float64)))), 1e-3)

        groups = [{"params": [self.w, self.b], "lr": lr}] + [
            {"params": [p], "lr": rel(seg.initial[k])} for k, p in seg.params.items()]
        self.opt = torch.optim.Adam(groups, lr=lr)
        self.gen = torch.Generator().manual_seed(int(cfg.seed))
        n = len(rows)
        # batch-statistics BN cannot normalise one row: a last batch of one joins the one before
        self.bounds = list(range(0, n, batch_size)) + [n]
        if seg.bn_update and len(self.bounds) > 2 and n - self.bounds[-2] == 1:
            del self.bounds[-2]
        self.batches_per_epoch = len(self.bounds) - 1

    def epoch(self, ebar: Any = None) -> None:
        """One pass over the training rows in a seeded order."""
        torch = self.torch
        order = self.rows[torch.randperm(len(self.rows), generator=self.gen).numpy()]
        self.seg.training = True
        try:
            for lo, hi in zip(self.bounds[:-1], self.bounds[1:]):
                idx = np.sort(order[lo:hi])  # sorted: sequential reads of a memory-mapped cache
                self.step(self.cache.take(idx), torch.from_numpy(self.y_all[idx]))
                if ebar is not None:
                    ebar.update(1)
        finally:
            self.seg.training = False

    def step(self, x: Any, y: Any) -> None:
        """One Adam step on a batch: the loss of the head plus L2-SP towards the starting weights."""
        self.opt.zero_grad()
        z = ((self.seg(x) - self.mu_t) / self.sd_t) @ self.w.T + self.b
        params = self.seg.params
        penalty = (self.w**2).sum() + sum(((params[k] - self.start[k]) ** 2).sum() for k in params)
        loss = self.loss_fn(z, y) + self.lam / 2 * penalty
        loss.backward()
        self.opt.step()

    def val_map(self, head: tuple[np.ndarray, np.ndarray] | None = None) -> float:
        """Validation mAP of the segment and head now (evaluation mode: running BN statistics), or of
        `head` on onnxruntime's features (the starting segment: what head-only training gives)."""
        if head is not None:
            return self._map(_scores(self.cache.feats, self.held, *head), self.held)
        w, b = self.head()
        wt = w.T.astype(np.float64)
        z = np.concatenate([_forward(self.torch, self.seg, self.cache.take(self.held[i : i + self.batch_size])) @ wt + b
                            for i in range(0, len(self.held), self.batch_size)])
        return self._map(z, self.held)

    def head(self) -> tuple[np.ndarray, np.ndarray]:
        """The head now, on raw features: (weight [L, F], bias [L]) float32."""
        v, c = self.w.detach().numpy().astype(np.float64), self.b.detach().numpy().astype(np.float64)
        w = v / self.sd
        return w.astype(np.float32), (c - w @ self.mu).astype(np.float32)

    def train_map(self, head: tuple[np.ndarray, np.ndarray]) -> float:
        """Training-rows mAP of `head` on onnxruntime's features."""
        return self._map(_scores(self.cache.feats, self.rows, *head), self.rows)

    def _map(self, z: np.ndarray, rows: np.ndarray) -> float:
        """mAP of logits `z` scored as the written model scores: float32 probabilities (large logits
        saturate to 0 and 1 and tie there, as they do in onnxruntime's Sigmoid)."""
        value = mean_average_precision(self.y_all[rows], activate(z, "Sigmoid"))
        return -math.inf if math.isnan(value) else float(value)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Copies of the head, the segment's parameters and (BN update) its running statistics."""
        state = {k: v.detach().numpy().copy() for k, v in self.seg.params.items()}
        state.update({k: self.seg.consts[k].numpy().copy() for k in self.seg.statistics})
        return (*self.head(), state)


def _write_back(model: Model, new: Model, nodes: list[ir.Node], state: dict[str, np.ndarray]) -> None:
    """Trained weights into `new` (a copy of `model`): the same initializers, or, for one the layers
    before the cut also read (an exporter's deduplicated constant), a new `<name>.finetuned` that
    only the segment reads, so everything before the cut stays bit-identical."""
    inits = new.ir.graph.initializers
    index = {id(n): i for i, n in enumerate(model.ir.graph)}
    new_nodes = list(new.ir.graph)
    members = {id(new_nodes[index[id(n)]]) for n in nodes}
    for name, arr in state.items():
        value = inits[name]
        # np.array, not ascontiguousarray: that makes a 0-d weight [1] (same values, another shape)
        tensor = ir.tensor(np.array(arr, dtype=np.float32, order="C").reshape(value.const_value.shape), name=name)
        outside = [u for u in value.uses() if id(u.node) not in members]
        if not outside:
            value.const_value = tensor
            continue
        fresh = f"{name}.finetuned"
        while fresh in inits:
            fresh += "_"
        tensor.name = fresh
        copy = ir.Value(name=fresh, shape=value.shape, type=value.type, const_value=tensor)
        new.ir.graph.register_initializer(copy)
        for use in list(value.uses()):
            if id(use.node) in members:
                use.node.replace_input_with(use.idx, copy)


#: Rows per chunk when features are read back (a memory-mapped array is never copied whole).
CHUNK_ROWS = 4096


def _take_rows(feats: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`feats[rows]` as a new array within the memory budget (allocate), filled chunk by chunk."""
    out, _ = allocate((len(rows), feats.shape[1]), None, feats.dtype)
    for i in range(0, len(rows), CHUNK_ROWS):
        out[i : i + CHUNK_ROWS] = feats[rows[i : i + CHUNK_ROWS]]
    return out


def _mean_sd(feats: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (float64) of `feats[rows]`, two passes over chunks."""
    chunks = [rows[i : i + CHUNK_ROWS] for i in range(0, len(rows), CHUNK_ROWS)]
    mu = sum(np.asarray(feats[c], np.float64).sum(axis=0) for c in chunks) / len(rows)
    var = sum(np.square(np.asarray(feats[c], np.float64) - mu).sum(axis=0) for c in chunks) / len(rows)
    return mu, np.sqrt(var)


def _scores(feats: np.ndarray, rows: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Logits [len(rows), L] (float64) of the head (w, b) on `feats[rows]`, chunk by chunk."""
    wt = w.T.astype(np.float64)
    return np.concatenate([np.asarray(feats[rows[i : i + CHUNK_ROWS]], np.float64) @ wt + b
                           for i in range(0, len(rows), CHUNK_ROWS)])


def _forward(torch: Any, seg: _Segment, a: Any, chunk: int = 256) -> np.ndarray:
    """The segment's features [N, F] of activations `a` (array or tensor), without gradients."""
    outs = []
    with torch.no_grad():
        for i in range(0, len(a), chunk):
            x = a[i : i + chunk]
            x = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            outs.append(seg(x).reshape(len(x), -1).numpy())
    return np.concatenate(outs)
