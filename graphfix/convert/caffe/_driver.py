"""Build an ONNX graph (onnx-ir) from Caffe layers: inputs, SSA renaming, cutting, conversion.

Steps:
  1. Graph inputs from `input`+`input_dim`, `input`+`input_shape` or `Input` layers (or the
     caller's `input_shape`); dimension 0 becomes the symbolic `batch`.
  2. A pass over the layers gives every write of a blob its own version (SSA): in-place layers
     (top == bottom) read the previous version and write a new one.
  3. Only the layers needed for the requested outputs (default: every blob nobody reads) are
     kept; unknown or unconvertible layer types among them are reported together in one error.
  4. Each layer's converter emits nodes on an onnx-ir Tape. The last writer of a blob names its
     tensor after the blob; earlier versions get `<blob>/<layer>`.

Invariant the converters keep: dimension 0 of every tensor is the batch (never folded into other
dimensions, never baked into constants).
"""

from __future__ import annotations

__all__ = ["Context", "build_graph", "NetInput"]

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from graphfix.convert._onnx import DEFAULT_OPSET, ir_version_for
from graphfix.convert.caffe._caffemodel import CaffeModel
from graphfix.convert.caffe._schema import Msg
from graphfix.convert.caffe._table import CONVERTERS, IGNORED_LAYERS, NO_ONNX_LAYERS, Unsupported
from graphfix.convert.caffe._upgrade import Layer
from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
BATCH = "batch"


@dataclass
class NetInput:
    """A graph input: Caffe blob name and declared shape (dimension 0 is the batch)."""

    name: str
    shape: Shape


class Context:
    """What a converter sees: its layer, inputs with static shapes, weights, and node builders.

    Attributes:
        layer: The Caffe layer.
        opset: Target ONNX opset.
    """

    def __init__(self, builder: _Builder, layer: Layer, inputs: list[ir.Value], shapes: list[Shape]) -> None:
        self._b = builder
        self.layer = layer
        self.opset = builder.opset
        self._inputs = inputs
        self._shapes = shapes
        self._count = 0

    # inputs ---------------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        return len(self._inputs)

    def input(self, i: int = 0) -> ir.Value:
        """The `i`-th bottom as an ONNX value."""
        return self._inputs[i]

    def shape(self, i: int = 0) -> Shape:
        """Static shape of the `i`-th bottom (dimension 0 is the declared batch)."""
        return self._shapes[i]

    def param(self, name: str) -> Msg:
        """The layer's `name` sub-message (e.g. "convolution_param"), defaults when absent."""
        return self.layer.param(name)

    # weights --------------------------------------------------------------------------------
    def blobs(self, low: int, high: int | None = None) -> list[np.ndarray]:
        """The layer's caffemodel blobs, checking there are `low`..`high` of them."""
        high = low if high is None else high
        blobs = self._b.weights_for(self.layer)
        if not low <= len(blobs) <= high:
            want = str(low) if low == high else f"{low} to {high}"
            raise GraphfixError(
                f"layer {self.layer.name!r} ({self.layer.type}) has {len(blobs)} weight blobs "
                f"in the caffemodel, expected {want}",
                path=self._b.weights_path,
            )
        return blobs

    def weight(self, blob: np.ndarray, shape: Sequence[int], what: str) -> np.ndarray:
        """`blob` reshaped to `shape` (from the prototxt), or a clear error when the sizes disagree."""
        shape = tuple(int(s) for s in shape)
        count = int(np.prod(shape, dtype=np.int64))
        if blob.size != count:
            raise GraphfixError(
                f"layer {self.layer.name!r} ({self.layer.type}): {what} blob has {blob.size} values "
                f"{tuple(blob.shape)}, the prototxt implies {'x'.join(map(str, shape))} = {count}",
                path=self._b.weights_path,
            )
        return blob.reshape(shape)

    # building -------------------------------------------------------------------------------
    def const(self, array: Any, what: str, dtype: Any = np.float32) -> ir.Value:
        """An initializer named `<layer>.<what>` (arrays are wrapped, not copied)."""
        arr = np.asarray(array)
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
        return self._b.initializer(arr, f"{self.layer.name}.{what}")

    def ints(self, values: Sequence[int], what: str) -> ir.Value:
        """An int64 1-D initializer (shapes, axes, split sizes)."""
        return self.const(np.asarray(list(values), dtype=np.int64), what, np.int64)

    def _node_name(self, op_type: str) -> str:
        self._count += 1
        return f"{self.layer.name}/{op_type}" if self._count == 1 else f"{self.layer.name}/{op_type}_{self._count}"

    def op(self, op_type: str, inputs: Sequence[ir.Value | None], **attrs: Any) -> ir.Value:
        """Emit one node; returns its output (named `<layer>/<op>` until the driver names it)."""
        name = self._node_name(op_type)
        value = self._b.tape.op(op_type, list(inputs), _attrs(attrs), name=name)
        value.name = self._b.value_name(f"{self.layer.name}/{op_type.lower()}")
        return value

    def op_multi(self, op_type: str, inputs: Sequence[ir.Value | None], n: int, **attrs: Any) -> Sequence[ir.Value]:
        """Emit one node with `n` outputs."""
        name = self._node_name(op_type)
        values = self._b.tape.op_multi_out(op_type, list(inputs), _attrs(attrs), num_outputs=n, name=name)
        for i, value in enumerate(values):
            value.name = self._b.value_name(f"{self.layer.name}/{op_type.lower()}_{i}")
        return values

    def op_axes(self, op_type: str, x: ir.Value, axes: Sequence[int], **attrs: Any) -> ir.Value:
        """Unsqueeze/Reduce*: `axes` is an input from opset 13 (ReduceSum, Unsqueeze) or 18
        (the other Reduce ops), an attribute before."""
        since = 18 if op_type.startswith("Reduce") and op_type != "ReduceSum" else 13
        if self.opset >= since:
            return self.op(op_type, [x, self.ints(axes, "axes")], **attrs)
        return self.op(op_type, [x], axes=[int(a) for a in axes], **attrs)

    def unsupported(self, reason: str) -> Unsupported:
        """An exception to raise for a variant that has no ONNX form."""
        return Unsupported(reason)


class _Builder:
    def __init__(self, weights: CaffeModel | None, opset: int) -> None:
        self.weights = weights
        self.weights_path = weights.path if weights else None
        self.opset = opset
        self.tape = ir.tape.Tape()
        self._init_names: set[str] = set()
        #: every tensor name in use or reserved (blob names, inputs, intermediate values)
        self.names: set[str] = set()

    def value_name(self, base: str) -> str:
        """A fresh tensor name from `base`, clear of blob names and names given so far."""
        name = _unique(base, self.names)
        self.names.add(name)
        return name

    def weights_for(self, layer: Layer) -> list[np.ndarray]:
        if self.weights is None:
            raise GraphfixError(
                f"layer {layer.name!r} ({layer.type}) needs weights but no caffemodel was given "
                "and none lies beside the prototxt",
                kind="usage",
                hint="pass weights= (CLI --weights x.caffemodel)",
            )
        blobs = self.weights.blobs.get(layer.name)
        if blobs is None:
            raise GraphfixError(
                f"layer {layer.name!r} ({layer.type}) has no weights in the caffemodel",
                path=self.weights_path,
                hint="weights are matched by layer name; is this the caffemodel for this prototxt?",
            )
        return blobs

    def initializer(self, arr: np.ndarray, name: str) -> ir.Value:
        name = _unique(name, self._init_names)
        self._init_names.add(name)
        return self.tape.initializer(ir.Tensor(arr, name=name), name=name)


def _attrs(attrs: dict[str, Any]) -> dict[str, ir.Attr] | None:
    """Typed attributes (skips onnx-ir's per-value type inference, which is slow)."""
    if not attrs:
        return None
    out: dict[str, ir.Attr] = {}
    for name, v in attrs.items():
        if isinstance(v, (bool, int, np.integer)):
            out[name] = ir.AttrInt64(name, int(v))
        elif isinstance(v, (float, np.floating)):
            out[name] = ir.AttrFloat32(name, float(v))
        elif isinstance(v, str):
            out[name] = ir.AttrString(name, v)
        elif all(isinstance(x, (int, np.integer)) for x in v):
            out[name] = ir.AttrInt64s(name, [int(x) for x in v])
        else:
            out[name] = ir.AttrFloat32s(name, [float(x) for x in v])
    return out


def _value_shape(shape: Shape) -> ir.Shape:
    return ir.Shape([BATCH, *shape[1:]]) if shape else ir.Shape([])


@dataclass
class _Versions:
    """SSA bookkeeping over the layer list (indexes into it; -1 is a graph input)."""

    producer: dict[str, int]  # blob -> layer that wrote it last
    deps: list[list[int]]  # layer -> the layers whose outputs it reads
    read: set[tuple[str, int]]  # (blob, writer) pairs some later layer reads
    dangling: dict[int, str]  # layer -> a bottom nobody produces (an error only if the layer is needed)


def _versions(layers: list[Layer], input_names: set[str]) -> _Versions:
    v = _Versions({name: -1 for name in input_names}, [], set(), {})
    for i, layer in enumerate(layers):
        deps = []
        for b in layer.bottoms:
            if b not in v.producer:
                v.dangling.setdefault(i, b)
                continue
            deps.append(v.producer[b])
            v.read.add((b, v.producer[b]))
        v.deps.append(deps)
        for t in layer.tops:
            v.producer[t] = i
    return v


def _wanted(v: _Versions, outputs: list[str] | None, input_names: set[str], path: str | None) -> list[str]:
    """The output blobs: the requested ones, or every blob whose last version nobody reads."""
    if not outputs:
        wanted = [b for b, p in v.producer.items() if p >= 0 and (b, p) not in v.read]
        if not wanted:
            raise GraphfixError("the net has no layers to convert", path=path)
        return wanted
    missing = [o for o in outputs if o not in v.producer]
    if missing:
        known = [b for b in v.producer if b not in input_names]
        raise GraphfixError(
            f"requested output blob(s) {', '.join(missing)} not in the net",
            kind="usage",
            path=path,
            hint=f"blobs: {', '.join(known[:30])}{' ...' if len(known) > 30 else ''}",
        )
    return list(dict.fromkeys(outputs))


def _needed(layers: list[Layer], v: _Versions, wanted: list[str], path: str | None) -> list[int]:
    """Indexes of the layers the wanted blobs depend on, in order."""
    needed: set[int] = set()
    stack = [v.producer[b] for b in wanted]
    while stack:
        i = stack.pop()
        if i >= 0 and i not in needed:
            needed.add(i)
            stack.extend(v.deps[i])
    for i, layer in enumerate(layers):
        if i not in needed:
            logger.info("layer %s (%s) is not needed for the outputs; skipped", layer.name, layer.type)
        elif i in v.dangling:
            where = f" (prototxt line {layer.line})" if layer.line else ""
            raise GraphfixError(
                f"layer {layer.name!r} ({layer.type}) reads blob {v.dangling[i]!r} "
                f"that no earlier layer or input produces{where}",
                path=path,
            )
    return sorted(needed)


def build_graph(
    layers: list[Layer],
    inputs: list[NetInput],
    weights: CaffeModel | None,
    *,
    outputs: list[str] | None = None,
    opset: int = DEFAULT_OPSET,
    path: str | None = None,
) -> ir.Model:
    """Convert `layers` into an onnx-ir Model.

    Args:
        layers: Deploy layers in order (Input layers already turned into `inputs`).
        inputs: Graph inputs with declared shapes.
        weights: The caffemodel's blobs, or None when no layer needs any.
        outputs: Blob names to end the graph at (default: every blob no layer reads).
        opset: ONNX opset to target.
        path: The prototxt, for error messages.

    Raises:
        GraphfixError: unsupported layers (all listed), missing blobs, weights that disagree.
    """
    input_names = {i.name for i in inputs}
    layers = [layer for layer in layers if layer.type not in IGNORED_LAYERS]
    versions = _versions(layers, input_names)
    wanted = _wanted(versions, outputs, input_names, path)
    needed = _needed(layers, versions, wanted, path)
    _check_supported([layers[i] for i in needed], path)

    builder = _Builder(weights, opset)
    builder.names |= input_names | {t for layer in layers for t in layer.tops}
    graph_inputs = [
        ir.Value(name=i.name, shape=_value_shape(i.shape), type=ir.TensorType(ir.DataType.FLOAT)) for i in inputs
    ]
    values: dict[str, tuple[ir.Value, Shape]] = {v.name: (v, i.shape) for v, i in zip(graph_inputs, inputs)}
    _convert_layers(builder, [layers[i] for i in needed], values, input_names, path)
    used = set(needed)
    for i, layer in enumerate(layers):
        for name, line in layer.msg.get("_unknown", []):
            level = logging.WARNING if i in used else logging.DEBUG
            logger.log(level, "prototxt line %d: layer %s: unknown field %s skipped", line, layer.name, name)

    graph_outputs: list[ir.Value] = []
    for blob in wanted:
        value = values[blob][0]
        renamed = value.name == blob or (blob in input_names and value.name.startswith(f"{blob}/"))
        if not renamed or value in graph_outputs or value.is_graph_input():
            # an alias (Dropout/Split) or an input: give the output its blob's name via Identity
            alias = builder.tape.op("Identity", [value], name=f"{blob}/output")
            alias.name = blob if not _named(blob, values, graph_inputs) else builder.value_name(blob)
            alias.shape, alias.type = value.shape, value.type
            value = alias
        graph_outputs.append(value)

    graph = ir.Graph(
        graph_inputs,
        graph_outputs,
        nodes=builder.tape.nodes,
        initializers=builder.tape.initializers,
        opset_imports={"": opset},
        name="caffe",
    )
    return ir.Model(graph, ir_version=ir_version_for(opset), producer_name="graphfix")


def _convert_layers(
    builder: _Builder,
    layers: list[Layer],
    values: dict[str, tuple[ir.Value, Shape]],
    input_names: set[str],
    path: str | None,
) -> None:
    """Run each layer's converter, updating `values` (blob -> latest value and static shape).

    The last writer of a blob names its tensor after the blob, earlier writers `<blob>/<layer>`.
    Layers a converter refuses (and everything downstream of them) are collected and reported
    in one error at the end.
    """
    last_writer = {t: i for i, layer in enumerate(layers) for t in layer.tops}
    failures: list[str] = []
    poisoned: set[str] = set()
    for i, layer in enumerate(layers):
        if any(b in poisoned for b in layer.bottoms):
            poisoned.update(layer.tops)
            continue
        if not layer.bottoms:
            failures.append(f"{layer.describe()}: has no bottom")
            poisoned.update(layer.tops)
            continue
        ctx = Context(builder, layer, [values[b][0] for b in layer.bottoms], [values[b][1] for b in layer.bottoms])
        first_node = len(builder.tape.nodes)
        try:
            outs = CONVERTERS[layer.type].func(ctx)
        except Unsupported as exc:
            failures.append(f"{layer.describe()}: {exc}")
            poisoned.update(layer.tops)
            continue
        if len(outs) != len(layer.tops):
            raise RuntimeError(f"converter for {layer.type} returned {len(outs)} outputs for {len(layer.tops)} tops")
        fresh = {id(o) for node in builder.tape.nodes[first_node:] for o in node.outputs}
        for top, (value, shape) in zip(layer.tops, outs):
            shape = tuple(int(d) for d in shape)
            if id(value) in fresh:  # not an alias of an earlier value (Dropout, Split)
                builder.names.discard(value.name)  # its provisional `<layer>/<op>` name
                if value.producer() is not None and len(layer.tops) == 1:
                    value.producer().name = layer.name  # the node making the top is the layer
                if last_writer[top] == i and top not in input_names:
                    value.name = top  # reserved for it in builder.names
                else:
                    value.name = builder.value_name(f"{top}/{layer.name}")
                value.shape = _value_shape(shape)
                if value.type is None:
                    value.type = ir.TensorType(ir.DataType.FLOAT)
            values[top] = (value, shape)
    if failures:
        raise GraphfixError(
            f"{len(failures)} layer(s) cannot be converted: " + "; ".join(failures),
            kind="unsupported_op",
            path=path,
        )


def _named(name: str, values: dict[str, tuple[ir.Value, Shape]], inputs: list[ir.Value]) -> bool:
    """Whether some tensor already carries `name`."""
    return any(v.name == name for v in inputs) or any(v.name == name for v, _ in values.values())


def _unique(name: str, used: set[str]) -> str:
    if name not in used:
        return name
    k = 2
    while f"{name}_{k}" in used:
        k += 1
    return f"{name}_{k}"


def _suggested_cut(layers: list[Layer], refused_types: set[str]) -> list[str]:
    """The blobs to end the net at so that no refused layer is needed: the inputs of the refused
    layers (and of every layer reading their results) that supported layers compute and that
    nothing else reads, plus the supported net's own ends (blobs nobody reads). SSD's PriorBox/DetectionOutput give `mbox_loc,mbox_conf_flatten`, not
    the feature maps PriorBox also reads, nor the net input."""
    refused: list[Layer] = []
    refused_blobs: set[str] = set()
    for layer in layers:
        if layer.type in refused_types or any(b in refused_blobs for b in layer.bottoms):
            refused.append(layer)
            refused_blobs.update(layer.tops)
    produced = {t for layer in layers for t in layer.tops}
    refused_ids = {id(layer) for layer in refused}
    readers: dict[str, list[Layer]] = {}
    for layer in layers:
        for b in layer.bottoms:
            if b not in layer.tops:  # an in-place layer rewrites its blob; it is not a reader
                readers.setdefault(b, []).append(layer)
    inputs = [b for layer in refused for b in layer.bottoms if b not in refused_blobs and b in produced]
    inputs = list(dict.fromkeys(inputs))
    only_refused = [b for b in inputs if all(id(r) in refused_ids for r in readers.get(b, []))]
    ends = [t for layer in layers if id(layer) not in refused_ids for t in layer.tops if t not in readers]
    return list(dict.fromkeys(only_refused + ends)) or inputs


def _check_supported(layers: list[Layer], path: str | None) -> None:
    unknown: dict[str, list[str]] = {}
    no_onnx: dict[str, list[str]] = {}
    for layer in layers:
        if layer.type in CONVERTERS:
            continue
        (no_onnx if layer.type in NO_ONNX_LAYERS else unknown).setdefault(layer.type, []).append(layer.name)
    if not unknown and not no_onnx:
        return
    parts = []
    for t, names in {**unknown, **no_onnx}.items():
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        why = f" ({NO_ONNX_LAYERS[t]})" if t in NO_ONNX_LAYERS else ""
        parts.append(f"{t} x{len(names)}{why}: {shown}")
    cut = _suggested_cut(layers, set(unknown) | set(no_onnx))
    hint = f"cut the graph before them with outputs=[...] (CLI --outputs), e.g. --outputs {','.join(cut)}" if cut else None
    raise GraphfixError(
        f"unsupported Caffe layer type(s): {'; '.join(parts)}",
        kind="unsupported_op",
        path=path,
        hint=hint,
    )
