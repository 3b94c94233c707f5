"""Fleet conversion: find every model under some folders and convert each in its own process.

A crash, hang or memory blow-up in one model never stops the rest: each model runs as
`python -m graphfix.cli convert MODEL -o OUT --json` with a timeout (SIGTERM, then SIGKILL),
and its JSON document (or its failure) becomes one row of the summary. Outputs mirror the
input folder layout; a re-run skips models whose output is newer than all their sources.
"""

from __future__ import annotations

__all__ = ["Job", "discover", "run_fleet", "summary_table", "job_dicts"]

import contextlib
import errno
import glob
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graphfix.errors import GraphfixError
from graphfix.output import clean_stale, is_staging_name
from graphfix.progress import bar

#: Caffe prototxt names that are training or solver files, not deploy nets.
_NOT_DEPLOY = re.compile(r"(solver|train_val|train_test|trainval|_train\b|_solver)", re.IGNORECASE)


@dataclass
class Job:
    """One model to convert."""

    model: str
    format: str
    sources: list[str]
    output: str
    display: str
    result: dict[str, Any] = field(default_factory=dict)


def _sources(model: Path, fmt: str) -> list[Path]:
    if fmt == "mxnet":
        stem = model.name[: -len("-symbol.json")] if model.name.endswith("-symbol.json") else model.stem
        return [model, *sorted(model.parent.glob(f"{glob.escape(stem)}-*.params"))]
    if fmt == "caffe":
        weights = _caffe_weights(model)
        return [model] + ([weights] if weights else [])
    return [model]


def _caffe_weights(prototxt: Path) -> Path | None:
    """The caffemodel named like the prototxt (`x.prototxt` / `x_deploy.prototxt` -> `x*.caffemodel`),
    else the only one in the folder."""
    found = sorted(prototxt.parent.glob("*.caffemodel"))
    stem = prototxt.name[: -len(".prototxt")]
    for candidate in (stem, stem.replace("_deploy", "").replace("deploy_", ""), stem.replace("deploy", "").strip("_-.")):
        match = [w for w in found if w.stem == candidate]
        if candidate and match:
            return match[0]
    return found[0] if len(found) == 1 else None


def _problem(path: Path) -> str | None:
    """Why a candidate file cannot be converted without opening it, or None."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if os.path.islink(path):
            return f"dangling symlink (to {os.readlink(path)})"
        return f"cannot read ({exc.strerror})"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket"
    return f"is {kind}, not a regular file (not opened)"


def _models_in(folder: Path, recursive: bool, skip: Path | None) -> list[tuple[Path, str]]:
    """Candidate model files by name, whatever they are (FIFOs and broken links included)."""
    found: list[tuple[Path, str]] = []
    for dirpath, dirnames, filenames in os.walk(folder):  # symlinked folders are not entered
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if recursive and not is_staging_name(d)
                             and not (skip is not None and (here / d).resolve() == skip))
        for name in sorted(filenames):
            path = here / name
            if name.endswith("-symbol.json"):
                found.append((path, "mxnet"))
            elif name.endswith(".onnx"):
                found.append((path, "onnx"))
            elif name.endswith(".prototxt") and not _NOT_DEPLOY.search(name):
                if _problem(path) is not None or _caffe_weights(path) is not None:
                    found.append((path, "caffe"))
    return sorted(found)


def _stem(path: Path, fmt: str) -> str:
    name = path.name
    for suffix in ("-symbol.json", ".prototxt", ".onnx"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def discover(inputs: list[str], outdir: str, *, recursive: bool = False) -> list[Job]:
    """Every model under `inputs` (folders or model files), with its mirrored output path."""
    out_root = Path(outdir).resolve()
    jobs: list[Job] = []
    for item in inputs:
        root = Path(item)
        if not root.exists():
            raise GraphfixError("no such file or folder", kind="usage", path=item)
        if root.is_dir():
            models = [(p, f, p.parent.relative_to(root)) for p, f in _models_in(root, recursive, out_root)]
        else:
            fmt = "mxnet" if root.name.endswith(".json") else "caffe" if root.name.endswith((".prototxt", ".pbtxt")) else "onnx"
            models = [(root, fmt, Path("."))]
        for path, fmt, rel in models:
            out = out_root / rel / f"{_stem(path, fmt)}.onnx"
            problem = _problem(path)
            sources = [path] if problem else _sources(path, fmt)
            job = Job(str(path), fmt, [str(s) for s in sources], str(out), str(path))
            problem = problem or next((f"{s.name}: {p}" for s in sources[1:] if (p := _problem(s))), None)
            if problem:
                job.result = {"result": "failed", "seconds": 0.0, "error": problem}
            jobs.append(job)
    seen: dict[str, int] = {}
    for job in jobs:  # two formats with one stem in one folder: keep both, named by format
        seen[job.output] = seen.get(job.output, 0) + 1
    for job in jobs:
        if seen[job.output] > 1:
            job.output = job.output[: -len(".onnx")] + f".{job.format}.onnx"
    return jobs


def _up_to_date(job: Job) -> bool:
    if not os.path.isfile(job.output):
        return False
    newest = max(os.path.getmtime(s) for s in job.sources if os.path.exists(s))
    return os.path.getmtime(job.output) >= newest


def _first_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    errors = [ln for ln in lines if ln.startswith("graphfix: error:")]
    line = errors[0] if errors else lines[-1]
    return line.removeprefix("graphfix: error: ")[:300]


class _Workers:
    """The live worker processes, so that an interrupt can kill every one of them at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen] = set()
        self.stopped = False

    def start(self, cmd: list[str]) -> subprocess.Popen | None:
        """Start a worker in its own session (None once stopped)."""
        with self._lock:
            if self.stopped:
                return None
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            self._procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        """Stop starting workers and SIGKILL every running one (its whole process group)."""
        with self._lock:
            self.stopped = True
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)


def _convert_one(job: Job, extra: list[str], timeout: float, workers: _Workers) -> dict[str, Any]:
    os.makedirs(os.path.dirname(job.output), exist_ok=True)
    cmd = [sys.executable, "-m", "graphfix.cli", "convert", job.model, "-o", job.output, "--json", *extra]
    if job.format == "caffe" and len(job.sources) > 1:
        cmd += ["--weights", job.sources[1]]
    start = time.perf_counter()
    proc = workers.start(cmd)
    if proc is None:
        return {"result": "interrupted", "seconds": 0.0, "error": "not started: the fleet was interrupted"}
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        status = None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            stdout, stderr = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
        status = "timeout"
    finally:
        workers.done(proc)
    seconds = round(time.perf_counter() - start, 3)
    row: dict[str, Any] = {"seconds": seconds}
    try:
        doc = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        doc = {}
    if workers.stopped and proc.returncode != 0:
        row.update(result="interrupted", error="stopped: the fleet was interrupted")
    elif status == "timeout":
        row.update(result="timeout", error=f"no result after {timeout:g} s")
    elif proc.returncode < 0:
        row.update(result="crashed", error=f"worker died with signal {-proc.returncode} {_first_line(stderr)}".strip())
    elif proc.returncode == 0 and doc.get("ok"):
        row.update(result="ok", nodes=doc.get("nodes"), verify=doc.get("verify"))
    else:
        row.update(result="failed", error=_first_line(stderr) or f"exit status {proc.returncode}")
    if row["result"] != "ok":
        clean_stale(os.path.dirname(job.output))  # what a killed worker could not remove
    return row


def run_fleet(jobs: list[Job], *, workers: int = 1, timeout: float = 600, force: bool = False, extra: list[str] | None = None) -> list[Job]:
    """Convert `jobs` with `workers` processes at a time; fills each job's `result` row.

    On SIGINT/SIGTERM (KeyboardInterrupt) every worker is killed, unfinished jobs are marked
    "interrupted" and the interrupt is raised again once the rows are filled.
    """
    extra = extra or []
    todo = []
    for job in jobs:
        if job.result:  # refused at discovery (FIFO, broken link)
            continue
        if not force and _up_to_date(job):
            job.result = {"result": "skipped", "seconds": 0.0, "error": "output is newer than its sources"}
        else:
            todo.append(job)
    live = _Workers()
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        with bar(total=len(todo), desc="converting", unit="model") as progress:
            futures = {pool.submit(_convert_one, job, extra, timeout, live): job for job in todo}
            for future in as_completed(futures):
                futures[future].result = future.result()
                progress.update(1)
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):  # finish the clean-up first
            signal.signal(sig, signal.SIG_IGN)
        live.kill_all()
        pool.shutdown(wait=True, cancel_futures=True)
        for future, job in futures.items():
            if future.done() and not future.cancelled() and future.exception() is None:
                job.result = future.result()
            if not job.result:
                job.result = {"result": "interrupted", "seconds": 0.0, "error": "not converted: the fleet was interrupted"}
        for folder in sorted({os.path.dirname(j.output) for j in todo}):
            clean_stale(folder)
        raise
    finally:
        pool.shutdown(wait=True)
    return jobs


def summary_table(jobs: list[Job]) -> list[str]:
    """The human summary: model, format, nodes, seconds, result, first error line."""
    rows = [("model", "format", "nodes", "seconds", "result", "error")]
    for j in jobs:
        r = j.result
        error = r.get("error", "") or ""
        if r.get("result") == "ok" and r.get("verify"):
            error = r["verify"].get("summary", "")
        rows.append((j.display, j.format, str(r.get("nodes") or ""), f"{r.get('seconds', 0):.2f}", r.get("result", ""), error[:120]))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < 5 else cell for i, cell in enumerate(row)).rstrip() for row in rows]
    counts: dict[str, int] = {}
    for j in jobs:
        counts[j.result.get("result", "?")] = counts.get(j.result.get("result", "?"), 0) + 1
    lines.append(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + f" of {len(jobs)} models")
    return lines


def job_dicts(jobs: list[Job]) -> list[dict[str, Any]]:
    """The jobs with their result rows, for summary.json and --json."""
    return [asdict(j) for j in jobs]
