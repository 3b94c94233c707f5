"""`graphfix convert DIR -o OUT --ray`: one Ray task per model, with the local fleet's rules and summary.

Each test runs the CLI as a subprocess (like tests/test_worker.py), which starts its own local Ray
(`init_ray`: this machine's CPUs, no dashboard). Faults are injected through a sitecustomize.py on
PYTHONPATH: Ray's raylet starts its workers with the driver's environment, and the audit hook
acts only in Ray worker processes (`default_worker.py` on their command line).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray")

from tests.conftest import FIXTURES, ROOT  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_fleet", ROOT / "benchmarks" / "bench_fleet.py")
bench_fleet = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_fleet)

LENET = FIXTURES / "onnx" / "cnn_softmax.onnx"

#: Inside Ray workers only: opening a path with "crashme" in it kills the process with SIGSEGV;
#: one with "hangme" sleeps for an hour, and so does opening a staged output ("~gfx-") of
#: "hangwrite" for writing; paths under $GRAPHFIX_TEST_HIDE cannot be listed or opened (a node
#: that does not mount that folder).
FAULTS = """
import os, signal, sys, time
if any(a.endswith("default_worker.py") for a in sys.orig_argv):
    HIDE = os.environ.get("GRAPHFIX_TEST_HIDE")
    def _hook(event, args):
        if event not in ("open", "os.listdir", "os.scandir") or not args or not isinstance(args[0], str):
            return
        if HIDE and args[0].startswith(HIDE):
            raise FileNotFoundError(2, "No such file or directory", args[0])
        if event == "open" and "crashme" in args[0]:
            os.kill(os.getpid(), signal.SIGSEGV)
        writing = event == "open" and len(args) > 2 and (args[2] or 0) & (os.O_WRONLY | os.O_RDWR)
        if event == "open" and "hangme" in args[0] or writing and "hangwrite" in args[0] and "~gfx-" in args[0]:
            time.sleep(3600)
    sys.addaudithook(_hook)
"""


def _cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None, site: str = FAULTS) -> subprocess.CompletedProcess:
    """`python -m graphfix.cli ARGS` with `site` as sitecustomize.py on PYTHONPATH."""
    (tmp_path / "site").mkdir(exist_ok=True)
    (tmp_path / "site" / "sitecustomize.py").write_text(site)
    full = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "site"), str(ROOT)]), GRAPHFIX_PROGRESS="0",
                **(env or {}))
    res = subprocess.run([sys.executable, "-m", "graphfix.cli", *args], capture_output=True, text=True, env=full,
                         timeout=300)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def _doc(res: subprocess.CompletedProcess, out: Path) -> dict:
    doc = json.loads(res.stdout)
    assert doc == json.loads((out / "summary.json").read_text())
    return doc


def _kinds(doc: dict, root: Path) -> dict[str, str]:
    return {str(Path(m["model"]).relative_to(root)): m["result"]["result"] for m in doc["models"]}


def _no_staging(out: Path) -> None:
    left = [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".graphfix-")]
    assert not left, left


def test_ray_fleet_matches_the_local_fleet(tmp_path):
    src = tmp_path / "models"
    n = bench_fleet.make_fleet(src, 12, 3)
    local = _doc(_cli(tmp_path, "convert", str(src), "-o", str(tmp_path / "local"), "-r", "--jobs", "2", "--json"),
                 tmp_path / "local")
    res = _cli(tmp_path, "convert", str(src), "-o", str(tmp_path / "ray"), "-r", "--ray", "--recycle-after", "3", "--json")
    assert res.returncode == 1, res.stderr
    ray = _doc(res, tmp_path / "ray")
    assert ray["counts"] == local["counts"] and ray["counts"]["ok"] == n and ray["counts"]["failed"] == 3
    assert _kinds(ray, src) == _kinds(local, src)
    for lm, rm in zip(local["models"], ray["models"]):
        assert set(rm) == set(lm) and set(rm["result"]) == set(lm["result"]) | {"node"}, (lm, rm)
        if lm["result"]["result"] == "ok":
            assert Path(rm["output"]).read_bytes() == Path(lm["output"]).read_bytes(), rm["output"]
        else:
            assert rm["result"]["error"] == lm["result"]["error"]
    pids = [m["result"]["worker"] for m in ray["models"]]
    assert max(pids.count(p) for p in pids) <= 3, pids  # --recycle-after 3 is the tasks' max_calls
    _no_staging(tmp_path / "ray")
    # a re-run skips what is up to date, and the text table is the local one
    res = _cli(tmp_path, "convert", str(src), "-o", str(tmp_path / "ray"), "-r", "--ray")
    assert res.returncode == 1 and f"{n} skipped" in res.stdout and f"of {n + 3} models" in res.stdout, res.stdout


def test_ray_crash_is_retried_once_and_a_hang_times_out(tmp_path):
    names = ["a_ok", "b_crashme", "c_ok", "d_hangme", "e_ok", "f_hangwrite"]
    src, out = tmp_path / "models", tmp_path / "out"
    for name in names:
        (src / name).mkdir(parents=True)
        shutil.copy(LENET, src / name / f"{name}.onnx")
    res = _cli(tmp_path, "convert", str(src), "-o", str(out), "-r", "--ray", "--timeout", "6", "--json")
    assert res.returncode == 1, res.stderr
    rows = {Path(m["model"]).parent.name: m["result"] for m in _doc(res, out)["models"]}
    assert [rows[n]["result"] for n in names] == ["ok", "crashed", "ok", "timeout", "ok", "timeout"], rows
    assert rows["b_crashme"]["attempts"] == 2 and "worker died" in rows["b_crashme"]["error"], rows["b_crashme"]
    assert rows["d_hangme"]["error"] == rows["f_hangwrite"]["error"] == "no result after 6 s"  # the local wording
    assert all("attempts" not in rows[n] for n in names if n != "b_crashme"), rows
    assert sorted(p.parent.name for p in out.rglob("*.onnx")) == ["a_ok", "c_ok", "e_ok"]
    _no_staging(out)  # f_hangwrite was killed with its staging folder in place: removed


def test_ray_refuses_a_folder_a_node_cannot_see(tmp_path):
    src, out = tmp_path / "models", tmp_path / "out"
    (src / "m").mkdir(parents=True)
    shutil.copy(LENET, src / "m" / "m.onnx")
    res = _cli(tmp_path, "convert", str(src), "-o", str(out), "-r", "--ray", env={"GRAPHFIX_TEST_HIDE": str(src)})
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("graphfix: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"graphfix: error: {src}: not visible on Ray node "), res.stderr
    assert "a file system every node shares" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == []  # nothing converted, marker removed, no summary


def test_ray_usage_errors_are_one_line(tmp_path):
    res = _cli(tmp_path, "convert", str(LENET), "-o", str(tmp_path / "x.onnx"), "--ray")
    assert res.returncode == 2 and res.stderr.strip().endswith("--ray is for fleets (a folder or several models); "
                                                                "convert one model without it"), res.stderr
    no_ray = "import sys\nsys.modules['ray'] = None\n"  # `import ray` fails as if not installed
    res = _cli(tmp_path, "convert", str(FIXTURES / "onnx"), "-o", str(tmp_path / "o"), "--ray", site=no_ray)
    assert res.returncode == 2 and res.stderr.strip() == "graphfix: error: --ray needs Ray: pip install 'graphfix[ray]'"
    res = _cli(tmp_path, "convert", str(FIXTURES / "onnx"), "-o", str(tmp_path / "o"), "--ray", "127.0.0.1:1")
    assert res.returncode == 2 and res.stderr.strip().startswith("graphfix: error: cannot start or join Ray at"), res.stderr
