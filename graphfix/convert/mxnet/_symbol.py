"""Reader for MXNet symbol JSON, all three layouts, into a list of `SymbolNode`.

Layouts (see /work/shared/formats/mxnet.md):

1. 1.x (`sym.save`, `net.export`): node attributes under ``attrs``, 3-element inputs, a top-level
   ``attrs.mxnet_version``.
2. 0.9-0.12: attributes under ``attr``.
3. 0.x (2015-2016): attributes under ``param`` (plus ``attr``), ``backward_source_id``,
   2-element inputs, no ``mxnet_version``.

The three attribute dicts are merged like nnvm's loader does. Files without ``mxnet_version``
get the v0.8 upgrade: auxiliary states were not stored before 0.9, so a node with fewer inputs
than its op lists gets the missing trailing ones appended as new variables named
``<node name>_<input name>`` (``bn1_moving_mean``), the names their ``aux:`` arrays carry.
Hidden ``__x__`` attributes (``__shape__`` aside, kept for variables) are dropped.
"""

from __future__ import annotations

__all__ = ["SymbolNode", "Symbol", "read_symbol", "parse_symbol", "OP_INPUTS"]

import json
import logging
import os
from dataclasses import dataclass, field

from graphfix.errors import GraphfixError

logger = logging.getLogger(__name__)

#: Input names of ops whose trailing inputs the v0.8 upgrade may have to add (MXNet ListArguments
#: + ListAuxiliaryStates order). Only the inputs past the stored ones are ever created.
OP_INPUTS: dict[str, tuple[str, ...]] = {
    "BatchNorm": ("data", "gamma", "beta", "moving_mean", "moving_var"),
    "CuDNNBatchNorm": ("data", "gamma", "beta", "moving_mean", "moving_var"),
    "BatchNorm_v1": ("data", "gamma", "beta", "moving_mean", "moving_var"),
}


@dataclass
class SymbolNode:
    """One node of the symbol graph.

    Attributes:
        index: Position in the JSON node list.
        op: MXNet op name ("null" for variables).
        name: Name as stored (may be empty or duplicated).
        attrs: Merged attributes, hidden `__x__` keys removed.
        inputs: (node index, output index) pairs.
        hidden: Hidden `__x__` attributes (only `__shape__`/`__dtype__` are used).
    """

    index: int
    op: str
    name: str
    attrs: dict[str, str] = field(default_factory=dict)
    inputs: list[tuple[int, int]] = field(default_factory=list)
    hidden: dict[str, str] = field(default_factory=dict)

    @property
    def is_variable(self) -> bool:
        return self.op == "null"


@dataclass
class Symbol:
    """A parsed symbol file.

    Attributes:
        nodes: In topological order (as stored, plus upgrade-created variables appended).
        heads: Graph outputs as (node index, output index).
        version: ``mxnet_version`` as an int (e.g. 10901), or 800 for files without one.
        layout: "1.x", "0.9" or "0.x".
    """

    nodes: list[SymbolNode]
    heads: list[tuple[int, int]]
    version: int
    layout: str


#: Bounds on what a symbol file may declare (real networks are far below them).
MAX_SYMBOL_BYTES = 256 << 20
MAX_NODES = 100_000
MAX_STRING = 4096


def _fail(path, message: str, node: str | None = None, hint: str | None = None) -> GraphfixError:
    return GraphfixError(message, path=path, node=node, hint=hint)


def read_symbol(path: str | os.PathLike) -> Symbol:
    """Read and validate a symbol JSON file.

    Raises:
        GraphfixError: the file is not JSON, not a symbol, or refers to missing nodes.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_SYMBOL_BYTES:
            raise _fail(path, f"symbol file is {size} bytes; more than {MAX_SYMBOL_BYTES} is not a real network")
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError as exc:
        raise _fail(path, f"cannot read symbol file ({exc.strerror})") from exc
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, f"not an MXNet symbol file: invalid JSON ({exc})") from exc
    except RecursionError:
        raise _fail(path, "not an MXNet symbol file: JSON nested too deeply") from None
    return parse_symbol(doc, path=path)


def _str_attrs(raw, path, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _fail(path, f"not an MXNet symbol file: {where} is not an object")
    out = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    if any(len(k) > MAX_STRING or len(v) > MAX_STRING for k, v in out.items()):
        raise _fail(path, f"{where} has an attribute longer than {MAX_STRING} characters")
    return out


def _entry(raw, path, who: str, count: int) -> tuple[int, int]:
    if not isinstance(raw, list) or len(raw) not in (2, 3) or not all(isinstance(x, int) for x in raw):
        raise _fail(path, f"{who} has a malformed input entry {raw!r}", hint="expected [node_id, output_index(, version)]")
    nid, idx = raw[0], raw[1]
    if nid < 0 or nid >= count or idx < 0:
        raise _fail(path, f"{who} refers to missing node {nid} (the file has {count} nodes)")
    return nid, idx


def parse_symbol(doc, *, path: str | None = None) -> Symbol:
    """Parse a decoded symbol JSON document (see `read_symbol`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or "heads" not in doc:
        raise _fail(path, "not an MXNet symbol file: no 'nodes' list and 'heads'")
    raw_nodes = doc["nodes"]
    if not raw_nodes:
        raise _fail(path, "not an MXNet symbol file: no nodes")
    if len(raw_nodes) > MAX_NODES:
        raise _fail(path, f"{len(raw_nodes)} nodes; more than {MAX_NODES} is refused")
    top = doc.get("attrs") or {}
    version_attr = top.get("mxnet_version") if isinstance(top, dict) else None
    version = 800
    if isinstance(version_attr, list) and len(version_attr) == 2:
        try:
            version = int(version_attr[1])
        except (TypeError, ValueError):
            version = 800
    layout = "1.x"
    count = len(raw_nodes)
    nodes: list[SymbolNode] = []
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict) or not isinstance(raw.get("op"), str):
            raise _fail(path, f"not an MXNet symbol file: node {i} has no 'op'")
        name = raw.get("name", "")
        if not isinstance(name, str):
            raise _fail(path, f"not an MXNet symbol file: node {i} has a non-string name")
        if len(name) > MAX_STRING or len(raw["op"]) > MAX_STRING:
            raise _fail(path, f"node {i} has a name or op longer than {MAX_STRING} characters")
        who = f"node {i} {name!r} ({raw['op']})"
        if "param" in raw or "backward_source_id" in raw:
            layout = "0.x"
        elif "attr" in raw and layout == "1.x":
            layout = "0.9"
        merged: dict[str, str] = {}
        for key in ("param", "attr", "attrs"):
            merged.update(_str_attrs(raw.get(key), path, f"{who} {key}"))
        attrs = {k: v for k, v in merged.items() if not (k.startswith("__") and k.endswith("__"))}
        hidden = {k: v for k, v in merged.items() if k.startswith("__") and k.endswith("__")}
        inputs_raw = raw.get("inputs", [])
        if not isinstance(inputs_raw, list):
            raise _fail(path, f"{who} has malformed inputs")
        inputs = [_entry(e, path, who, count) for e in inputs_raw]
        for nid, _ in inputs:
            if nid >= i:
                raise _fail(path, f"{who} refers to node {nid}, which does not come before it", hint="nodes must be in topological order")
        nodes.append(SymbolNode(index=i, op=raw["op"], name=name, attrs=attrs, inputs=inputs, hidden=hidden))
    heads_raw = doc["heads"]
    if not isinstance(heads_raw, list) or not heads_raw:
        raise _fail(path, "not an MXNet symbol file: 'heads' is empty")
    heads = [_entry(h, path, "heads", count) for h in heads_raw]
    if version < 900:
        _upgrade_aux(nodes)
    return Symbol(nodes=nodes, heads=heads, version=version, layout=layout)


def _upgrade_aux(nodes: list[SymbolNode]) -> None:
    """v0.8 upgrade: append missing auxiliary-state variables as `<node>_<input>`."""
    for node in list(nodes):
        names = OP_INPUTS.get(node.op)
        if not names or len(node.inputs) >= len(names):
            continue
        for input_name in names[len(node.inputs) :]:
            var = SymbolNode(index=len(nodes), op="null", name=f"{node.name}_{input_name}")
            nodes.append(var)
            node.inputs.append((var.index, 0))
            logger.debug("v0.8 upgrade: added variable %s", var.name)
