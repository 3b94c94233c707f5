"""MXNet importer: symbol JSON (0.x, 0.9-0.12 and 1.x layouts) + .params -> ONNX, without mxnet.

`load_mxnet("x-symbol.json")` finds the params as the highest-epoch `x-NNNN.params` beside the
JSON (or takes `params=`), checks every op against the converter table (one error listing all
unsupported ops), reads the params zero-copy from a memory map and builds an opset-17 model whose
data input has a symbolic "batch" first dim.
"""

from __future__ import annotations

__all__ = ["load_mxnet", "find_params", "SUPPORTED_OPS", "supported_ops", "ops_markdown", "write_ops_doc", "OPS_DOC"]

import logging
import os
import re

from graphfix.convert._onnx import DEFAULT_OPSET
from graphfix.convert.mxnet._driver import build_model, check_supported
from graphfix.convert.mxnet._params import read_params
from graphfix.convert.mxnet._symbol import read_symbol
from graphfix.convert.mxnet._table import ops_markdown, supported_ops
from graphfix.errors import GraphfixError
from graphfix.model import Model, SourceHasher

logger = logging.getLogger(__name__)

#: Every MXNet op name graphfix converts (aliases included), sorted.
SUPPORTED_OPS: tuple[str, ...] = tuple(supported_ops())

#: The generated op list, relative to the repository root.
OPS_DOC = "docs/mxnet-supported-ops.md"

_EPOCH = re.compile(r"-(\d{4,})\.params$")


def write_ops_doc(path: str | os.PathLike = OPS_DOC) -> None:
    """Write the supported-op list (generated from the converter table) to `path`."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(ops_markdown())


def find_params(symbol_path: str | os.PathLike) -> str | None:
    """The params file of a symbol file: the highest-epoch `<prefix>-NNNN.params` beside it.

    `<prefix>` is the JSON name without `-symbol.json` (or `.json`). A plain `<prefix>.params`
    is taken when no epoch file exists. Logs a warning naming the one taken when there are several.

    Returns:
        The path, or None if there is none.
    """
    symbol_path = os.fspath(symbol_path)
    folder = os.path.dirname(symbol_path) or "."
    base = os.path.basename(symbol_path)
    for suffix in ("-symbol.json", ".json"):
        if base.endswith(suffix):
            prefix = base[: -len(suffix)]
            break
    else:
        prefix = base
    candidates: list[tuple[int, str]] = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return None
    for entry in entries:
        if entry.startswith(prefix + "-"):
            m = _EPOCH.search(entry)
            if m and entry == f"{prefix}-{m.group(1)}.params":
                candidates.append((int(m.group(1)), entry))
    if not candidates:
        plain = os.path.join(folder, prefix + ".params")
        return plain if os.path.isfile(plain) else None
    candidates.sort()
    chosen = os.path.join(folder, candidates[-1][1])
    if len(candidates) > 1:
        logger.warning(
            "%d params files for %s (epochs %s); taking the highest epoch: %s",
            len(candidates),
            base,
            ", ".join(str(e) for e, _ in candidates),
            chosen,
        )
    return chosen


def load_mxnet(
    symbol_path: str | os.PathLike,
    params: str | os.PathLike | None = None,
    input_shape: dict[str, tuple[int, ...]] | None = None,
    *,
    opset: int = DEFAULT_OPSET,
) -> Model:
    """Convert an MXNet checkpoint to a graphfix Model.

    Args:
        symbol_path: `x-symbol.json`.
        params: The `.params` file (default: `find_params(symbol_path)`).
        input_shape: Input name -> shape (key "" for the only data input). A data input's first
            dim is always the symbolic dim "batch". A weight missing from params becomes a graph
            input of exactly the shape given for its name; label names (`*_label`) are dropped.
        opset: ONNX opset to write (default 17).

    Returns:
        The Model, with `graphfix.source` metadata.

    Raises:
        GraphfixError: bad files (kind bad_input) or unsupported ops (kind unsupported_op).
    """
    symbol_path = os.fspath(symbol_path)
    if not os.path.isfile(symbol_path):
        raise GraphfixError("no such file", path=symbol_path)
    symbol = read_symbol(symbol_path)
    check_supported(symbol, symbol_path)
    params_path = os.fspath(params) if params is not None else find_params(symbol_path)
    files = [symbol_path] + ([params_path] if params_path else [])
    # sha256 of the sources (graphfix.source) runs beside conversion and saving; on a large
    # checkpoint hashing takes longer than everything else.
    with SourceHasher("mxnet", files) as hasher:
        if params_path is None:
            logger.warning("no params file found beside %s; converting without weights", symbol_path)
            pfile = None
        else:
            pfile = read_params(params_path)
        ir_model = build_model(symbol, pfile, path=symbol_path, input_shapes=input_shape, opset=opset)
        model = Model(ir_model, path=symbol_path)
        model.defer_metadata(source=hasher)
    logger.info(
        "converted %s (%s layout, %d nodes) with %s",
        symbol_path,
        symbol.layout,
        len(ir_model.graph),
        params_path or "no params",
    )
    return model
