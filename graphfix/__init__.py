"""graphfix: turn single-label classifiers (MXNet, Caffe, ONNX) into multi-label ONNX models.

    import graphfix as gf
    m = gf.load("resnet-18-symbol.json")
    m2 = gf.swap_head(m, labels=20)
    m2.save("resnet-18-multilabel.onnx")
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
]

from graphfix._version import __version__
from graphfix.convert import load
from graphfix.errors import GraphfixError
from graphfix.model import Model
from graphfix.surgery import Head, find_head, swap_head
from graphfix.calibrate import Thresholds, apply_thresholds, fit_thresholds, train_head
from graphfix.convert.check import check
from graphfix.convert.export import export
from graphfix.convert.writeback import write_back
