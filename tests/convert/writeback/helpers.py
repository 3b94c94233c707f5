"""Shared helpers of the write-back tests: fixture lists and the MXNet interpreter to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
MX = REPO / "fixtures" / "mxnet"
CAFFE = REPO / "fixtures" / "caffe"
MX_MODELS = {k: v for k, v in json.loads((MX / "manifest.json").read_text()).items()
             if not k.startswith("_") and (MX / k).is_dir() and v.get("classifier")}
#: Caffe fixtures with a classification head (mtcnn_like and ssd_head have none).
CAFFE_MODELS = ["lenet", "lenet_v1", "googlenet_block", "mobilenet_block", "resnet_block", "squeezenet_v1.1"]


def mx_paths(name: str) -> tuple[Path, Path]:
    return MX / name / f"{name}-symbol.json", MX / name / f"{name}-0000.params"


def mx_shape(name: str) -> str:
    return "data:" + ",".join(str(d) for d in MX_MODELS[name]["input_shape"])


def caffe_paths(name: str) -> tuple[Path, Path]:
    return CAFFE / f"{name}.prototxt", CAFFE / f"{name}.caffemodel"


def mxnet_python() -> str | None:
    """A Python that imports mxnet: $GRAPHFIX_MXNET_PYTHON, .venv-mxnet, or this one; else None."""
    for cand in (os.environ.get("GRAPHFIX_MXNET_PYTHON"), str(REPO / ".venv-mxnet" / "bin" / "python"), sys.executable):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import mxnet"], capture_output=True).returncode == 0
            if ok:
                return cand
    return None
