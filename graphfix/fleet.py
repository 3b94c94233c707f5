"""Fleet conversion: find every model under some folders and convert each, isolated from the rest.

Models are converted by a pool of long-lived worker processes (`graphfix.worker`), each running
`graphfix convert MODEL -o OUT --json` for one model after another, so the imports are paid once
per worker, not once per model. A crash, hang or memory blow-up in one model never stops the
rest: that worker is killed (timeout: SIGTERM, then SIGKILL) and replaced, and the model's row
says what happened; workers are also recycled after a number of models or past a memory size.
Each model's JSON document (or its failure) becomes one row of the summary. Outputs mirror the
input folder layout; a re-run skips models whose output is newer than all their sources.
"""

from __future__ import annotations

__all__ = ["Job", "discover", "run_fleet", "summary_table", "job_dicts", "plan", "job_argv", "row_from", "final_row",
           "NOT_CONVERTED"]

import errno
import glob
import json
import os
import re
import queue
import signal
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from graphfix.errors import GraphfixError
from graphfix.output import clean_stale, is_staging_name
from graphfix.progress import bar
from graphfix.worker import Worker, WorkerDied, WorkerTimeout

#: A worker is replaced after this many models ...
RECYCLE_AFTER = 100
#: ... or once its resident memory is over this many MB after a model.
RECYCLE_MB = 2000.0
#: Seconds a new worker may take to import what it needs.
READY_TIMEOUT = 120.0

#: The row of a job the fleet never got to before an interrupt.
NOT_CONVERTED = {"result": "interrupted", "seconds": 0.0, "error": "not converted: the fleet was interrupted"}

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


class _Pool:
    """The live workers, so that an interrupt can kill every one of them at once."""

    def __init__(self, tag: list[str]) -> None:
        self._lock = threading.Lock()
        self._live: set[Worker] = set()
        self._tag = tag
        self.stopped = False

    def start(self) -> Worker | None:
        """A new ready worker (None once stopped); WorkerDied / WorkerTimeout if it cannot start."""
        with self._lock:
            if self.stopped:
                return None
            worker = Worker(self._tag)
            self._live.add(worker)
        try:
            worker.ready(READY_TIMEOUT)
        except (WorkerDied, WorkerTimeout):
            self.forget(worker)
            raise
        return worker

    def forget(self, worker: Worker) -> None:
        with self._lock:
            self._live.discard(worker)

    def retire(self, worker: Worker) -> None:
        """End a worker that is done (recycled, or no work left)."""
        self.forget(worker)
        worker.close()

    def kill_all(self) -> None:
        """Stop starting workers and SIGKILL every running one (its whole process group)."""
        with self._lock:
            self.stopped = True
            live = list(self._live)
        for worker in live:
            worker.kill()


@dataclass
class _Limits:
    timeout: float
    recycle_after: int
    recycle_mb: float


def row_from(reply: dict[str, Any]) -> dict[str, Any]:
    """A result row from a worker's answer (`run_argv`'s dict) to `convert MODEL -o OUT --json`."""
    try:
        doc = json.loads(reply["stdout"]) if reply["stdout"].strip() else {}
    except json.JSONDecodeError:
        doc = {}
    if reply["rc"] == 0 and doc.get("ok"):
        return {"result": "ok", "nodes": doc.get("nodes"), "verify": doc.get("verify")}
    return {"result": "failed", "error": _first_line(reply["stderr"]) or f"exit status {reply['rc']}"}


def _convert(job: Job, worker: Worker | None, pool: _Pool, extra: list[str], limits: _Limits) -> tuple[dict[str, Any], Worker | None]:
    """Convert one job in `worker` (or a new one); its row and the worker to use next.

    A crash in a worker that had converted other models is retried once in a fresh worker, so a
    model is only reported "crashed" when it crashes a process of its own, as it would alone.
    """
    os.makedirs(os.path.dirname(job.output), exist_ok=True)
    argv = job_argv(job, extra)
    start = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        try:
            worker = worker or pool.start()
        except (WorkerDied, WorkerTimeout) as exc:
            row = _interrupted("stopped") if pool.stopped else {"result": "failed", "error": f"worker did not start: {exc}"}
            break
        if worker is None:
            row = _interrupted("not started")
            break
        first = worker.calls == 0
        try:
            reply = worker.call(argv, limits.timeout)
        except WorkerTimeout:
            pool.forget(worker)
            worker, row = None, {"result": "interrupted" if pool.stopped else "timeout",
                                 "error": f"no result after {limits.timeout:g} s"}
        except WorkerDied as exc:
            pool.forget(worker)
            pid, worker = worker.pid, None
            if pool.stopped:
                row = _interrupted("stopped")
            elif not first and attempts == 1:
                continue
            else:
                how = f"signal {-exc.returncode}" if exc.returncode and exc.returncode < 0 else f"exit status {exc.returncode}"
                row = {"result": "crashed", "error": f"worker died with {how} {exc.detail}".strip(), "worker": pid}
        else:
            row = row_from(reply)
            row["worker"] = worker.pid
            if worker.calls >= limits.recycle_after or worker.rss_mb > limits.recycle_mb:
                pool.retire(worker)
                worker = None
        break
    row = final_row(row, time.perf_counter() - start, attempts)
    if row["result"] != "ok":
        clean_stale(os.path.dirname(job.output))  # what a killed worker could not remove
    return row, worker


def job_argv(job: Job, extra: list[str]) -> list[str]:
    """The command a worker runs for `job`: `convert MODEL -o OUT --json EXTRA [--weights W]`."""
    argv = ["convert", job.model, "-o", job.output, "--json", *extra]
    if job.format == "caffe" and len(job.sources) > 1:
        argv += ["--weights", job.sources[1]]
    return argv


def final_row(row: dict[str, Any], seconds: float, attempts: int = 1) -> dict[str, Any]:
    """`row` as reported: result first, then seconds, then the rest (`attempts` when over 1)."""
    row = dict(row)
    row = {"result": row.pop("result"), "seconds": round(seconds, 3), **row}
    if attempts > 1:
        row["attempts"] = attempts
    return row


def _interrupted(what: str) -> dict[str, Any]:
    return {"result": "interrupted", "error": f"{what}: the fleet was interrupted"}


def _slot(todo: queue.SimpleQueue, done: queue.SimpleQueue, pool: _Pool, extra: list[str], limits: _Limits) -> None:
    """One worker slot: convert jobs from `todo` until it is empty or the fleet stops."""
    worker = None
    try:
        while not pool.stopped:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                break
            row, worker = _convert(job, worker, pool, extra, limits)
            done.put((job, row))
    finally:
        if worker is not None:
            pool.retire(worker)
        done.put(None)


def run_fleet(jobs: list[Job], *, workers: int = 1, timeout: float = 600, force: bool = False,
              extra: list[str] | None = None, recycle_after: int = RECYCLE_AFTER, recycle_mb: float = RECYCLE_MB,
              tag: str = "") -> list[Job]:
    """Convert `jobs` with `workers` long-lived worker processes; fills each job's `result` row.

    Each worker converts models one after another and is replaced after `recycle_after` models,
    once its memory is over `recycle_mb`, or when a model crashes or outlasts `timeout` s in it.
    `tag` goes on the workers' command lines (`ps` shows what they work for).
    On SIGINT/SIGTERM (KeyboardInterrupt) every worker is killed, unfinished jobs are marked
    "interrupted" and the interrupt is raised again once the rows are filled.
    """
    extra = extra or []
    todo: queue.SimpleQueue = queue.SimpleQueue()
    pending = plan(jobs, force)
    for job in pending:
        todo.put(job)
    pool = _Pool(["--fleet", tag] if tag else [])
    limits = _Limits(timeout, max(1, recycle_after), recycle_mb)
    done: queue.SimpleQueue = queue.SimpleQueue()
    slots = [threading.Thread(target=_slot, args=(todo, done, pool, extra, limits), daemon=True)
             for _ in range(min(max(1, workers), len(pending)))]
    for thread in slots:
        thread.start()
    try:
        with bar(total=len(pending), desc="converting", unit="model") as progress:
            running = len(slots)
            while running:
                item = _get(done)
                if item is None:
                    running -= 1
                    continue
                item[0].result = item[1]
                progress.update(1)
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):  # finish the clean-up first
            signal.signal(sig, signal.SIG_IGN)
        pool.kill_all()
        for thread in slots:
            thread.join()
        while (item := _get(done, block=False)) is not False:
            if item is not None:
                item[0].result = item[1]
        for job in pending:
            if not job.result:
                job.result = dict(NOT_CONVERTED)
        for folder in sorted({os.path.dirname(j.output) for j in pending}):
            clean_stale(folder)
        raise
    return jobs


def plan(jobs: list[Job], force: bool) -> list[Job]:
    """The jobs to run: marks up-to-date ones "skipped" (unless `force`); refused ones keep their row."""
    pending = []
    for job in jobs:
        if job.result:  # refused at discovery (FIFO, broken link)
            continue
        if not force and _up_to_date(job):
            job.result = {"result": "skipped", "seconds": 0.0, "error": "output is newer than its sources"}
        else:
            pending.append(job)
    return pending


def _get(done: queue.SimpleQueue, block: bool = True) -> Any:
    """The next finished item (polling, so that a signal is seen at once); False when empty and not blocking."""
    while True:
        try:
            return done.get(timeout=0.2) if block else done.get_nowait()
        except queue.Empty:
            if not block:
                return False


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
