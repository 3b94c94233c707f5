"""Shared helpers of the write-back tests: fixture lists and the MXNet interpreter to run."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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


@functools.lru_cache(maxsize=None)
def mxnet_python() -> str | None:
    """A Python that imports mxnet: $GRAPHFIX_MXNET_PYTHON, .venv-mxnet, or this one; else None."""
    for cand in (os.environ.get("GRAPHFIX_MXNET_PYTHON"), str(REPO / ".venv-mxnet" / "bin" / "python"), sys.executable):
        if cand and Path(cand).exists():
            ok = subprocess.run([cand, "-c", "import mxnet"], capture_output=True).returncode == 0
            if ok:
                return cand
    return None


def require_mxnet() -> str:
    """`mxnet_python()`, or skip the test when no Python here imports mxnet."""
    python = mxnet_python()
    if python is None:
        pytest.skip("mxnet is not importable (make .venv-mxnet: pip install -r fixtures/mxnet/requirements-mxnet.txt)")
    return python


def mxnet_job(name: str, prefix: str | Path, inputs: str | Path, io: dict) -> dict:
    """One job of mxnet_check.py: written files `prefix`, an NPZ of inputs, the sidecar's io names."""
    return {"name": name, "prefix": str(prefix), "input": str(inputs), "data": io["data"], "label": io["label"],
            "head": io["head"]}


def run_mxnet_check(mode: str, jobs: list[dict], folder: Path, *, mkldnn: bool = False) -> Any:
    """Run `mxnet_check.py MODE` (forward | fit | step) on `jobs` in real MXNet and return its output
    arrays (np.load of the NPZ it writes); MKLDNN is off unless `mkldnn`. Skips without mxnet."""
    python = require_mxnet()
    (folder / "jobs.json").write_text(json.dumps(jobs))
    out = folder / f"{mode}.npz"
    env = dict(os.environ) if mkldnn else {**os.environ, "MXNET_MKLDNN_ENABLED": "0"}
    script = REPO / "tests" / "convert" / "writeback" / "mxnet_check.py"
    done = subprocess.run([python, str(script), mode, str(folder / "jobs.json"), str(out)],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(out)


WB = REPO / "fixtures" / "writeback"
#: The MTCNN det2 style fixture (fixtures/writeback/make_mtcnn.py): symbol + params, prototxt + caffemodel.
MTCNN = WB / "mtcnn_det2"
MTCNN_SHAPE = "data:1,3,24,24"


def caffe_train_net(path: str | Path, io: dict) -> dict:
    """Check a written Caffe training prototxt the way Caffe's Net::Init builds a TRAIN net, and
    return what it found: {"outputs": net outputs, "no_backward": layers Caffe runs no backward
    for}. Asserts: every bottom exists when its layer runs; the only net output is the loss; the
    one loss is SigmoidCrossEntropyLoss(head, label); the label Input is [batch, L]."""
    from graphfix.convert.caffe._prototxt import parse_prototxt
    from graphfix.convert.caffe._upgrade import net_layers

    net = parse_prototxt(Path(path).read_text())
    layers = [la for la in net_layers(net, phase_filter=False)
              if not any(r.get("phase", 0) == 1 for r in la.msg.get("include", []))]
    available = dict.fromkeys(net.get("input", []))
    made_by: dict[str, list[str]] = {}
    for la in layers:
        for b in la.bottoms:
            assert b in available or b in made_by, f"{la.name}: bottom {b} does not exist yet"
            available.pop(b, None)
        for t in la.tops:
            available.pop(t, None)
            available[t] = None
            made_by.setdefault(t, []).append(la.name)
    losses = [la for la in layers if la.type.endswith("Loss")]
    assert [(la.type, la.bottoms) for la in losses] == [("SigmoidCrossEntropyLoss", [io["head"], io["label"]])]
    assert list(available) == [losses[0].tops[0]], f"net outputs {list(available)}: only the loss may be one"
    # Caffe's backward analysis: a layer runs backward only when one of its tops is under the loss
    under = set(losses[0].bottoms)
    no_backward = []
    for la in reversed([la for la in layers if la is not losses[0]]):
        if set(la.tops) & under and la.type != "Silence":
            under |= set(la.bottoms)
        else:
            no_backward.append(la.name)
    return {"outputs": list(available), "no_backward": no_backward[::-1], "layers": layers}
