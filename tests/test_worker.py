"""The fleet's worker pool: one process converts many models; a crash or hang replaces that worker only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from graphfix.worker import Worker
from tests.conftest import FIXTURES, ROOT

LENET = FIXTURES / "onnx" / "cnn_softmax.onnx"

#: Installed through PYTHONPATH: inside a fleet worker only, opening a path with "crashme" in it
#: kills the process with SIGSEGV, and one with "hangme" in it sleeps for an hour.
FAULTS = """
import os, signal, sys, time
if "graphfix.worker" in sys.orig_argv:
    def _hook(event, args):
        if event == "open" and isinstance(args[0], str):
            if "crashme" in args[0]:
                os.kill(os.getpid(), signal.SIGSEGV)
            if "hangme" in args[0]:
                time.sleep(3600)
    sys.addaudithook(_hook)
"""


def _run(tmp_path: Path, names: list[str], *args: str, faults: bool = False) -> subprocess.CompletedProcess:
    """`graphfix convert` over a folder holding one copy of LeNet per name (faults: with FAULTS active)."""
    src, out = tmp_path / "models", tmp_path / "out"
    for name in names:
        (src / name).mkdir(parents=True)
        shutil.copy(LENET, src / name / f"{name}.onnx")
    env = dict(os.environ)
    path = [str(ROOT)]
    if faults:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(FAULTS)
        path.insert(0, str(tmp_path / "site"))
    env["PYTHONPATH"] = os.pathsep.join(path)
    res = subprocess.run([sys.executable, "-m", "graphfix.cli", "convert", str(src), "-o", str(out), "-r", *args],
                         capture_output=True, text=True, env=env, timeout=600)
    assert "Traceback" not in res.stderr, res.stderr
    return res


def _fleet(tmp_path: Path, names: list[str], *args: str, faults: bool = False) -> dict:
    """The --json summary of `_run`, one row per model folder name, plus "_rc"."""
    out = tmp_path / "out"
    res = _run(tmp_path, names, "--json", *args, faults=faults)
    doc = json.loads(res.stdout)
    assert doc == json.loads((out / "summary.json").read_text())
    return {Path(m["model"]).parent.name: m["result"] for m in doc["models"]} | {"_rc": res.returncode}


def test_worker_runs_many_commands_in_one_process():
    worker = Worker()
    try:
        worker.ready(120)
        first = worker.call(["inspect", str(LENET), "--json"], timeout=120)
        bad = worker.call(["inspect", "/no/such/model.onnx"], timeout=120)
        usage = worker.call(["inspect", "--no-such-flag"], timeout=120)
        assert first["rc"] == 0 and json.loads(first["stdout"])["ok"], first
        assert bad["rc"] == 2 and bad["stderr"].startswith("graphfix: error: /no/such/model.onnx"), bad
        assert usage["rc"] == 2 and "Traceback" not in usage["stderr"], usage
        assert worker.calls == 3 and worker.proc.poll() is None and worker.rss_mb > 10
    finally:
        worker.close()
    assert worker.proc.returncode == 0


def test_crash_and_hang_replace_only_that_worker(tmp_path):
    names = ["a_ok", "b_crashme", "c_ok", "d_hangme", "e_ok"]
    rows = _fleet(tmp_path, names, "--jobs", "1", "--timeout", "8", faults=True)
    assert rows.pop("_rc") == 1
    assert [rows[n]["result"] for n in names] == ["ok", "crashed", "ok", "timeout", "ok"], rows
    crash = rows["b_crashme"]
    assert "signal 11" in crash["error"] and "Fatal Python error" in crash["error"], crash
    assert crash["attempts"] == 2  # its first worker had converted a_ok: retried alone, crashed again
    assert rows["d_hangme"]["error"] == "no result after 8 s"
    pids = [rows[n]["worker"] for n in ("a_ok", "b_crashme", "c_ok", "e_ok")]
    assert len(set(pids)) == 4, pids  # each fault cost its worker, and only that
    out = tmp_path / "out"
    assert sorted(p.parent.name for p in out.rglob("*.onnx")) == ["a_ok", "c_ok", "e_ok"]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".graphfix-*"))


def test_workers_are_recycled_after_n_models_and_over_memory(tmp_path):
    names = [f"m{i}" for i in range(5)]
    rows = _fleet(tmp_path / "n", names, "--jobs", "1", "--recycle-after", "2")
    assert rows.pop("_rc") == 0 and all(r["result"] == "ok" for r in rows.values()), rows
    pids = [rows[n]["worker"] for n in names]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] and len(set(pids)) == 3, pids
    rows = _fleet(tmp_path / "mb", names[:3], "--jobs", "1", "--recycle-mb", "1")
    assert rows.pop("_rc") == 0
    assert len({r["worker"] for r in rows.values()}) == 3, rows  # every worker is over 1 MB


def test_two_slots_share_the_work_across_two_workers(tmp_path):
    names = [f"m{i}" for i in range(8)]
    rows = _fleet(tmp_path, names, "--jobs", "2")
    assert rows.pop("_rc") == 0 and all(r["result"] == "ok" for r in rows.values()), rows
    assert len({r["worker"] for r in rows.values()}) == 2, rows


def test_text_table_reports_a_timeout_and_leaves_no_output_for_it(tmp_path):
    res = _run(tmp_path, ["a_ok", "b_hangme"], "--timeout", "5", faults=True)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "timeout" in res.stdout and "of 2 models" in res.stdout, res.stdout
    out = tmp_path / "out"
    assert [p.parent.name for p in out.rglob("*.onnx")] == ["a_ok"]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob(".graphfix-*"))
