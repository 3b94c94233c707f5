"""Fast start (issue 16): `--help`, `--version` and `CMD --help` import no heavy library."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from graphfix.cli import COMMANDS
from tests.conftest import ROOT

HEAVY = ("onnx", "onnx_ir", "onnxruntime", "numpy", "torch", "PIL", "sympy.core", "ml_dtypes", "matplotlib", "tqdm", "ray")

PROBE = """
import json, sys
from graphfix.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(json.dumps({"rc": rc, "loaded": sorted(m for m in %r if m in sys.modules)}), file=sys.__stderr__)
""" % (HEAVY,)


def _loaded(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env, timeout=60)
    return json.loads(res.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["--version"], [], *[[name, "--help"] for name in COMMANDS]],
                         ids=lambda a: " ".join(a) or "no-args")
def test_help_and_version_import_no_heavy_module(args):
    doc = _loaded(*args)
    assert doc["loaded"] == [], doc
    assert doc["rc"] in (0, 2), doc


def test_top_level_help_lists_every_command_with_its_summary(capsys):
    from graphfix import cli

    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for name, module in COMMANDS.items():
        first = (__import__(module, fromlist=["x"]).__doc__ or "").strip().splitlines()[0]
        assert name in out and first.split()[0] in out


def test_lazy_package_attributes():
    import graphfix as gf

    assert callable(gf.load) and gf.Model.__name__ == "Model" and "swap_head" in dir(gf)
    with pytest.raises(AttributeError):
        gf.no_such_name  # noqa: B018


@pytest.mark.parametrize("module", ["graphfix.model", "graphfix.convert", "graphfix.surgery", "graphfix.calibrate",
                                    "graphfix.convert.export", "graphfix.convert.check", "graphfix.fleet", "graphfix.output"])
def test_each_module_imports_on_its_own(module):
    """With a lazy package, no module may rely on graphfix/__init__ having imported another first."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


REAL = """
import json, sys
from graphfix.cli import main
try:
    rc = main(sys.argv[1:])
except SystemExit as exc:
    rc = exc.code
print(json.dumps({"rc": rc, "sympy": "sympy.core" in sys.modules, "ort": "onnxruntime" in sys.modules}), file=sys.__stderr__)
"""


def test_inspect_and_convert_do_not_load_sympy_or_onnxruntime(tmp_path):
    """onnx_ir imports sympy at start; graphfix defers it (graphfix._deferred) to its first use."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    lenet = ROOT / "fixtures" / "caffe" / "lenet.prototxt"
    for args in (["inspect", str(ROOT / "fixtures" / "onnx" / "cnn_softmax.onnx")],
                 ["convert", str(lenet), "--weights", str(lenet.with_suffix(".caffemodel")), "-o", str(tmp_path / "l.onnx")]):
        res = subprocess.run([sys.executable, "-c", REAL, *args], capture_output=True, text=True, env=env, timeout=120)
        doc = json.loads(res.stderr.strip().splitlines()[-1])
        assert doc == {"rc": 0, "sympy": False, "ort": False}, (args, res.stderr[-2000:])
    # and where a command does need it, it is there: symbolic dims still do arithmetic
    res = subprocess.run([sys.executable, "-c", "import graphfix.model, onnx_ir as ir; print(ir.SymbolicDim('N') * 2)"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.stdout.strip() == "2*N", res.stderr
