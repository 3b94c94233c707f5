"""Head finding: the softmax (if any) at a graph output and the linear classifier before it.

Patterns, each a small matcher that returns a `Head` or the reason it does not fit:

1. Gemm -> [Flatten/Reshape/Dropout/Identity]* -> Softmax|LogSoftmax -> [pass-through]* -> output
2. MatMul + Add (constant weight and bias) -> ... -> Softmax|LogSoftmax
3. 1x1 Conv -> [Relu] -> GlobalAveragePool (or a full-size AveragePool), or a 1x1 Conv on
   globally pooled features -> ... -> Softmax
4. the same classifiers feeding an output with no softmax (nets that end in a bare linear layer).

A graph with more than one softmax head is ambiguous; nothing matching is "no head". Both
errors list every candidate and why it was rejected; `features=NAME` overrides the choice.
"""

from __future__ import annotations

__all__ = ["Head", "Located", "find_head", "locate_head", "feature_candidates", "PASS_THROUGH", "SOFTMAX_OPS", "normalized_axes"]

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from graphfix.errors import GraphfixError
from graphfix.irutil import const_array, downstream_nodes, fresh_name, graph_names, input_at
from graphfix.model import Model

logger = logging.getLogger(__name__)

#: Ops skipped between the classifier, the softmax and the output.
PASS_THROUGH = frozenset({"Flatten", "Reshape", "Dropout", "Identity", "Squeeze"})
#: Softmax-like ops (MXNet SoftmaxOutput and Caffe Softmax import as Softmax). Sigmoid is
#: accepted too, so a multi-label head can be swapped again.
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax", "Sigmoid"})


@dataclass
class Head:
    """The classification head of a model.

    Attributes:
        kind: "gemm", "matmul_add", "conv" or "features" (user override).
        softmax: Name of the Softmax/LogSoftmax node, or None for a bare linear head.
        classifier: Names of the classifier nodes (Gemm; MatMul+Add; Conv[+Relu]+GAP).
        features: Name of the tensor the classifier reads (the backbone output).
        features_shape: Its shape (symbolic dims as strings), if known.
        num_features: F, the feature count the new Gemm reads (after pooling for conv heads).
        num_classes: K of the old classifier, if known.
        outputs: Graph outputs that the head produces (replaced by swap_head).
        removed: Names of every node swap_head removes.
        needs_pooling: True when the features are a spatial map (GAP + Flatten inserted).
        parts: The tensors the old classifier read: one, or two for a distillation head over
            two tensors (`features` is then their concatenation, added by graphfix).
    """

    kind: str
    softmax: str | None
    classifier: list[str]
    features: str
    features_shape: list[Any] | None
    num_features: int
    num_classes: int | None
    outputs: list[str]
    removed: list[str] = field(default_factory=list)
    needs_pooling: bool = False
    parts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "softmax": self.softmax,
            "classifier": self.classifier,
            "features": self.features,
            "features_shape": self.features_shape,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "outputs": self.outputs,
            "removed": self.removed,
            "needs_pooling": self.needs_pooling,
            "parts": self.parts,
        }


# ----- small helpers ---------------------------------------------------------------------------
def _shape(value: ir.Value) -> list[Any] | None:
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else (d.value if d.value is not None else None) for d in value.shape]


def _label(node: ir.Node) -> str:
    return f"{node.name or '<unnamed>'} ({node.op_type})"


def _single_use(value: ir.Value, graph: ir.Graph) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def normalized_axes(node: ir.Node, rank: int, opset: int) -> list[int]:
    """Axes a Softmax/LogSoftmax normalises over, with the opset's axis semantics.

    Before opset 13 the input is coerced to 2-D at `axis` (default 1), so every axis from
    `axis` on is normalised together; from 13 only `axis` (default -1) is.
    """
    attr = node.attributes.get("axis")
    if opset < 13:
        axis = attr.as_int() if attr is not None else 1
        axis = axis + rank if axis < 0 else axis
        return list(range(axis, rank))
    axis = attr.as_int() if attr is not None else -1
    return [axis + rank if axis < 0 else axis]


def _walk_back(value: ir.Value) -> ir.Value:
    """Follow pass-through producers backwards to the first other value."""
    while True:
        prod = value.producer()
        if prod is None or prod.op_type not in PASS_THROUGH or prod.domain not in ("", "ai.onnx"):
            return value
        value = prod.inputs[0]


# ----- classifier matchers ------------------------------------------------------------------
@dataclass
class _Classifier:
    """A linear classifier as matched: its nodes, the tensors it reads and its exact map.

    `weight` [K, F] and `bias` [K] are what the nodes compute: logits = features @ weight.T +
    bias, where features is `inputs[0]`, or the concatenation of `inputs` along axis 1 (a
    distillation head over two tensors). Conv heads map the pooled [N, F] features.
    """

    kind: str
    nodes: list[ir.Node]
    inputs: list[ir.Value]
    weight: np.ndarray
    bias: np.ndarray
    needs_pooling: bool

    @property
    def num_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])


def _f32(array: np.ndarray) -> np.ndarray:
    return np.asarray(array, dtype=np.float32)


def _attr_int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return attr.as_int() if attr is not None else default


def _attr_float(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return attr.as_float() if attr is not None else default


def _match_gemm(node: ir.Node) -> _Classifier | str:
    w = const_array(input_at(node, 1))
    if w is None or w.ndim != 2:
        return "Gemm weight is not a constant 2-D tensor"
    if _attr_int(node, "transA", 0):
        return "Gemm with transA=1 is not a classifier layout"
    w = _f32(w) if _attr_int(node, "transB", 0) else _f32(w).T
    c = input_at(node, 2)
    bias = const_array(c)
    if c is not None and bias is None:
        return "Gemm bias is computed, not a constant"
    k = w.shape[0]
    if bias is not None and bias.size not in (1, k):
        return f"Gemm bias of {bias.size} values does not broadcast over {k} classes"
    b = np.zeros(k, np.float32) if bias is None else np.broadcast_to(_f32(bias).reshape(-1), (k,)).copy()
    return _Classifier("gemm", [node], [node.inputs[0]], _attr_float(node, "alpha", 1.0) * w,
                       _attr_float(node, "beta", 1.0) * b, False)


def _matmul_weight(mm: ir.Node) -> np.ndarray | str:
    w = const_array(input_at(mm, 1))
    if w is None or w.ndim != 2:
        return "MatMul weight is not a constant 2-D tensor"
    shape = _shape(mm.inputs[0])
    if shape is not None and len(shape) != 2:
        return f"MatMul reads a rank-{len(shape)} tensor (a per-token projection, not a classifier)"
    return _f32(w).T


def _match_matmul(node: ir.Node) -> _Classifier | str:
    """A bias-free Linear exported as a bare MatMul."""
    w = _matmul_weight(node)
    if isinstance(w, str):
        return w
    return _Classifier("matmul", [node], [node.inputs[0]], w, np.zeros(w.shape[0], np.float32), False)


def _match_add(node: ir.Node) -> _Classifier | str:
    """The sum of two linear classifiers (a distillation head), or MatMul + constant bias."""
    if (pair := _match_pair(node, 1.0, [node])) is not None:
        return pair
    return _match_add_single(node)


def _match_scaled(node: ir.Node) -> _Classifier | str:
    """(head(x) + head_dist(x')) / 2, or * 0.5: the average of two linear classifiers."""
    value, scale = node.inputs[0], const_array(input_at(node, 1))
    if scale is None or scale.size != 1:
        return f"{node.op_type} by a non-constant or non-scalar"
    factor = float(scale.reshape(-1)[0])
    factor = 1.0 / factor if node.op_type == "Div" else factor
    if not np.isfinite(factor) or value is None:
        return f"{node.op_type} by {float(scale.reshape(-1)[0])}"
    prod = value.producer()
    if prod is None or prod.op_type != "Add" or not _single_use(value, node.graph):
        return f"{node.op_type} is not the average of two linear classifiers"
    pair = _match_pair(prod, factor, [prod, node])
    return pair if pair is not None else f"{node.op_type} is not the average of two linear classifiers"


def _match_pair(add: ir.Node, factor: float, nodes: list[ir.Node]) -> _Classifier | None:
    """Two linear classifiers summed (and scaled by `factor`): one linear layer over the shared
    features, or over both features concatenated."""
    if len(add.inputs) != 2 or any(v is None or v.producer() is None for v in add.inputs):
        return None
    parts = []
    for value in add.inputs:
        if not _single_use(value, add.graph):
            return None
        found, _ = _match_classifier(value, pairs=False)
        if found is None or found.needs_pooling or len(found.inputs) != 1:
            return None
        parts.append(found)
    a, b = parts
    if a.num_classes != b.num_classes:
        return None
    bias = factor * (a.bias + b.bias)
    members = a.nodes + b.nodes + nodes
    if a.inputs[0] is b.inputs[0]:
        return _Classifier("distilled", members, a.inputs, factor * (a.weight + b.weight), bias, False)
    weight = factor * np.concatenate([a.weight, b.weight], axis=1)
    return _Classifier("distilled", members, a.inputs + b.inputs, weight, bias, False)


def _is_1x1_conv(node: ir.Node) -> str | None:
    w = const_array(input_at(node, 1))
    if w is None or w.ndim != 4:
        return "Conv weight is not a constant 4-D tensor"
    if w.shape[2:] != (1, 1):
        return f"Conv kernel is {w.shape[2]}x{w.shape[3]}, not 1x1"
    if _attr_int(node, "group", 1) != 1:
        return "grouped Conv is not a classifier"
    if input_at(node, 2) is not None and const_array(input_at(node, 2)) is None:
        return "Conv bias is computed, not a constant"
    return None


def _conv_map(node: ir.Node) -> tuple[np.ndarray, np.ndarray]:
    w = _f32(const_array(input_at(node, 1)))
    b = const_array(input_at(node, 2))
    return w.reshape(w.shape[0], -1), (np.zeros(w.shape[0], np.float32) if b is None else _f32(b).reshape(-1))


def _reduce_axes(node: ir.Node, rank: int) -> list[int] | None:
    """Normalised axes of a Reduce* node (attribute before opset 18, input from 18), or None
    when they are computed; all axes when none are given."""
    axes_in = input_at(node, 1)
    if axes_in is not None:
        axes = const_array(axes_in)
        if axes is None:
            return None
        axes = [int(a) for a in axes.reshape(-1)]
    elif "axes" in node.attributes:
        axes = list(node.attributes["axes"].as_ints())
    else:
        axes = [] if _attr_int(node, "noop_with_empty_axes", 0) else list(range(rank))
    return sorted(a + rank if a < 0 else a for a in axes)


def _is_global_average(node: ir.Node) -> str | None:
    """None if `node` averages over the whole spatial map (GlobalAveragePool, ReduceMean over
    every axis after the channels, or an AveragePool whose unpadded kernel covers the known
    input size), else why not."""
    if node.op_type == "GlobalAveragePool":
        return None
    shape = _shape(node.inputs[0])
    if node.op_type == "ReduceMean":
        if shape is None or len(shape) < 3:
            return "ReduceMean over an input of unknown rank" if shape is None else "ReduceMean over a rank-2 tensor"
        axes = _reduce_axes(node, len(shape))
        if axes != list(range(2, len(shape))):
            return f"ReduceMean over axes {axes}, not the spatial axes {list(range(2, len(shape)))}"
        return None
    kernel = node.attributes["kernel_shape"].as_ints() if "kernel_shape" in node.attributes else None
    pads = node.attributes["pads"].as_ints() if "pads" in node.attributes else []
    auto_pad = node.attributes["auto_pad"].as_string() if "auto_pad" in node.attributes else "NOTSET"
    if shape is None or kernel is None or any(not isinstance(d, int) for d in shape[2:]):
        return "AveragePool over an input of unknown size"
    if list(kernel) != list(shape[2:]) or any(pads) or auto_pad not in ("NOTSET", "VALID"):
        return f"AveragePool kernel {list(kernel)} does not cover the {shape[2:]} input"
    return None


def _match_pool(node: ir.Node) -> _Classifier | str:
    """Global average pooling after [Relu] after a 1x1 Conv (SqueezeNet style)."""
    if (why := _is_global_average(node)) is not None:
        return why
    src = _walk_back(node.inputs[0]).producer()
    nodes = [node]
    if src is not None and src.op_type == "Relu":
        if not _single_use(src.outputs[0], node.graph):
            return "Relu before the pooling has other consumers"
        nodes.insert(0, src)
        src = _walk_back(src.inputs[0]).producer()
    if src is None or src.op_type != "Conv":
        return f"{node.op_type} is global pooling, not fed by a 1x1 Conv (the backbone's features)"
    if (why := _is_1x1_conv(src)) is not None:
        return why
    if not _single_use(src.outputs[0], node.graph):
        return "Conv output has other consumers"
    w, b = _conv_map(src)
    return _Classifier("conv", [src, *nodes], [src.inputs[0]], w, b, True)


def _match_conv(node: ir.Node) -> _Classifier | str:
    """A 1x1 Conv applied after global pooling (its input is [N, F, 1, 1])."""
    if (why := _is_1x1_conv(node)) is not None:
        return why
    shape = _shape(node.inputs[0])
    if shape is None or len(shape) != 4 or shape[2:] != [1, 1]:
        return "1x1 Conv does not read a globally pooled [N, F, 1, 1] tensor"
    w, b = _conv_map(node)
    return _Classifier("conv", [node], [node.inputs[0]], w, b, True)


_MATCHERS = {
    "Gemm": _match_gemm,
    "MatMul": _match_matmul,
    "Add": _match_add,
    "Div": _match_scaled,
    "Mul": _match_scaled,
    "GlobalAveragePool": _match_pool,
    "AveragePool": _match_pool,
    "ReduceMean": _match_pool,
    "Conv": _match_conv,
}


def _match_classifier(value: ir.Value, *, pairs: bool = True) -> tuple[_Classifier | None, str]:
    """Walk back from `value` over pass-through ops to a classifier; (classifier, why not).
    `pairs=False` matches single linear layers only (the parts of a distillation head)."""
    src = _walk_back(value)
    prod = src.producer()
    if prod is None:
        return None, f"tensor {src.name!r} is a graph input or constant"
    matcher = _MATCHERS.get(prod.op_type)
    if not pairs and prod.op_type in ("Div", "Mul"):
        matcher = None
    if matcher is None or prod.domain not in ("", "ai.onnx"):
        return None, (f"{_label(prod)} is not a linear classifier (Gemm, MatMul [+ Add], 1x1 Conv + global "
                      "pooling, or the average of two of them)")
    found = _match_add_single(prod) if not pairs and prod.op_type == "Add" else matcher(prod)
    if isinstance(found, str):
        return None, f"{_label(prod)}: {found}"
    return found, ""


def _match_add_single(node: ir.Node) -> _Classifier | str:
    """MatMul + a constant bias of the MatMul's output width."""
    for i, inp in enumerate(node.inputs[:2]):
        prod = inp.producer() if inp is not None else None
        if prod is not None and prod.op_type == "MatMul":
            w = _matmul_weight(prod)
            b = const_array(input_at(node, 1 - i))
            if isinstance(w, str) or b is None or b.size != w.shape[0] or not _single_use(prod.outputs[0], node.graph):
                return "Add bias is not a constant of the MatMul's output width" if not isinstance(w, str) else w
            return _Classifier("matmul_add", [prod, node], [prod.inputs[0]], w, _f32(b).reshape(-1), False)
    return "Add is not fed by a MatMul"


# ----- the search ----------------------------------------------------------------------------
@dataclass
class _Candidate:
    output: ir.Value
    softmax: ir.Node | None
    classifier: _Classifier | None
    reason: str

    def describe(self) -> str:
        where = f"output {self.output.name!r}"
        if self.softmax is not None:
            where += f" via {_label(self.softmax)}"
        return f"{where}: {self.reason}" if self.reason else where


def _examine_output(out: ir.Value, opset: int) -> _Candidate:
    src = _walk_back(out)
    prod = src.producer()
    softmax = prod if prod is not None and prod.op_type in SOFTMAX_OPS and prod.domain in ("", "ai.onnx") else None
    if softmax is None:
        cls, why = _match_classifier(out)
        if cls is None:
            return _Candidate(out, None, None, f"no Softmax and {why}")
        return _Candidate(out, None, cls, "")
    shape = _shape(softmax.inputs[0]) if softmax.op_type != "Sigmoid" else None  # Sigmoid: no axis
    if shape is not None:
        axes = normalized_axes(softmax, len(shape), opset)
        if 1 not in axes and len(shape) > 1:
            return _Candidate(out, softmax, None, f"softmax over axes {axes}, not the class axis 1")
        if opset >= 13 and len(shape) > 2 and any(d != 1 for d in shape[2:]):
            return _Candidate(out, softmax, None, "per-position softmax over a spatial map (not an image classifier)")
    cls, why = _match_classifier(softmax.inputs[0])
    if cls is None:
        return _Candidate(out, softmax, None, why)
    return _Candidate(out, softmax, cls, "")


def _infer_shapes(model: ir.Model) -> None:
    from onnx_ir.passes.common import ShapeInferencePass

    ShapeInferencePass(strict_mode=False)(model)


def feature_candidates(graph: ir.Graph, limit: int = 5) -> list[tuple[str, list[Any]]]:
    """Tensors most likely to be the backbone's features, best first: (name, shape).

    Ranked by shape (a static [N, F] that a Gemm/MatMul with constant weights reads first, then
    other [N, F], then a pooled [N, C, 1, 1], then a spatial map;
    tensors of other ranks, which `--features` refuses, are left out), then by how close to a
    graph output they are. A tensor as wide as an output (the old class scores) ranks last.
    """
    widths = {o.shape[1] for o in graph.outputs if o.shape is not None and len(o.shape) >= 2
              and isinstance(o.shape[1], int)}
    distance: dict[ir.Value, int] = {}
    frontier = [o for o in graph.outputs]
    for o in frontier:
        distance[o] = 0
    while frontier:  # breadth-first from the outputs towards the inputs
        nxt = []
        for value in frontier:
            prod = value.producer()
            for inp in prod.inputs if prod is not None else ():
                if inp is not None and inp not in distance and not inp.is_initializer():
                    distance[inp] = distance[value] + 1
                    nxt.append(inp)
        frontier = nxt
    ranked = []
    for value, dist in distance.items():
        shape = _shape(value)
        if value.producer() is None or shape is None or len(shape) not in (2, 4) or not isinstance(shape[1], int):
            continue
        if value.producer().op_type in SOFTMAX_OPS:
            continue
        if shape[1] in widths or shape[1] <= 1:
            kind = 4
        elif len(shape) == 2:
            kind = 0 if _read_by_linear(value) else 1
        else:
            kind = 2 if shape[2:] == [1, 1] else 3
        ranked.append((kind, dist, value.name, shape))
    ranked.sort(key=lambda r: (r[0], r[1], r[2]))
    return [(name, shape) for _, _, name, shape in ranked[:limit]]


def _read_by_linear(value: ir.Value) -> bool:
    """True when a Gemm or MatMul with a constant 2-D weight reads `value` (a classifier input)."""
    for use in value.uses():
        node = use.node
        if node.op_type in ("Gemm", "MatMul") and use.idx == 0:
            w = const_array(input_at(node, 1))
            if w is not None and w.ndim == 2:
                return True
    return False


def _candidates_hint(graph: ir.Graph) -> str:
    found = feature_candidates(graph)
    if not found:
        return "no [N, F] or [N, C, H, W] tensor with static F found; name one with --features NAME"
    listed = ", ".join(f"{name} {shape}" for name, shape in found)
    return f"candidate feature tensors, best first: {listed}; try --features {found[0][0]}"


@dataclass
class Located:
    """A head found inside a specific (working copy of a) model: node objects, not names.

    `old_weight` [K, F] / `old_bias` [K] are the old classifier's exact map over `features`
    (None for a `--features` head).
    """

    head: Head
    features: ir.Value
    outputs: list[ir.Value]
    remove: list[ir.Node]
    classifier: list[ir.Node]
    old_weight: np.ndarray | None = None
    old_bias: np.ndarray | None = None


def _locate_features(model: Model, name: str) -> Located:
    graph = model.ir.graph
    values = {v.name: v for n in graph for v in n.outputs}
    values.update({v.name: v for v in graph.inputs})
    if name not in values:
        raise GraphfixError(
            f"--features {name!r}: no such tensor", kind="usage", path=model.path,
            hint=_candidates_hint(graph),
        )
    feat = values[name]
    shape = _shape(feat)
    if shape is None or len(shape) not in (2, 4) or not isinstance(shape[1], int):
        raise GraphfixError(
            f"--features {name!r} has shape {shape}; expected [N, F] or [N, F, H, W] with static F",
            kind="usage", path=model.path, hint=_candidates_hint(graph),
        )
    downstream = downstream_nodes([feat])
    outputs = [o for o in graph.outputs if o.producer() is not None and o.producer() in downstream]
    if not outputs:
        raise GraphfixError(f"--features {name!r} feeds no graph output", kind="usage", path=model.path)
    head = Head(
        kind="features", softmax=None, classifier=[], features=name, features_shape=shape,
        num_features=int(shape[1]), num_classes=None, outputs=[o.name for o in outputs],
        removed=sorted(n.name for n in downstream), needs_pooling=len(shape) == 4,
    )
    return Located(head, feat, outputs, list(downstream), [])


def locate_head(model: Model, *, features: str | None = None) -> Located:
    """Find the head in `model` itself (shapes are inferred in place); see `find_head`."""
    _infer_shapes(model.ir)
    if features is not None:
        return _locate_features(model, features)
    opset = model.opset
    candidates = [_examine_output(out, opset) for out in model.ir.graph.outputs]
    # Outputs read through the same classifier (logits and probabilities, say) are one head.
    groups: dict[ir.Node, list[_Candidate]] = {}
    for c in candidates:
        if c.classifier is not None:
            groups.setdefault(c.classifier.nodes[-1], []).append(c)
    heads = [sorted(g, key=lambda c: c.softmax is None)[0] for g in groups.values()]
    with_softmax = [c for c in heads if c.softmax is not None]
    if len(with_softmax) > 1:
        raise GraphfixError(
            f"ambiguous head: {len(with_softmax)} softmax outputs ("
            + "; ".join(c.describe() for c in with_softmax) + ")",
            kind="no_head", path=model.path, hint="pick one with --features NAME",
        )
    if with_softmax:
        chosen = with_softmax[0]
    elif len(heads) == 1:
        chosen = heads[0]
    elif len(heads) > 1:
        raise GraphfixError(
            f"ambiguous head: {len(heads)} outputs end in a linear layer ("
            + "; ".join(c.describe() for c in heads) + ")",
            kind="no_head", path=model.path, hint="pick one with --features NAME",
        )
    else:
        raise GraphfixError(
            "no classification head found (" + "; ".join(c.describe() for c in candidates) + ")",
            kind="no_head", path=model.path, hint=_candidates_hint(model.ir.graph),
        )
    cls = chosen.classifier
    assert cls is not None
    for value in cls.inputs:
        shape = _shape(value)
        rank_ok = shape is None or len(shape) == (4 if cls.needs_pooling else 2)
        if not rank_ok:
            raise GraphfixError(
                f"classifier input {value.name!r} has rank {len(shape)}; expected "
                + ("[N, F, H, W]" if cls.needs_pooling else "[N, F]"),
                kind="no_head", path=model.path, hint=_candidates_hint(model.ir.graph),
            )
    features = cls.inputs[0] if len(cls.inputs) == 1 else _concat(model.ir.graph, cls.inputs)
    last = cls.nodes[-1].outputs[0]
    downstream = downstream_nodes([last])
    outputs = [o for o in model.ir.graph.outputs if o is last or o.producer() in downstream]
    remove = list(dict.fromkeys(cls.nodes + [n for n in model.ir.graph if n in downstream]))
    head = Head(
        kind=cls.kind,
        softmax=chosen.softmax.name if chosen.softmax is not None else None,
        classifier=[n.name for n in cls.nodes],
        features=features.name,
        features_shape=_shape(features),
        num_features=cls.num_features,
        num_classes=cls.num_classes,
        outputs=[o.name for o in outputs],
        removed=[n.name for n in remove],
        needs_pooling=cls.needs_pooling,
        parts=[v.name for v in cls.inputs],
    )
    return Located(head, features, outputs, remove, cls.nodes, cls.weight, cls.bias)


def _concat(graph: ir.Graph, parts: list[ir.Value]) -> ir.Value:
    """A Concat of a distillation head's two feature tensors along axis 1, added to `graph`
    (the new head reads it; its exact equivalent of the old pair is the concatenated map)."""
    name = fresh_name(graph_names(graph), "graphfix_head.concat")
    node = ir.node("Concat", parts, attributes={"axis": 1}, name=name)
    out = node.outputs[0]
    out.name = name
    out.dtype = ir.DataType.FLOAT
    shapes = [_shape(p) for p in parts]
    if all(s is not None and isinstance(s[1], int) for s in shapes):
        out.shape = ir.Shape([parts[0].shape[0], sum(s[1] for s in shapes)])
    graph.insert_after(max((p.producer() for p in parts), key=lambda n: list(graph).index(n)), node)
    return out


def find_head(model: Model, *, features: str | None = None) -> Head:
    """Find the classification head of `model`.

    Args:
        model: The model (not modified: the search runs on a copy).
        features: Name of the tensor the new head should read, overriding the search.

    Raises:
        GraphfixError: kind "no_head" when no output ends in a classifier, or when several
            softmax heads make the choice ambiguous; the message lists every candidate.
    """
    return locate_head(model.copy(), features=features).head
