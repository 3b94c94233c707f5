"""`train-head --train-from TENSOR`: fine-tune the layers between TENSOR and the head (torch).

1. The *segment* is every node between TENSOR and the head's features. Each of its inputs must be
   TENSOR, another segment node's output or an initializer: a branch that reads the backbone
   elsewhere (a skip connection across the cut) is refused, and so is an op outside `OPS`
   (every such node named in one error). Initializers the segment shares with nodes outside
   it are refused too (training them would change the backbone before TENSOR).
2. Activations at TENSOR are extracted once with onnxruntime (cached like the head features).
   The segment is rebuilt in torch from the ONNX nodes and checked against onnxruntime on the
   training rows (max abs diff <= 1e-4 x max(1, |features|), else refused: never a silently
   different network).
3. The head starts from the converged head-only solution on the segment's features
   (`graphfix.train.head_fit.fit_head`: standardised, CV-chosen L2). Then the segment's
   weights (Gemm/MatMul/Conv weights and biases, BatchNormalization scale and bias; running
   statistics stay frozen, Dropout is inference-mode) and the head are trained jointly with
   Adam on mini-batches: the loss of the head plus L2 towards the starting weights (L2-SP) at
   the chosen strength (chosen on the validation set when `--val` is given, else by CV on the
   training rows). The epoch with the best validation mAP is kept (`--val`, else a seeded
   10% of the training rows; epoch 0, the head-only solution, included: fine-tuning never ends
   worse on validation than head-only training). The history holds the mAP of every epoch.
4. The trained weights go back into the same ONNX initializers (same names, shapes, float32);
   every node and initializer before TENSOR stays bit-identical.
Seeded, one torch thread: the same inputs give the same bytes.
"""

from __future__ import annotations

__all__ = ["OPS", "finetune", "segment_nodes", "train_from_candidates"]

import logging
import math
from typing import Any

import numpy as np
import onnx_ir as ir

from graphfix.data.datasets import Dataset
from graphfix.data.features import extract_features, feature_model, find_head_gemm, find_value
from graphfix.metrics import mean_average_precision
from graphfix.train.head_fit import TrainConfig, fit_head
from graphfix.errors import GraphfixError
from graphfix.model import Model

logger = logging.getLogger(__name__)

#: Ops the segment may hold.
OPS = (
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip", "Flatten", "Reshape",
    "Dropout", "Identity", "Conv", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool",
)
#: Which inputs of an op are trained when they are initializers.
_TRAINED_INPUTS = {"Gemm": (1, 2), "MatMul": (0, 1), "Conv": (1, 2), "BatchNormalization": (1, 2), "Add": (0, 1),
                   "Sub": (0, 1), "Mul": (0, 1)}


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise GraphfixError("--train-from needs torch", kind="usage",
                            hint="pip install 'graphfix[train]' (the CPU wheel of torch is enough)") from exc
    return torch


def segment_nodes(model: Model, tensor: str) -> list[ir.Node]:
    """The nodes between `tensor` and the head's features, in graph order (see module docstring)."""
    start = find_value(model, tensor)
    features = find_head_gemm(model).inputs[0]
    if features is start:
        raise GraphfixError(f"{tensor!r} is the head's input: there is nothing to fine-tune before the head",
                            kind="usage", path=model.path, hint="leave out --train-from to train the head only")
    members: set[int] = set()
    stack = [features]
    problems: list[str] = []
    seen_values: set[int] = set()
    while stack:
        value = stack.pop()
        if value is start or id(value) in seen_values or value.const_value is not None:
            continue
        seen_values.add(id(value))
        node = value.producer()
        if node is None:
            problems.append(f"{value.name!r} is a graph input, not computed from {tensor!r}")
            continue
        if id(node) in members:
            continue
        if node.op_type == "Constant":
            continue
        members.add(id(node))
        stack.extend(v for v in node.inputs if v is not None)
    nodes = [n for n in model.ir.graph if id(n) in members]
    if not any(start in n.inputs for n in nodes):
        problems.append(f"the head's features do not depend on {tensor!r}")
    bad_ops = sorted({f"{n.name} ({n.op_type})" for n in nodes if n.op_type not in OPS or n.domain not in ("", "ai.onnx")})
    if bad_ops:
        problems.append(f"unsupported op{'s' if len(bad_ops) > 1 else ''} between {tensor!r} and the head: "
                        + ", ".join(bad_ops) + f" (supported: {', '.join(OPS)})")
    for n in nodes:
        if n.op_type in ("Dropout", "MaxPool") and len(n.outputs) > 1 and any(o.uses() for o in n.outputs[1:]):
            problems.append(f"{n.name} ({n.op_type}): its second output is used")
        for v in n.inputs:
            if v is not None and v.const_value is not None and any(id(u.node) not in members for u in v.uses()):
                problems.append(f"initializer {v.name!r} is also read before {tensor!r}")
    if problems:
        raise GraphfixError("; ".join(dict.fromkeys(problems)), kind="usage", path=model.path)
    return nodes


def train_from_candidates(model: Model, limit: int = 5) -> list[dict[str, Any]]:
    """Tensors `--train-from` accepts, nearest the head first, each with what it would train.

    Walks back over the nodes the head's features depend on (graph order reversed) and tries each
    tensor they compute with `segment_nodes`; a segment with no trained initializer is skipped.
    The walk stops after a node outside `OPS` (every tensor before it would include it) or at
    `limit` candidates, so it costs a few segment walks, not a training run.

    Returns:
        [{"tensor", "nodes" (segment size), "trains" (initializer names)}].
    """
    features = find_head_gemm(model).inputs[0]
    needed: set[int] = set()
    stack = [features]
    while stack:
        node = stack.pop().producer()
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(v for v in node.inputs if v is not None and v.const_value is None)
    found: list[dict[str, Any]] = []
    for node in reversed(list(model.ir.graph)):
        if id(node) not in needed or node.op_type == "Constant":
            continue
        for value in node.outputs:
            if value is features or not value.name or value.const_value is not None:
                continue
            try:
                segment = segment_nodes(model, value.name)
            except GraphfixError:
                continue
            trains = sorted({v.name for n in segment for i, v in enumerate(n.inputs)
                             if v is not None and v.const_value is not None and i in _TRAINED_INPUTS.get(n.op_type, ())
                             and v.const_value.dtype == ir.DataType.FLOAT})
            if trains:
                found.append({"tensor": value.name, "nodes": len(segment), "trains": trains})
        if len(found) >= limit or node.op_type not in OPS or node.domain not in ("", "ai.onnx"):
            break
    return found[:limit]


class _Segment:
    """The segment as a torch function of the activations at TENSOR, with its trained parameters."""

    def __init__(self, torch: Any, model: Model, nodes: list[ir.Node], start: ir.Value, features: ir.Value) -> None:
        self.torch = torch
        self.nodes, self.start, self.features = nodes, start, features
        self.opset = model.opset
        self.params: dict[str, Any] = {}
        self.initial: dict[str, np.ndarray] = {}
        self.consts: dict[str, Any] = {}
        for node in nodes:
            trained = _TRAINED_INPUTS.get(node.op_type, ())
            for i, v in enumerate(node.inputs):
                if v is None or v.const_value is None:
                    continue
                arr = v.const_value.numpy()
                if i in trained and arr.dtype == np.float32 and v.name not in self.params:
                    self.initial[v.name] = arr.copy()
                    self.params[v.name] = torch.nn.Parameter(torch.from_numpy(arr.copy()))
                elif v.name not in self.consts:
                    self.consts[v.name] = torch.from_numpy(np.array(arr))

    def __call__(self, x: Any) -> Any:
        env: dict[int, Any] = {id(self.start): x}

        def get(v: ir.Value | None) -> Any:
            if v is None:
                return None
            if id(v) in env:
                return env[id(v)]
            return self.params.get(v.name, self.consts.get(v.name))

        for node in self.nodes:
            env[id(node.outputs[0])] = _apply(self.torch, node, [get(v) for v in node.inputs], self.opset)
        return env[id(self.features)]


def _attr(node: ir.Node, name: str, default: Any) -> Any:
    a = node.attributes.get(name)
    return default if a is None else a.value


def _pad_pairs(pads: list[int], dims: int) -> list[int]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] as torch F.pad pairs (last dim first)."""
    out: list[int] = []
    for d in reversed(range(dims)):
        out += [int(pads[d]), int(pads[d + dims])]
    return out


def _apply(torch: Any, node: ir.Node, ins: list[Any], opset: int) -> Any:
    F = torch.nn.functional
    op = node.op_type
    if op in ("Identity", "Dropout"):
        return ins[0]
    if op == "Relu":
        return F.relu(ins[0])
    if op == "LeakyRelu":
        return F.leaky_relu(ins[0], float(_attr(node, "alpha", 0.01)))
    if op == "Sigmoid":
        return torch.sigmoid(ins[0])
    if op == "Tanh":
        return torch.tanh(ins[0])
    if op == "Clip":
        lo = ins[1] if len(ins) > 1 and ins[1] is not None else _attr(node, "min", None)
        hi = ins[2] if len(ins) > 2 and ins[2] is not None else _attr(node, "max", None)
        lo = float(lo) if lo is not None else None
        hi = float(hi) if hi is not None else None
        return torch.clamp(ins[0], lo, hi)
    if op in ("Add", "Sub", "Mul"):
        return {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul}[op](ins[0], ins[1])
    if op == "MatMul":
        return torch.matmul(ins[0], ins[1])
    if op == "Gemm":
        a = ins[0].T if _attr(node, "transA", 0) else ins[0]
        b = ins[1].T if _attr(node, "transB", 0) else ins[1]
        y = float(_attr(node, "alpha", 1.0)) * (a @ b)
        if len(ins) > 2 and ins[2] is not None:
            y = y + float(_attr(node, "beta", 1.0)) * ins[2]
        return y
    if op == "Flatten":
        axis = int(_attr(node, "axis", 1))
        axis = axis % ins[0].dim() if axis < 0 else axis
        return ins[0].reshape(int(np.prod(ins[0].shape[:axis])) if axis else 1, -1)
    if op == "Reshape":
        shape = [int(s) for s in ins[1].tolist()]
        if not _attr(node, "allowzero", 0):
            shape = [ins[0].shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return ins[0].reshape(shape)
    if op == "GlobalAveragePool":
        return ins[0].mean(dim=tuple(range(2, ins[0].dim())), keepdim=True)
    if op == "GlobalMaxPool":
        return ins[0].amax(dim=tuple(range(2, ins[0].dim())), keepdim=True)
    if op == "BatchNormalization":
        x, scale, bias, mean, var = ins[:5]
        shape = [1, -1] + [1] * (x.dim() - 2)
        eps = float(_attr(node, "epsilon", 1e-5))
        return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * scale.reshape(shape) + bias.reshape(shape)
    dims = ins[0].dim() - 2
    if _attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        raise GraphfixError(f"{node.name} ({op}): auto_pad is not supported by --train-from", kind="usage")
    pads = list(_attr(node, "pads", [0] * (2 * dims)))
    strides = list(_attr(node, "strides", [1] * dims))
    if op == "Conv":
        x = F.pad(ins[0], _pad_pairs(pads, dims)) if any(pads) else ins[0]
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
        return conv(x, ins[1], ins[2] if len(ins) > 2 else None, stride=strides,
                    dilation=list(_attr(node, "dilations", [1] * dims)), groups=int(_attr(node, "group", 1)))
    kernel = list(_attr(node, "kernel_shape", []))
    ceil = bool(_attr(node, "ceil_mode", 0))
    if op == "MaxPool":
        x = F.pad(ins[0], _pad_pairs(pads, dims), value=-math.inf) if any(pads) else ins[0]
        pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
        return pool(x, kernel, strides, 0, list(_attr(node, "dilations", [1] * dims)), ceil_mode=ceil)
    if op == "AveragePool":
        if pads[:dims] != pads[dims:]:
            raise GraphfixError(f"{node.name} (AveragePool): asymmetric pads are not supported by --train-from", kind="usage")
        pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        return pool(ins[0], kernel, strides, pads[:dims], ceil_mode=ceil,
                    count_include_pad=bool(_attr(node, "count_include_pad", 0)))
    raise AssertionError(op)  # segment_nodes refuses every other op


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
             lr: float, batch_size: int, features_kw: dict[str, Any], progress: Any = None) -> tuple[Model, dict[str, Any]]:
    """Fine-tune the segment after `tensor` and the head (see module docstring): (new model, history)."""
    if cfg.loss == "softmax":
        raise GraphfixError("--train-from trains the bce and asl losses (not softmax)", kind="usage")
    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise GraphfixError("--epochs >= 0, --train-batch-size >= 1 and --lr > 0 are needed", kind="usage")
    torch = _import_torch()
    nodes = segment_nodes(model, tensor)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(int(cfg.seed))
        return _finetune(torch, model, nodes, train, val, cfg, tensor, epochs, lr, batch_size, features_kw, progress)
    finally:
        torch.set_num_threads(threads)


def _activations(model: Model, data: Dataset, tensor: str, features_kw: dict[str, Any]) -> np.ndarray:
    flat = extract_features(model, data, tensor=tensor, **features_kw)
    fm = feature_model(model, tensor)
    probe = fm.run(next(iter(data.batches(1))))[fm.output_names[0]]
    return np.asarray(flat).reshape((len(flat), *probe.shape[1:]))


def _finetune(torch: Any, model: Model, nodes: list[ir.Node], train: Dataset, val: Dataset | None, cfg: TrainConfig,
              tensor: str, epochs: int, lr: float, batch_size: int, features_kw: dict[str, Any], progress: Any):
    from graphfix.train.head_graph import remove_count_head, remove_labels_output, set_head

    seg = _Segment(torch, model, nodes, find_value(model, tensor), find_head_gemm(model).inputs[0])
    a_train = _activations(model, train, tensor, features_kw)
    head_feats = extract_features(model, train, **features_kw)
    with torch.no_grad():
        ours = _forward(torch, seg, a_train)
    scale = max(1.0, float(np.abs(head_feats).max()))
    diff = float(np.abs(ours - np.asarray(head_feats)).max())
    if diff > 1e-4 * scale:
        raise GraphfixError(f"the torch rebuild of the layers after {tensor!r} differs from onnxruntime "
                            f"(max abs diff {diff:.3g})", kind="failed", path=model.path)
    if val is not None:
        a_val, y_val = _activations(model, val, tensor, features_kw), val.y
        rows = np.arange(len(train))
        fit = fit_head(ours, train.y, cfg, _forward(torch, seg, a_val), y_val, progress=progress)
        val_source = "validation set"
    else:
        order = np.random.default_rng(cfg.seed).permutation(len(train))
        n_val = max(1, len(train) // 10)
        rows, held = np.sort(order[n_val:]), np.sort(order[:n_val])
        a_val, y_val = a_train[held], train.y[held]
        fit = fit_head(ours[rows], train.y[rows], cfg, progress=progress)
        val_source = f"held-out tenth of the training rows ({n_val}, seeded)"
    lam = float(fit.history["weight_decay"])
    feats_sd = np.asarray(ours[rows], np.float64).std(axis=0)
    feats_sd = np.where(feats_sd > 1e-6, feats_sd, 1.0).astype(np.float32)
    w = torch.nn.Parameter(torch.from_numpy(fit.weight.copy()))
    b = torch.nn.Parameter(torch.from_numpy(fit.bias.copy()))
    loss_fn = _torch_loss(torch, cfg, train.y[rows])
    params = [w, b, *seg.params.values()]
    start = {k: torch.from_numpy(v) for k, v in seg.initial.items()}
    sd_t = torch.from_numpy(feats_sd)
    opt = torch.optim.Adam(params, lr=lr)
    xt = torch.from_numpy(np.ascontiguousarray(a_train[rows], dtype=np.float32))
    yt = torch.from_numpy(train.y[rows].astype(np.float32))

    def val_map() -> float:
        with torch.no_grad():
            z = _forward(torch, seg, a_val) @ w.detach().numpy().T + b.detach().numpy()
        value = mean_average_precision(y_val, 1.0 / (1.0 + np.exp(-z)))
        return -math.inf if math.isnan(value) else float(value)

    best = (val_map(), 0, _snapshot(w, b, seg))
    curve = [round(best[0], 6)]
    gen = torch.Generator().manual_seed(int(cfg.seed))
    n = len(xt)
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            opt.zero_grad()
            z = seg(xt[idx]) @ w.T + b
            penalty = ((w * sd_t) ** 2).sum() + sum(((seg.params[k] - start[k]) ** 2).sum() for k in seg.params)
            loss = loss_fn(z, yt[idx]) + lam / 2 * penalty
            loss.backward()
            opt.step()
        value = val_map()
        curve.append(round(value, 6))
        if progress is not None:
            progress.update(1)
        if value > best[0]:
            best = (value, epoch, _snapshot(w, b, seg))
    _, best_epoch, (wb, bb, seg_state) = best
    if not (np.isfinite(wb).all() and all(np.isfinite(v).all() for v in seg_state.values())):
        raise GraphfixError("fine-tuning diverged (non-finite weights)", kind="failed", hint="lower --lr")
    new = model.copy()
    remove_labels_output(new)
    remove_count_head(new)
    inits = new.ir.graph.initializers
    for name, arr in seg_state.items():
        inits[name].const_value = ir.tensor(arr.astype(np.float32), name=name)
    set_head(new, wb, bb)
    history = {
        **fit.history,
        "train_from": tensor,
        "segment": [f"{n.name} ({n.op_type})" for n in nodes],
        "trained_initializers": sorted(seg_state),
        "epochs": epochs,
        "best_epoch": best_epoch,
        "epoch_val_mAP": curve,
        "val_source": val_source,
        "val_mAP": curve[best_epoch],
        "head_only_val_mAP": curve[0],
        "selected_by": fit.history["selected_by"],
    }
    return new, history


def _forward(torch: Any, seg: _Segment, a: np.ndarray, chunk: int = 1024) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for i in range(0, len(a), chunk):
            x = torch.from_numpy(np.ascontiguousarray(a[i : i + chunk], dtype=np.float32))
            outs.append(seg(x).reshape(len(x), -1).numpy())
    return np.concatenate(outs)


def _snapshot(w: Any, b: Any, seg: _Segment) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    return (w.detach().numpy().copy(), b.detach().numpy().copy(),
            {k: v.detach().numpy().copy() for k, v in seg.params.items()})
