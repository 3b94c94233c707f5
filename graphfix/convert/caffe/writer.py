"""Write a multi-label head into a Caffe net: `-deploy.prototxt`, `.caffemodel` and a training
prototxt.

The prototxt is edited as text: every layer block is kept byte for byte except the head's; the
old classifier's block is replaced (at the same place, so in-place blob names still mean the
same version) by `InnerProduct(num_output=L)` (after a global AVE `Pooling` when the head pools
a spatial map) + `Sigmoid` (deploy) or + a label `Input` and `SigmoidCrossEntropyLoss` (train).

In the training prototxt the label input and the loss come last, after a `Silence` layer that
takes every other blob the TRAIN-phase net would leave as an output (MTCNN's box regression
`conv5-2`): Caffe accepts such outputs in a train net, but reports each of their values as a
"Train net output" at every display; silenced, the net's only output is the loss. They get no
gradient either way: nothing below a Silence layer contributes to the loss, so Caffe skips their
backward. (A `loss_weight: 0` on a layer that is not a loss is Caffe's default and changes
nothing.) The deploy prototxt keeps them as outputs.
The caffemodel is edited at the wire level: every other layer record is copied as stored, the
head's records are dropped and the new InnerProduct record (its exact weights) takes the old
classifier's place. V1 nets (`layers`) get V1 records and V1 type names, V2 nets V2 ones.

Fine-tuned backbone weights (`graphfix.convert.writeback.Tuning`) replace the data of the blobs
they were converted from (`<layer>.<what>` initializers: the blob of that layer that gives the
converted value by a reshape or transpose, checked bit for bit); every other field of the layer
record, and every other record, is copied as stored. Two BatchNorm cases have no such blob:
its statistics (converted as blob / scale-factor blob) are written as they are with the factor
set to 1, and its scale and shift (ones and zeros in the conversion, trained by fine-tuning:
Caffe's BatchNorm has none) are folded into the Scale layer that alone reads its output
(scale' = scale x gamma, bias' = scale x beta + bias), or, with no such Scale, into its own
statistics (mean' = mean - beta sqrt(var + eps) / gamma, var' = (var + eps) / gamma^2 - eps; a
scale that is not positive everywhere is refused). Anything else is refused, naming it.
"""

from __future__ import annotations

__all__ = ["build_caffe", "check_tuned"]

import mmap
import os
from typing import Any

import numpy as np

from graphfix.convert.caffe._caffemodel import read_caffemodel
from graphfix.convert.caffe._prototxt import TOKEN, PrototxtError, parse_prototxt
from graphfix.convert.caffe._schema import V1_TYPES
from graphfix.convert.caffe._wire import WireError, skip_field, read_varint
from graphfix.convert.writeback import HEAD_NAME, HeadSpec, Tuning, WritePlan, refuse_tuned, source_array, to_source
from graphfix.irutil import fresh_name, varint
from graphfix.errors import GraphfixError

_CLASSIFIER_TYPES = ("InnerProduct", "Convolution")
#: Field numbers by net version: the net's layer field, and in a layer: name, type, bottom,
#: top, blobs, inner_product_param.
_V2 = {"layer": 100, "name": 1, "type": 2, "bottom": 3, "top": 4, "blobs": 7, "ip": 117}
_V1 = {"layer": 2, "name": 4, "type": 5, "bottom": 2, "top": 3, "blobs": 6, "ip": 17}
#: V1 type enum values of the layers written.
_V1_ENUM = {"InnerProduct": ("INNER_PRODUCT", 14), "Sigmoid": ("SIGMOID", 19), "Pooling": ("POOLING", 17),
            "SigmoidCrossEntropyLoss": ("SIGMOID_CROSS_ENTROPY_LOSS", 27), "DummyData": ("DUMMY_DATA", 32),
            "Silence": ("SILENCE", 36)}
#: Caffe's Phase enum value of a training net.
_TRAIN_PHASE = 0


def _layer_spans(text: str, keyword: str) -> list[tuple[int, int]]:
    """(start, end) offsets of each top-level `keyword { ... }` block, in order."""
    spans: list[tuple[int, int]] = []
    depth = 0
    start = None
    pending = None  # offset of a top-level `keyword` waiting for its `{`
    for m in TOKEN.finditer(text):
        kind = m.lastgroup
        tok = m.group()
        if kind == "ws" or kind == "str":
            continue
        if kind == "punct" and tok in "{<":
            if depth == 0 and pending is not None:
                start = pending
            depth += 1
            pending = None
        elif kind == "punct" and tok in "}>":
            depth -= 1
            if depth == 0 and start is not None:
                end = m.end()
                if end < len(text) and text[end] == "\n":
                    end += 1
                spans.append((start, end))
                start = None
        elif kind == "punct" and tok == ":":
            continue
        else:
            pending = m.start() if depth == 0 and kind == "word" and tok == keyword else None
    return spans


def _line_start(text: str, offset: int) -> int:
    """Start of the line holding `offset` when only blanks precede it there (keeps indentation)."""
    i = text.rfind("\n", 0, offset) + 1
    return i if not text[i:offset].strip() else offset


def _block(v1: bool, name: str, type_: str, bottoms: list[str], tops: list[str], body: str = "") -> str:
    key = "layers" if v1 else "layer"
    type_text = _V1_ENUM[type_][0] if v1 else f'"{type_}"'
    lines = [f"{key} {{", f'  name: "{name}"', f"  type: {type_text}"]
    lines += [f'  bottom: "{b}"' for b in bottoms] + [f'  top: "{t}"' for t in tops]
    if body:
        lines += ["  " + line for line in body.strip("\n").split("\n")]
    return "\n".join(lines + ["}"]) + "\n"


# ----- protobuf wire writing ----------------------------------------------------------------
def _len_field(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def _blob(arr: np.ndarray, v1: bool) -> bytes:
    data = _len_field(5, np.ascontiguousarray(arr, dtype="<f4").tobytes())
    if v1:  # legacy num/channels/height/width
        dims = (1,) * (4 - arr.ndim) + tuple(arr.shape)
        return b"".join(_varint_field(i + 1, d) for i, d in enumerate(dims)) + data
    shape = _len_field(1, b"".join(varint(d) for d in arr.shape))
    return _len_field(7, shape) + data


def _ip_record(v1: bool, name: str, bottom: str, top: str, weight: np.ndarray, bias: np.ndarray) -> bytes:
    f = _V1 if v1 else _V2
    type_field = _varint_field(f["type"], _V1_ENUM["InnerProduct"][1]) if v1 else _len_field(f["type"], b"InnerProduct")
    body = (_len_field(f["name"], name.encode()) + type_field + _len_field(f["bottom"], bottom.encode())
            + _len_field(f["top"], top.encode()) + _len_field(f["blobs"], _blob(weight, v1))
            + _len_field(f["blobs"], _blob(bias, v1)) + _len_field(f["ip"], _varint_field(1, weight.shape[0])))
    return _len_field(f["layer"], body)


def _fields(buf: Any, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """The fields of one message: (field number, start, end, payload start) (payload: after a
    length-delimited field's length)."""
    out = []
    pos = start
    while pos < end:
        first = pos
        key, pos = read_varint(buf, pos, end)
        payload = pos
        if key & 7 == 2:
            _, payload = read_varint(buf, pos, end)
        pos = skip_field(buf, pos, end, key & 7, 0)
        out.append((key >> 3, first, pos, payload))
    return out


#: BlobProto fields that hold values (data, diff, double_data, double_diff): replaced by new data.
_BLOB_VALUES = (5, 6, 8, 9)


def _edited_layer(buf: Any, payload: int, end: int, blobs_field: int, new: dict[int, np.ndarray]) -> bytes:
    """A layer record's payload with blob `k`'s values replaced by `new[k]` (float32; the blob's
    shape fields and every other field of the layer kept as stored)."""
    out = []
    k = 0
    for number, start, stop, inner in _fields(buf, payload, end):
        if number == blobs_field and k in new:
            kept = b"".join(bytes(buf[s:e]) for n, s, e, _ in _fields(buf, inner, stop) if n not in _BLOB_VALUES)
            data = np.ascontiguousarray(new[k], dtype="<f4").tobytes()
            out.append(_len_field(blobs_field, kept + _len_field(5, data)))
        else:
            out.append(bytes(buf[start:stop]))
        k += number == blobs_field
    return b"".join(out)


def _tuned_blobs(msgs, types, caffemodel_path: str, tuning: Tuning, path: str) -> dict[str, dict[int, np.ndarray]]:
    """Where the fine-tuned initializers go: layer name -> {blob index: new values} (see the
    module docstring); refuses (GraphfixError) what has no exact place."""
    if not tuning.changed:
        return {}
    weights = read_caffemodel(caffemodel_path)
    graph = tuning.reference.ir.graph
    by_length = sorted(range(len(msgs)), key=lambda i: -len(msgs[i].name))
    edits: dict[str, dict[int, np.ndarray]] = {}
    done: set[str] = set()

    def layer_of(name: str) -> int | None:
        return next((i for i in by_length if name.startswith(f"{msgs[i].name}.")), None)

    def blob_edit(layer: str, index: int, arr: np.ndarray) -> None:
        blob = weights.blobs[layer][index]
        edits.setdefault(layer, {})[index] = np.ascontiguousarray(arr, dtype=np.float32).reshape(blob.shape)

    for name in sorted(tuning.changed):
        i = layer_of(name)
        if i is None or types[i] != "BatchNorm" or name in done:
            continue
        layer, what = msgs[i].name, name[len(msgs[i].name) + 1:]
        blobs = weights.blobs.get(layer, [])
        change = tuning.changed[name]
        if what in ("mean", "var") and len(blobs) >= 2:
            blob_edit(layer, 0, tuning.value(f"{layer}.mean"))
            blob_edit(layer, 1, tuning.value(f"{layer}.var"))
            if len(blobs) > 2:
                blob_edit(layer, 2, np.ones(blobs[2].shape, np.float32))
            done |= {f"{layer}.mean", f"{layer}.var"}
        elif what in ("gamma", "beta"):
            scale = _scale_after(graph, f"{layer}.gamma", msgs, types)
            if scale is not None and tuning.value(f"{scale[0]}.scale").size != tuning.value(f"{layer}.gamma").size:
                scale = None  # a Scale over other axes than the channels
            if scale is None:  # into the statistics: g (x - m) / sqrt(v + eps) + b = (x - m') / sqrt(v' + eps)
                g = tuning.value(f"{layer}.gamma").astype(np.float64)
                if len(blobs) < 2 or not np.all(g > 0):
                    raise refuse_tuned(change, "caffe", f"BatchNorm {layer!r} has no scale/shift blobs, no Scale layer "
                                       "alone reads its output, and its trained scale is not positive everywhere (it "
                                       "cannot go into the statistics)", path)
                eps = _epsilon(graph, f"{layer}.gamma")
                std = np.sqrt(tuning.value(f"{layer}.var").astype(np.float64) + eps)
                blob_edit(layer, 0, tuning.value(f"{layer}.mean") - tuning.value(f"{layer}.beta") * std / g)
                blob_edit(layer, 1, (std / g) ** 2 - eps)
                if len(blobs) > 2:
                    blob_edit(layer, 2, np.ones(blobs[2].shape, np.float32))
                done |= {f"{layer}.{w}" for w in ("gamma", "beta", "mean", "var")}
                continue
            s_name, has_bias = scale
            g = tuning.value(f"{layer}.gamma").astype(np.float64)
            b = tuning.value(f"{layer}.beta").astype(np.float64)
            s = tuning.value(f"{s_name}.scale").astype(np.float64)
            t = tuning.value(f"{s_name}.bias").astype(np.float64) if has_bias else np.zeros(s.shape)
            shift = s * b.reshape(s.shape) + t
            if not has_bias and np.any(shift != 0):
                raise refuse_tuned(change, "caffe", f"Scale {s_name!r} after BatchNorm {layer!r} has no bias blob "
                                   "to take the trained shift", path)
            blob_edit(s_name, 0, s * g.reshape(s.shape))
            if has_bias:
                blob_edit(s_name, 1, shift)
            done |= {f"{layer}.gamma", f"{layer}.beta", f"{s_name}.scale", f"{s_name}.bias"}
    for name, change in sorted(tuning.changed.items()):
        if name in done:
            continue
        i = layer_of(name)
        if i is None:
            raise refuse_tuned(change, "caffe", "no layer of the prototxt owns it", path)
        layer = msgs[i].name
        blobs = weights.blobs.get(layer, [])
        hit = source_array(change.before, dict(enumerate(blobs)))
        if hit is None:
            raise refuse_tuned(change, "caffe", f"it is a constant the import derived for layer {layer!r} "
                               f"({types[i]}), not one of its blobs", path)
        if hit[0] in edits.get(layer, {}):
            raise refuse_tuned(change, "caffe", f"blob {hit[0]} of layer {layer!r} is also written from another "
                               "initializer", path)
        edits.setdefault(layer, {})[hit[0]] = to_source(change.value, blobs[hit[0]], hit[1])
    return edits


def _epsilon(graph, gamma: str) -> float:
    """The epsilon of the BatchNormalization node reading initializer `gamma` (as converted)."""
    node = next(u.node for u in graph.initializers[gamma].uses())
    attr = node.attributes.get("epsilon")
    return 1e-5 if attr is None else float(attr.value)


def _scale_after(graph, gamma: str, msgs, types) -> tuple[str, bool] | None:
    """(Scale layer, has a bias blob) when the BatchNorm reading initializer `gamma` feeds exactly
    one Mul by a Scale layer's `<layer>.scale` (the import of a one-bottom Scale), else None."""
    value = graph.initializers.get(gamma)
    users = [u.node for u in value.uses()] if value is not None else []
    if len(users) != 1 or users[0].op_type != "BatchNormalization":
        return None
    readers = [u.node for u in users[0].outputs[0].uses()]
    if len(readers) != 1 or readers[0].op_type != "Mul":
        return None
    mul = readers[0]
    names = {m.name: t for m, t in zip(msgs, types)}
    for v in mul.inputs:
        if v is not None and v.const_value is not None and v.name.endswith(".scale"):
            layer = v.name[: -len(".scale")]
            if names.get(layer) == "Scale":
                after = [u.node for u in mul.outputs[0].uses()]
                bias = f"{layer}.bias"
                has_bias = len(after) == 1 and after[0].op_type == "Add" and any(
                    w is not None and w.name == bias for w in after[0].inputs)
                return layer, has_bias
    return None


def _records(buf: Any, path: str) -> list[tuple[int, int, int, int]]:
    """Top-level fields of a NetParameter: (field number, start, end, payload start)."""
    out = []
    pos, end = 0, len(buf)
    try:
        while pos < end:
            start = pos
            key, pos = read_varint(buf, pos, end)
            number, wire = key >> 3, key & 7
            payload = pos
            if wire == 2:
                n, payload = read_varint(buf, pos, end)
            pos = skip_field(buf, pos, end, wire, 0)
            out.append((number, start, pos, payload))
    except WireError as exc:
        raise GraphfixError(f"not a valid caffemodel ({exc})", path=path) from exc
    return out


def _record_name(buf: Any, start: int, end: int, name_field: int) -> str | None:
    pos = start
    while pos < end:
        key, pos = read_varint(buf, pos, end)
        if key >> 3 == name_field and key & 7 == 2:
            n, pos = read_varint(buf, pos, end)
            return bytes(buf[pos : pos + n]).decode("utf-8", "replace")
        pos = skip_field(buf, pos, end, key & 7, 0)
    return None


# ----- the plan -------------------------------------------------------------------------------
def _read_net(prototxt_path: str) -> tuple[str, Any, bool, list, list[str]]:
    """(text, parsed net, V1?, layer messages, layer types) of a prototxt."""
    with open(prototxt_path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        net = parse_prototxt(text)
    except PrototxtError as exc:
        raise GraphfixError(f"prototxt syntax error at {exc}", path=prototxt_path) from exc
    if net.get("layer") and net.get("layers"):
        raise GraphfixError("the prototxt mixes V1 `layers` and V2 `layer` records", path=prototxt_path)
    v1 = bool(net.get("layers"))
    msgs = net.get("layers") if v1 else net.get("layer", [])
    types = [V1_TYPES.get(m.type, str(m.type)) if v1 else m.type for m in msgs]
    return text, net, v1, msgs, types


def check_tuned(prototxt_path: str, caffemodel_path: str, tuning: Tuning) -> None:
    """Refuse (GraphfixError) fine-tuned initializers the Caffe files cannot hold."""
    _, _, _, msgs, types = _read_net(prototxt_path)
    _tuned_blobs(msgs, types, caffemodel_path, tuning, prototxt_path)


def build_caffe(prototxt_path: str, caffemodel_path: str, spec: HeadSpec, tuning: Tuning | None = None) -> WritePlan:
    """Prepare the deploy prototxt, training prototxt and caffemodel of the multi-label model
    (with the fine-tuned backbone weights of `tuning`)."""
    text, net, v1, msgs, types = _read_net(prototxt_path)
    spans = _layer_spans(text, "layers" if v1 else "layer")
    if len(spans) != len(msgs):
        raise GraphfixError(f"found {len(spans)} layer blocks for {len(msgs)} layers", path=prototxt_path)

    if spec.old_kind != "features":
        cands = [i for i, m in enumerate(msgs) if m.name in set(spec.replaced) and types[i] in _CLASSIFIER_TYPES]
        if not cands:
            raise GraphfixError(
                f"none of the replaced layers {spec.replaced} is an InnerProduct or Convolution of the source prototxt",
                kind="usage", path=prototxt_path, hint="was the model converted from this prototxt?",
            )
        cls = cands[0]
        if not msgs[cls].bottom:
            raise GraphfixError(f"classifier layer {msgs[cls].name} has no bottom", path=prototxt_path)
        feature = msgs[cls].bottom[0]
    else:
        writers = [i for i, m in enumerate(msgs) if spec.features in m.top]
        if not writers:
            raise GraphfixError(
                f"the head reads tensor {spec.features!r}, which is no blob of the source prototxt; "
                "it cannot be written back exactly", kind="usage", path=prototxt_path,
            )
        cls, feature = None, spec.features
    # the head: the classifier and every later layer computed from it
    head: set[int] = set()
    if cls is not None:
        head.add(cls)
        tainted = set(msgs[cls].top)
        for i in range(cls + 1, len(msgs)):
            if tainted & set(msgs[i].bottom):
                head.add(i)
                tainted |= set(msgs[i].top)
            else:
                tainted -= set(msgs[i].top)
        at = cls
    else:
        at = max(writers) + 1  # right after the last writer of the features blob
        tainted = {feature}
        for i in range(at, len(msgs)):
            if tainted & set(msgs[i].bottom):
                head.add(i)
                tainted |= set(msgs[i].top)
            elif tainted & set(msgs[i].top):
                tainted -= set(msgs[i].top)
    if not head:
        raise GraphfixError("no layer of the source prototxt reads the head's features", kind="usage", path=prototxt_path)

    taken = {m.name for m in msgs} | {b for m in msgs for b in list(m.top) + list(m.bottom)} | set(net.get("input", []))
    n = {k: fresh_name(taken, v) for k, v in {
        "pool": f"{HEAD_NAME}_pool", "fc": HEAD_NAME, "prob": f"{HEAD_NAME}_prob",
        "label": f"{HEAD_NAME}_label", "loss": f"{HEAD_NAME}_loss",
    }.items()}
    num_labels = spec.weight.shape[0]
    new = ""
    x = feature
    if spec.pooled:
        new += _block(v1, n["pool"], "Pooling", [x], [n["pool"]], "pooling_param {\n  pool: AVE\n  global_pooling: true\n}")
        x = n["pool"]
    new += _block(v1, n["fc"], "InnerProduct", [x], [n["fc"]], f"inner_product_param {{\n  num_output: {num_labels}\n}}")
    deploy_new = new + _block(v1, n["prob"], "Sigmoid", [n["fc"]], [n["prob"]])
    batch = _batch(net, msgs, types)
    if v1:
        label = _block(True, n["label"], "DummyData", [], [n["label"]],
                       f"dummy_data_param {{\n  num: {batch}\n  channels: {num_labels}\n  height: 1\n  width: 1\n}}")
    else:
        label = _block(False, n["label"], "Input", [], [n["label"]],
                       f"input_param {{\n  shape {{\n    dim: {batch}\n    dim: {num_labels}\n  }}\n}}")
    # what the TRAIN net would leave as outputs besides the head: silenced (see the module docstring)
    extra = _train_outputs(net, msgs, head, at, [feature] if not spec.pooled else [feature, n["pool"]], n["fc"])
    silence = _block(v1, fresh_name(taken, f"{HEAD_NAME}_silence"), "Silence", extra, []) if extra else ""
    train_tail = silence + label + _block(v1, n["loss"], "SigmoidCrossEntropyLoss", [n["fc"], n["label"]], [n["loss"]])

    def edited(insert: str, tail: str = "") -> str:
        out, pos = [], 0
        for i, (s, e) in enumerate(spans):
            if i == at and cls is None:
                out.append(text[pos:_line_start(text, s)])
                out.append(insert)
                pos = _line_start(text, s)
            if i in head:
                ls = _line_start(text, s)
                out.append(text[pos:ls])
                if i == at:
                    out.append(insert)
                pos = e
        out.append(text[pos:])
        if cls is None and at >= len(spans):
            out.append(("" if text.endswith("\n") else "\n") + insert)
        if tail:
            out.append(("" if "".join(out).endswith("\n") else "\n") + tail)
        return "".join(out)

    deploy_text, train_text = edited(deploy_new), edited(new, train_tail)
    blob_edits = _tuned_blobs(msgs, types, caffemodel_path, tuning or Tuning({}), prototxt_path)
    head_names = {msgs[i].name for i in head}
    cls_name = msgs[cls].name if cls is not None else None

    def write_text(body: str):
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(body)
        return write

    def write_weights(tmp: str) -> None:
        with open(caffemodel_path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        records = _records(buf, caffemodel_path)
        model_v1 = any(r[0] == 2 for r in records) and not any(r[0] == 100 for r in records)
        f = _V1 if model_v1 else _V2
        ip = _ip_record(model_v1, n["fc"], x, n["fc"], spec.weight, spec.bias)
        placed = False
        pending = dict(blob_edits)  # the first record of a layer is the one graphfix reads
        with open(tmp, "wb") as out:
            for number, start, end, payload in records:
                if number == f["layer"]:
                    name = _record_name(buf, payload, end, f["name"])
                    if name in head_names:
                        if name == cls_name and not placed:
                            out.write(ip)
                            placed = True
                        continue
                    if name in pending:
                        out.write(_len_field(number, _edited_layer(buf, payload, end, f["blobs"], pending.pop(name))))
                        continue
                out.write(buf[start:end])
            if pending:
                raise GraphfixError(f"no layer record named {sorted(pending)[0]!r} in the caffemodel to write its "
                                    "fine-tuned blobs into", kind="usage", path=caffemodel_path)
            if not placed:
                out.write(ip)

    io = {"data": list(net.get("input", [])) or [m.top[0] for m, t in zip(msgs, types) if t == "Input" and m.top],
          "label": n["label"], "probabilities": n["prob"], "train_output": n["loss"], "head": n["fc"],
          "silenced": extra}
    return WritePlan(write_text(deploy_text), write_weights, write_text(train_text), io)


def _in_train_phase(msg) -> bool:
    """Whether Caffe keeps the layer in a TRAIN-phase net (its include/exclude phase rules)."""
    includes = msg.get("include", [])
    if includes and not any(r.get("phase", _TRAIN_PHASE) == _TRAIN_PHASE for r in includes):
        return False
    return not any(r.get("phase") == _TRAIN_PHASE for r in msg.get("exclude", []))


def _train_outputs(net, msgs, head: set[int], at: int, new_bottoms: list[str], fc: str) -> list[str]:
    """The blobs the training net leaves unconsumed (Caffe's net outputs) besides the head's
    `fc`, in the order they are made: the net's inputs and the tops of its TRAIN-phase layers,
    the head layers replaced by the new head (reading `new_bottoms`, writing `fc`) at `at`."""
    left = dict.fromkeys(net.get("input", []))

    def run(bottoms, tops) -> None:
        for b in bottoms:
            left.pop(b, None)
        for t in tops:
            left.pop(t, None)
            left[t] = None

    for i, m in enumerate(msgs):
        if i == at:
            run(new_bottoms, [fc])
        if i not in head and _in_train_phase(m):
            run(m.bottom, m.top)
    if at >= len(msgs):
        run(new_bottoms, [fc])
    return [b for b in left if b != fc]


def _batch(net, msgs, types) -> int:
    """The declared batch of the first input (the label input's batch), 1 if none is declared."""
    if net.get("input_shape") and net.input_shape[0].dim:
        return int(net.input_shape[0].dim[0])
    if net.get("input_dim"):
        return int(net.input_dim[0])
    for m, t in zip(msgs, types):
        if t == "Input" and m.input_param.shape and m.input_param.shape[0].dim:
            return int(m.input_param.shape[0].dim[0])
    return 1
