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

__all__ = ["Head", "Located", "find_head", "locate_head", "PASS_THROUGH", "SOFTMAX_OPS", "normalized_axes"]

import logging
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from graphfix.errors import GraphfixError
from graphfix.irutil import const_array, downstream_nodes
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
    kind: str
    nodes: list[ir.Node]
    features: ir.Value
    num_features: int | None
    num_classes: int | None
    needs_pooling: bool


def _match_gemm(node: ir.Node) -> _Classifier | str:
    w = const_array(node.inputs[1] if len(node.inputs) > 1 else None)
    if w is None or w.ndim != 2:
        return "Gemm weight is not a constant 2-D tensor"
    if node.attributes.get("transA") is not None and node.attributes["transA"].as_int():
        return "Gemm with transA=1 is not a classifier layout"
    trans_b = node.attributes.get("transB") is not None and node.attributes["transB"].as_int() == 1
    k, f = (w.shape[0], w.shape[1]) if trans_b else (w.shape[1], w.shape[0])
    return _Classifier("gemm", [node], node.inputs[0], int(f), int(k), False)


def _match_add(node: ir.Node) -> _Classifier | str:
    mm = None
    bias = None
    for i, inp in enumerate(node.inputs[:2]):
        prod = inp.producer() if inp is not None else None
        if prod is not None and prod.op_type == "MatMul":
            mm, bias = prod, node.inputs[1 - i]
    if mm is None:
        return "Add is not fed by a MatMul"
    w = const_array(mm.inputs[1])
    b = const_array(bias)
    if w is None or w.ndim != 2:
        return "MatMul weight is not a constant 2-D tensor"
    if b is None or b.size != w.shape[1]:
        return "Add bias is not a constant of the MatMul's output width"
    if not _single_use(mm.outputs[0], node.graph):
        return "MatMul output has other consumers"
    return _Classifier("matmul_add", [mm, node], mm.inputs[0], int(w.shape[0]), int(w.shape[1]), False)


def _is_1x1_conv(node: ir.Node) -> str | None:
    w = const_array(node.inputs[1] if len(node.inputs) > 1 else None)
    if w is None or w.ndim != 4:
        return "Conv weight is not a constant 4-D tensor"
    if w.shape[2:] != (1, 1):
        return f"Conv kernel is {w.shape[2]}x{w.shape[3]}, not 1x1"
    group = node.attributes.get("group")
    if group is not None and group.as_int() != 1:
        return "grouped Conv is not a classifier"
    return None


def _is_global_average(node: ir.Node) -> str | None:
    """None if `node` averages over the whole spatial map (GlobalAveragePool, or an
    AveragePool whose unpadded kernel covers the known input size), else why not."""
    if node.op_type == "GlobalAveragePool":
        return None
    shape = _shape(node.inputs[0])
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
    src = node.inputs[0].producer()
    nodes = [node]
    if src is not None and src.op_type == "Relu":
        if not _single_use(src.outputs[0], node.graph):
            return "Relu before the pooling has other consumers"
        nodes.insert(0, src)
        src = src.inputs[0].producer()
    if src is None or src.op_type != "Conv":
        return "GlobalAveragePool is not fed by a 1x1 Conv"
    if (why := _is_1x1_conv(src)) is not None:
        return why
    if not _single_use(src.outputs[0], node.graph):
        return "Conv output has other consumers"
    w = const_array(src.inputs[1])
    return _Classifier("conv", [src, *nodes], src.inputs[0], int(w.shape[1]), int(w.shape[0]), True)


def _match_conv(node: ir.Node) -> _Classifier | str:
    """A 1x1 Conv applied after global pooling (its input is [N, F, 1, 1])."""
    if (why := _is_1x1_conv(node)) is not None:
        return why
    w = const_array(node.inputs[1])
    shape = _shape(node.inputs[0])
    if shape is None or len(shape) != 4 or shape[2:] != [1, 1]:
        return "1x1 Conv does not read a globally pooled [N, F, 1, 1] tensor"
    return _Classifier("conv", [node], node.inputs[0], int(w.shape[1]), int(w.shape[0]), True)


_MATCHERS = {
    "Gemm": _match_gemm,
    "Add": _match_add,
    "GlobalAveragePool": _match_pool,
    "AveragePool": _match_pool,
    "Conv": _match_conv,
}


def _match_classifier(value: ir.Value) -> tuple[_Classifier | None, str]:
    """Walk back from `value` over pass-through ops to a classifier; (classifier, why not)."""
    src = _walk_back(value)
    prod = src.producer()
    if prod is None:
        return None, f"tensor {src.name!r} is a graph input or constant"
    matcher = _MATCHERS.get(prod.op_type)
    if matcher is None or prod.domain not in ("", "ai.onnx"):
        return None, f"{_label(prod)} is not a linear classifier (Gemm, MatMul+Add, 1x1 Conv+GlobalAveragePool)"
    found = matcher(prod)
    if isinstance(found, str):
        return None, f"{_label(prod)}: {found}"
    return found, ""


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


def _num_features_from_shape(shape: list[Any] | None) -> int | None:
    if shape is None or len(shape) < 2:
        return None
    if len(shape) == 2:
        return shape[1] if isinstance(shape[1], int) else None
    return shape[1] if isinstance(shape[1], int) else None


def _infer_shapes(model: ir.Model) -> None:
    from onnx_ir.passes.common import ShapeInferencePass

    ShapeInferencePass(strict_mode=False)(model)


def _tensor_candidates(graph: ir.Graph, limit: int = 8) -> list[str]:
    """Likely feature tensors (outputs of pooling/flatten nodes, last first) for error messages."""
    names = []
    for node in reversed(list(graph)):
        if node.op_type in {"GlobalAveragePool", "Flatten", "Reshape", "AveragePool", "MaxPool", "GlobalMaxPool", "Relu"}:
            shape = _shape(node.outputs[0])
            names.append(f"{node.outputs[0].name}{'' if shape is None else list(shape)}")
        if len(names) >= limit:
            break
    return names


@dataclass
class Located:
    """A head found inside a specific (working copy of a) model: node objects, not names."""

    head: Head
    features: ir.Value
    outputs: list[ir.Value]
    remove: list[ir.Node]
    classifier: list[ir.Node]


def _locate_features(model: Model, name: str) -> Located:
    graph = model.ir.graph
    values = {v.name: v for n in graph for v in n.outputs}
    values.update({v.name: v for v in graph.inputs})
    if name not in values:
        raise GraphfixError(
            f"--features {name!r}: no such tensor", kind="usage", path=model.path,
            hint="candidates: " + ", ".join(_tensor_candidates(graph)),
        )
    feat = values[name]
    shape = _shape(feat)
    if shape is None or len(shape) not in (2, 4) or not isinstance(shape[1], int):
        raise GraphfixError(
            f"--features {name!r} has shape {shape}; expected [N, F] or [N, F, H, W] with static F",
            kind="usage", path=model.path,
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
        hint = "candidate feature tensors: " + (", ".join(_tensor_candidates(model.ir.graph)) or "none")
        raise GraphfixError(
            "no classification head found (" + "; ".join(c.describe() for c in candidates) + ")",
            kind="no_head", path=model.path, hint=hint + "; choose one with --features NAME",
        )
    cls = chosen.classifier
    assert cls is not None
    shape = _shape(cls.features)
    num_features = cls.num_features or _num_features_from_shape(shape)
    if num_features is None:
        raise GraphfixError(
            f"cannot tell the feature width of {cls.features.name!r}", kind="no_head", path=model.path
        )
    if not cls.needs_pooling and shape is not None and len(shape) != 2:
        raise GraphfixError(
            f"classifier input {cls.features.name!r} has rank {len(shape)}; expected [N, F]",
            kind="no_head", path=model.path, hint="choose a 2-D tensor with --features NAME",
        )
    last = cls.nodes[-1].outputs[0]
    downstream = downstream_nodes([last])
    outputs = [o for o in model.ir.graph.outputs if o is last or o.producer() in downstream]
    remove = list(dict.fromkeys(cls.nodes + [n for n in model.ir.graph if n in downstream]))
    head = Head(
        kind=cls.kind,
        softmax=chosen.softmax.name if chosen.softmax is not None else None,
        classifier=[n.name for n in cls.nodes],
        features=cls.features.name,
        features_shape=shape,
        num_features=int(num_features),
        num_classes=cls.num_classes,
        outputs=[o.name for o in outputs],
        removed=[n.name for n in remove],
        needs_pooling=cls.needs_pooling,
    )
    return Located(head, cls.features, outputs, remove, cls.nodes)


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
