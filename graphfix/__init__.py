"""graphfix: turn single-label classifiers (MXNet, Caffe, ONNX) into multi-label ONNX models.

    import graphfix as gf
    m = gf.load("resnet-18-symbol.json")
    m2 = gf.swap_head(m, labels=20)
    m2.save("resnet-18-multilabel.onnx")

The names below are imported on first use (PEP 562), so `import graphfix` and the CLI's
`--help` stay fast; `from graphfix import load` works as usual.
"""

from __future__ import annotations

__all__ = [
    "__version__",
    "GraphfixError",
    "Model",
    "Head",
    "Thresholds",
    "load",
    "find_head",
    "swap_head",
    "train_head",
    "fit_thresholds",
    "apply_thresholds",
    "export",
    "check",
    "write_back",
    "save_features",
    "save_predictions",
]

import importlib
from typing import TYPE_CHECKING, Any

from graphfix._deferred import defer_sympy
from graphfix._version import __version__
from graphfix.errors import GraphfixError

defer_sympy()  # before any module imports onnx_ir: sympy loads on first use, not at start (~200 ms)

#: Public name -> the module that defines it.
_LAZY = {
    "Model": "graphfix.model",
    "load": "graphfix.convert",
    "Head": "graphfix.surgery",
    "find_head": "graphfix.surgery",
    "swap_head": "graphfix.surgery",
    "Thresholds": "graphfix.calibrate",
    "apply_thresholds": "graphfix.calibrate",
    "fit_thresholds": "graphfix.calibrate",
    "train_head": "graphfix.train",
    "check": "graphfix.convert.check",
    "export": "graphfix.convert.export",
    "write_back": "graphfix.convert.writeback",
    "save_features": "graphfix.data",
    "save_predictions": "graphfix.calibrate",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graphfix' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and IDEs
    from graphfix.calibrate import Thresholds, apply_thresholds, fit_thresholds, save_predictions
    from graphfix.data import save_features
    from graphfix.train import train_head
    from graphfix.convert import load
    from graphfix.convert.check import check
    from graphfix.convert.export import export
    from graphfix.convert.writeback import write_back
    from graphfix.model import Model
    from graphfix.surgery import Head, find_head, swap_head
