"""Write a multi-label head into an MXNet checkpoint: `-symbol.json`, `-0000.params` and a
training symbol.

The source symbol's nodes are copied as stored (names, attributes, layout); only the old
classifier and everything after it on the replaced outputs go. The new head is
`FullyConnected(num_hidden=L)` (after a global average `Pooling` when the head pools a spatial
map) + `sigmoid` in the deploy symbol, and + `LogisticRegressionOutput` with a label input in
the training symbol.

Other outputs of the source (MTCNN's bounding-box `FullyConnected` beside its `SoftmaxOutput`)
stay outputs, at their places. In the training symbol each one that is not itself a loss is
wrapped in `BlockGrad`: MXNet's executor asks a head gradient for every output whose operator
is not a loss ("the last operator is not Loss function, head_gradient is required"), and
BlockGrad needs none. BlockGrad rather than `MakeLoss(grad_scale=0)`: its forward is the
identity and its gradient exactly zero, and it adds no objective (a MakeLoss output counts as
a loss in MXNet's tools; with grad_scale 0 it is one that does nothing). Parameters that only
those outputs use get no gradient; `io["fixed_params"]` lists them for
`Module(fixed_param_names=...)`, so that weight decay leaves them as they are too. An output
that is a loss itself (a second SoftmaxOutput) stays as it is, with its own label input. Params keep every stored array (bytes as they were, V2 records, `arg:` /
`aux:` names) except those of removed variables, and add the head's weight and bias.

Fine-tuned backbone weights (`graphfix.convert.writeback.Tuning`) replace their params: an
initializer named after a variable is that variable's array (cast back to its stored dtype); a
constant the import made for a node (`<node>_weight_t`, a PReLU `_slope`) is written into the
node's own param it was derived from (reshape or transpose, checked bit for bit), when no other
node reads that param. A BatchNorm with `fix_gamma` (the import's `<node>_gamma_fixed` ones)
whose scale was trained gets `fix_gamma: False` and the trained values in its gamma param.
Anything else is refused, naming the initializer.
"""

from __future__ import annotations

__all__ = ["build_mxnet", "check_tuned"]

import copy
import json
import os
from typing import Any

import numpy as np

from graphfix.convert.mxnet._params import read_params, write_params
from graphfix.convert.mxnet._symbol import MAX_SYMBOL_BYTES, parse_symbol
from graphfix.convert.writeback import HEAD_NAME, HeadSpec, Tuning, WritePlan, refuse_tuned, source_array, to_source
from graphfix.irutil import fresh_name
from graphfix.errors import GraphfixError

#: Source ops that can be the old classifier.
_CLASSIFIER_OPS = ("FullyConnected", "Convolution")
#: MXNet BatchNorm ops (`fix_gamma` defaults to True).
_BATCH_NORMS = ("BatchNorm", "CuDNNBatchNorm", "BatchNorm_v1")
#: Ops whose backward needs no gradient from above: MXNet's losses, and BlockGrad itself.
_NO_HEAD_GRAD = ("SoftmaxOutput", "Softmax", "LinearRegressionOutput", "LogisticRegressionOutput",
                 "MAERegressionOutput", "SVMOutput", "MakeLoss", "make_loss", "BlockGrad", "stop_gradient")


def _read_doc(path: str) -> dict:
    if os.path.getsize(path) > MAX_SYMBOL_BYTES:
        raise GraphfixError("symbol file too large", path=path)
    with open(path, "rb") as fh:
        return json.loads(fh.read())


def _features_entry(nodes: list[dict], spec: HeadSpec, path: str) -> tuple[tuple[int, int], int | None]:
    """(features entry, old classifier index or None) in the source node list."""
    if spec.old_kind != "features":
        replaced = set(spec.replaced)
        cands = [i for i, n in enumerate(nodes) if n.get("name") in replaced and n["op"] in _CLASSIFIER_OPS]
        if not cands:
            raise GraphfixError(
                f"none of the replaced nodes {spec.replaced} is a FullyConnected or Convolution of the source symbol",
                kind="usage", path=path, hint="was the model converted from this symbol file?",
            )
        cls = min(cands)
        first = nodes[cls]["inputs"][0]
        return (int(first[0]), int(first[1])), cls
    named = [i for i, n in enumerate(nodes) if n.get("name") == spec.features and n["op"] != "null"]
    if len(named) != 1:
        raise GraphfixError(
            f"the head reads tensor {spec.features!r}, which is no single node of the source symbol; "
            "it cannot be written back exactly", kind="usage", path=path,
        )
    return (named[0], 0), None


def _is_true(value: str | None, default: bool) -> bool:
    return default if value is None else value.strip().lower() in ("true", "1")


def _tuned_params(sym, params, tuning: Tuning, path: str) -> tuple[dict[str, np.ndarray], dict[int, dict[str, str]]]:
    """Where the fine-tuned initializers go: (params key -> new array, node index -> attributes
    to set). See the module docstring; refuses (GraphfixError) what has no exact place."""
    if not tuning.changed:
        return {}, {}
    readers: dict[str, list] = {}
    for node in sym.nodes:
        for i, _ in node.inputs:
            if sym.nodes[i].is_variable:
                readers.setdefault(sym.nodes[i].name, []).append(node)
    variables = {n.name for n in sym.nodes if n.is_variable}
    ops = sorted((n for n in sym.nodes if not n.is_variable and n.name), key=lambda n: -len(n.name))

    def key_of(name: str) -> str | None:
        return next((k for k in (f"arg:{name}", f"aux:{name}", name) if k in params.arrays), None)

    edits: dict[str, np.ndarray] = {}
    attrs: dict[int, dict[str, str]] = {}

    def put(key: str, like: np.ndarray, how: str, change) -> None:
        arr = to_source(change.value, like, how)
        if arr is None:
            raise refuse_tuned(change, "mxnet", f"param {key} is stored as {like.dtype}, which does not "
                               "hold the fine-tuned float32 values", path)
        if key in edits and edits[key].tobytes() != arr.tobytes():
            raise refuse_tuned(change, "mxnet", f"param {key} is also written from another initializer", path)
        edits[key] = arr

    for name, change in sorted(tuning.changed.items()):
        if name in variables and key_of(name):
            key = key_of(name)
            if source_array(change.before, {key: params.arrays[key]}) is None:
                raise refuse_tuned(change, "mxnet", f"it differs from param {key} as converted", path)
            put(key, params.arrays[key], "reshape", change)
            continue
        owner = next((n for n in ops if name.startswith(f"{n.name}_")), None)
        if owner is None:
            raise refuse_tuned(change, "mxnet", "no param of the symbol holds it", path)
        var_inputs = [sym.nodes[i] for i, _ in owner.inputs if sym.nodes[i].is_variable]
        if owner.op in _BATCH_NORMS and name[len(owner.name) + 1:].startswith("gamma_fixed") \
                and _is_true(owner.attrs.get("fix_gamma"), True) and len(owner.inputs) > 1:
            gamma = sym.nodes[owner.inputs[1][0]]
            if not gamma.is_variable or len(readers.get(gamma.name, [])) != 1:
                raise refuse_tuned(change, "mxnet", f"BatchNorm {owner.name!r} fixes gamma and its gamma input is "
                                   "not a param of its own", path)
            key = key_of(gamma.name) or f"arg:{gamma.name}"
            like = params.arrays.get(key, np.zeros(change.value.shape, np.float32))
            put(key, like, "reshape", change)
            attrs[owner.index] = {"fix_gamma": "False"}
            continue
        own = {key_of(v.name): params.arrays[key_of(v.name)] for v in var_inputs
               if key_of(v.name) and len(readers.get(v.name, [])) == 1}
        hit = source_array(change.before, own)
        if hit is None:
            raise refuse_tuned(change, "mxnet", f"it is a constant the import derived for node {owner.name!r} "
                               f"({owner.op}), not one of its params", path)
        put(hit[0], params.arrays[hit[0]], hit[1], change)
    return edits, attrs


def _set_attrs(node: dict, values: dict[str, str]) -> dict:
    """A copy of raw symbol node `node` with attributes `values` set (in the dict of its layout)."""
    keys = [k for k in ("attrs", "attr", "param") if isinstance(node.get(k), dict)]
    where = next((k for k in keys if any(v in node[k] for v in values)), keys[0] if keys else "attrs")
    return {**node, where: {**node.get(where, {}), **values}}


def check_tuned(symbol_path: str, params_path: str, tuning: Tuning) -> None:
    """Refuse (GraphfixError) fine-tuned initializers the MXNet files cannot hold."""
    _tuned_params(parse_symbol(_read_doc(symbol_path), path=symbol_path), read_params(params_path), tuning, symbol_path)


def build_mxnet(symbol_path: str, params_path: str, spec: HeadSpec, tuning: Tuning | None = None) -> WritePlan:
    """Prepare the deploy symbol, training symbol and params of the multi-label model (with the
    fine-tuned backbone weights of `tuning`)."""
    doc = _read_doc(symbol_path)
    sym = parse_symbol(doc, path=symbol_path)  # validates; raw nodes are what is copied
    params = read_params(params_path)
    edits, node_attrs = _tuned_params(sym, params, tuning or Tuning({}), symbol_path)
    for index, values in node_attrs.items():
        if index >= len(doc["nodes"]):
            raise GraphfixError(f"node {sym.nodes[index].name!r} is not stored in the symbol file; its attributes "
                                "cannot be set", kind="usage", path=symbol_path)
        doc["nodes"][index] = _set_attrs(doc["nodes"][index], values)
    nodes: list[dict] = doc["nodes"]
    feat, cls = _features_entry(nodes, spec, symbol_path)
    entry_len = 3 if all(len(e) == 3 for n in nodes for e in n.get("inputs", [])) else 2

    # outputs computed from the old classifier are replaced by the new head
    tainted: set[int] = set()
    if cls is not None:
        tainted.add(cls)
        for i in range(cls + 1, len(nodes)):
            if any(int(e[0]) in tainted for e in nodes[i].get("inputs", [])):
                tainted.add(i)
    heads = [(int(h[0]), int(h[1])) for h in doc["heads"]]
    if cls is None:
        tainted = {feat[0]}
        for i in range(feat[0] + 1, len(nodes)):
            if any(int(e[0]) in tainted for e in nodes[i].get("inputs", [])):
                tainted.add(i)
        tainted.discard(feat[0])
    replaced = [h for h in heads if h[0] in tainted]
    if not replaced:
        raise GraphfixError("no output of the source symbol depends on the old classifier", kind="usage", path=symbol_path)

    taken = {n.get("name", "") for n in nodes} | {n.name for n in sym.nodes}
    names = {k: fresh_name(taken, v) for k, v in {
        "pool": f"{HEAD_NAME}_pool", "weight": f"{HEAD_NAME}_weight", "bias": f"{HEAD_NAME}_bias", "fc": HEAD_NAME,
        "sigmoid": f"{HEAD_NAME}_sigmoid", "label": f"{HEAD_NAME}_label", "loss": f"{HEAD_NAME}_loss",
    }.items()}
    num_labels, num_features = spec.weight.shape

    def entry(i: int, out: int = 0) -> list[int]:
        return [i, out, 0][:entry_len]

    def needed_by(starts: list[int]) -> set[int]:
        """The source nodes `starts` are computed from (themselves included)."""
        seen: set[int] = set()
        stack = list(starts)
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(int(e[0]) for e in nodes[i].get("inputs", []))
        return seen

    kept_heads = [h for h in heads if h not in replaced]
    # kept outputs that need a head gradient in training: BlockGrad-ed in the train symbol
    blocked = {h: fresh_name(taken, f"{nodes[h[0]].get('name', 'output')}{f'_{h[1]}' if h[1] else ''}_blockgrad")
               for h in kept_heads if nodes[h[0]]["op"] not in _NO_HEAD_GRAD}
    trained = needed_by([feat[0]] + [h[0] for h in kept_heads if h not in blocked])
    fixed_params = sorted(nodes[i]["name"] for i in needed_by([h[0] for h in blocked]) - trained
                          if nodes[i]["op"] == "null")

    def build(train: bool) -> dict:
        # the source nodes still needed, in their stored (topological) order
        order = sorted(needed_by([h[0] for h in kept_heads] + [feat[0]]))
        index = {old: new for new, old in enumerate(order)}
        out_nodes = []
        for old in order:
            node = copy.copy(nodes[old])
            node["inputs"] = [[index[int(e[0])], *e[1:]] for e in nodes[old].get("inputs", [])]
            out_nodes.append(node)

        def add(node: dict) -> int:
            out_nodes.append(node)
            return len(out_nodes) - 1

        x = entry(index[feat[0]], feat[1])
        if spec.pooled:
            x = entry(add({"op": "Pooling", "name": names["pool"], "attrs": {
                "global_pool": "True", "kernel": "(1, 1)", "pool_type": "avg"}, "inputs": [x]}))
        w = add({"op": "null", "name": names["weight"], "attrs": {"__shape__": f"({num_labels}, {num_features})"}, "inputs": []})
        b = add({"op": "null", "name": names["bias"], "attrs": {"__shape__": f"({num_labels},)"}, "inputs": []})
        fc = add({"op": "FullyConnected", "name": names["fc"], "attrs": {
            "flatten": "True", "no_bias": "False", "num_hidden": str(num_labels)}, "inputs": [x, entry(w), entry(b)]})
        if train:
            label = add({"op": "null", "name": names["label"], "inputs": []})
            top = add({"op": "LogisticRegressionOutput", "name": names["loss"], "inputs": [entry(fc), entry(label)]})
        else:
            top = add({"op": "sigmoid", "name": names["sigmoid"], "inputs": [entry(fc)]})
        new_heads = []
        for h in kept_heads:
            out_entry = entry(index[h[0]], h[1])
            if train and h in blocked:
                out_entry = entry(add({"op": "BlockGrad", "name": blocked[h], "inputs": [out_entry]}))
            new_heads.append(out_entry)
        position = heads.index(replaced[0])
        position = sum(1 for h in heads[:position] if h not in replaced)
        new_heads.insert(position, entry(top))
        out: dict[str, Any] = {
            "nodes": out_nodes,
            "arg_nodes": [i for i, n in enumerate(out_nodes) if n["op"] == "null"],
            "heads": new_heads,
        }
        if "attrs" in doc:
            out["attrs"] = doc["attrs"]
        return out

    deploy, train = build(False), build(True)
    kept_vars = {n.get("name") for n in deploy["nodes"] if n["op"] == "null"}
    removed_vars = {n.get("name") for n in nodes if n["op"] == "null"} - kept_vars

    def write_symbol(doc_out: dict):
        def write(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(doc_out, fh, indent=2)
                fh.write("\n")
        return write

    def write_weights(tmp: str) -> None:
        arrays: dict[str, np.ndarray] = {}
        for name, arr in params.arrays.items():
            short = name.partition(":")[2] if name.startswith(("arg:", "aux:")) else name
            if short not in removed_vars:
                arrays[name] = edits.get(name, arr)
        arrays.update((k, v) for k, v in edits.items() if k not in arrays)  # a gamma the file did not store
        arrays[f"arg:{names['weight']}"] = spec.weight
        arrays[f"arg:{names['bias']}"] = spec.bias
        write_params(tmp, arrays, version="V2")

    data = [n.get("name") for n in deploy["nodes"] if n["op"] == "null"
            and f"arg:{n.get('name')}" not in params.arrays and f"aux:{n.get('name')}" not in params.arrays
            and n.get("name") not in params.arrays and n.get("name") not in (names["weight"], names["bias"])]
    io = {"data": data, "label": names["label"], "probabilities": f"{names['sigmoid']}_output",
          "train_output": f"{names['loss']}_output", "head": names["fc"],
          "blocked_outputs": [f"{n}_output" for n in blocked.values()], "fixed_params": fixed_params}
    return WritePlan(write_symbol(deploy), write_weights, write_symbol(train), io)
