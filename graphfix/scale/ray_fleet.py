"""Fleet conversion on Ray: `graphfix convert DIR -o OUT --ray [ADDRESS]`, one Ray task per model.

Each task runs the very command a local fleet worker runs (`fleet.job_argv` through
`worker.run_argv`), so its row, summary.json and the table are those of `graphfix.fleet`; rows
also say where they ran (`worker`: the Ray worker's pid, `node`: its node's IP). The local rules:

1. Crash: a task whose worker process dies (a signal, `os._exit`, Ray's or the kernel's OOM
   kill, its node lost) is submitted once more (Ray's own retries are off, so the count is
   known); a second death is "crashed" with `attempts: 2`. The other models go on.
2. Timeout: `--timeout S` counts from the moment the task starts running (its first yield), not
   while it waits for a CPU; past S, `ray.cancel(force=True)` kills its worker process and the
   row is "timeout", "no result after S s", as in the local fleet.
3. Staging: outputs are written atomically by the conversion; after the run, one small task on
   each node concerned waits for the killed or crashed processes to be gone and removes the
   staging folders they left in those models' output folders (`output.clean_stale`).
4. Recycling: `--recycle-after N` is the remote function's `max_calls` (a Ray worker process
   exits after N models). `--recycle-mb` is not honoured: Ray cannot retire a task's worker by
   its size; Ray's memory monitor kills workers when a node runs low on memory, and such a
   model is retried once (rule 1).
5. Skip-if-up-to-date and `--force` are decided on the driver, before anything is submitted.

Shared file system: every node must see the input folders and OUT at the same absolute paths
(NFS, a cluster file system; local Ray trivially does). Before launching, the driver writes a
marker file into OUT and runs one task pinned to each alive node with CPUs that lists the input
folders and reads the marker back; a node that cannot is refused with one line naming the path
and the node, exit 2, and nothing is converted.

Ray's own messages go to stderr (`init_ray`), and a Ray started here is shut down before the
summary is printed, so `--json` stays one document on stdout.
"""

from __future__ import annotations

__all__ = ["run_ray_fleet", "check_shared_fs"]

import contextlib
import dataclasses
import os
import secrets
import signal
import time
import types
from dataclasses import dataclass, field
from typing import Any, Iterator

from graphfix.errors import GraphfixError, os_error
from graphfix.fleet import NOT_CONVERTED, Job, final_row, job_argv, plan, row_from
from graphfix.output import clean_stale
from graphfix.progress import bar
from graphfix.scale.ray_runtime import first_line, import_ray, init_ray

#: Seconds every node gets to answer the shared file-system check (a new worker imports Ray).
CHECK_TIMEOUT = 120.0
#: Seconds the driver waits between looks at the running tasks.
_POLL = 0.2


def _convert_task(argv: list[str]) -> Iterator[dict[str, Any]]:
    """Ray task body: first yields where it runs (so the driver starts its clock), then the reply
    of `run_argv(argv)`. The CLI's SIGINT/SIGTERM handlers are put back as Ray had them."""
    import ray

    yield {"pid": os.getpid(), "node": ray.util.get_node_ip_address(), "node_id": ray.get_runtime_context().get_node_id()}
    from graphfix.worker import run_argv

    saved = [(s, signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        reply = run_argv(argv)
    finally:
        for sig, handler in saved:
            signal.signal(sig, handler)
    yield reply


def _check_task(paths: list[str], marker: str, token: str) -> list[str]:
    """Which of `paths` this node cannot list (folders) or stat (files), then the marker's folder if it does not
    read back as `token`."""
    unseen = []
    for path in paths:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                os.stat(path)
        except OSError:
            unseen.append(path)
    try:
        with open(marker, encoding="ascii") as fh:
            seen = fh.read() == token
    except OSError:
        seen = False
    return unseen if seen else [*unseen, os.path.dirname(marker)]


def _clean_task(folders: list[str], pids: list[int], wait: float = 10.0) -> list[str]:
    """Wait (up to `wait` s) until `pids` are gone, then remove the staging folders dead
    graphfix processes of this host left in `folders`; the paths removed."""
    deadline = time.monotonic() + wait
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:  # gone
                break
            time.sleep(0.05)
    return [path for folder in folders for path in clean_stale(folder)]


def _node_name(node: dict[str, Any]) -> str:
    return f"{node['NodeManagerAddress']} (id {node['NodeID'][:8]})"


def _cpu_nodes(ray: types.ModuleType) -> list[dict[str, Any]]:
    """The alive nodes that can run a conversion (they have CPUs)."""
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]


def _pinned(node_id: str) -> dict[str, Any]:
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return {"num_cpus": 0, "max_retries": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id, soft=False)}


def check_shared_fs(ray: types.ModuleType, inputs: list[str], outdir: str, timeout: float = CHECK_TIMEOUT) -> None:
    """Refuse (GraphfixError, exit 2) unless every alive node with CPUs sees `inputs` and `outdir`.

    The driver writes a marker with a random token into `outdir`; one task pinned to each node
    lists the input folders (reads input files) and reads the marker back. The marker is removed.
    """
    inputs = [os.path.abspath(p) for p in inputs]
    outdir = os.path.abspath(outdir)
    token = secrets.token_hex(8)
    marker = os.path.join(outdir, f".graphfix-ray-check-{token}")
    try:
        with open(marker, "w", encoding="ascii") as fh:
            fh.write(token)
    except OSError as exc:
        raise os_error(exc, marker) from None
    try:
        nodes = _cpu_nodes(ray)
        if not nodes:
            raise GraphfixError("the Ray cluster has no alive node with CPUs", kind="bad_input")
        check = ray.remote(_check_task)
        refs = {check.options(**_pinned(n["NodeID"])).remote(inputs, marker, token): n for n in nodes}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout)
        if late:
            raise GraphfixError(f"Ray node {_node_name(refs[late[0]])} did not answer the shared file-system check "
                                f"within {timeout:g} s", kind="bad_input")
        for ref in ready:
            try:
                unseen = ray.get(ref)
            except ray.exceptions.RayError as exc:
                raise GraphfixError(f"the shared file-system check failed on Ray node {_node_name(refs[ref])}: "
                                    f"{_first(exc)}", kind="bad_input") from None
            if unseen:
                raise GraphfixError(f"not visible on Ray node {_node_name(refs[ref])}", kind="bad_input", path=unseen[0],
                                    hint="--ray needs the input and output folders on a file system every node "
                                         "shares, at the same paths")
    finally:
        with contextlib.suppress(OSError):
            os.remove(marker)


def _first(exc: BaseException, sentence: bool = False) -> str:
    """The first non-empty line (or sentence) of an exception's text (its type name if none)."""
    return first_line(str(exc), sentence=sentence) or type(exc).__name__


@dataclass
class _Task:
    """One job in flight: its command, the attempt, and where and since when it runs."""

    job: Job
    argv: list[str]
    attempts: int = 1
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    first_start: float | None = None
    where: dict[str, Any] = field(default_factory=dict)

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """The job's final row: `row` with where it ran, its seconds and attempts."""
        if self.where:
            row = {**row, "worker": self.where["pid"], "node": self.where["node"]}
        return final_row(row, time.monotonic() - (self.first_start or self.submitted), self.attempts)


def _absolute(job: Job) -> Job:
    """`job` with absolute paths, for a worker whose working folder is not ours."""
    return dataclasses.replace(job, model=os.path.abspath(job.model), output=os.path.abspath(job.output),
                               sources=[os.path.abspath(s) for s in job.sources])


class _Fleet:
    """The driver's loop: submits every job, watches starts, results, deaths and deadlines."""

    def __init__(self, ray: types.ModuleType, timeout: float, recycle_after: int) -> None:
        self.ray = ray
        self.timeout = timeout
        self.remote = ray.remote(num_returns="streaming", num_cpus=1, max_retries=0,
                                 max_calls=max(1, recycle_after))(_convert_task)
        self.system_errors = (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError,
                              ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
                              ray.exceptions.LocalRayletDiedError)
        self.running: dict[Any, _Task] = {}
        self.dead: list[dict[str, Any]] = []  # where killed or crashed attempts ran ({} if unknown)
        self.folders: set[str] = set()  # their output folders

    def submit(self, task: _Task) -> None:
        task.started, task.where = None, {}
        self.running[self.remote.remote(task.argv)] = task

    def finish(self, task: _Task, row: dict[str, Any]) -> None:
        task.job.result = task.row(row)

    def lost(self, task: _Task) -> None:
        """Note that `task`'s current attempt lost its worker (died or killed): clean up after it."""
        self.dead.append(task.where)
        self.folders.add(os.path.dirname(task.job.output))

    def step(self) -> int:
        """Handle what is ready and what is late; the number of jobs finished."""
        ray = self.ray
        ready, _ = ray.wait(list(self.running), num_returns=len(self.running), timeout=_POLL, fetch_local=True)
        now, done = time.monotonic(), 0
        for gen in ready:
            task = self.running.pop(gen)
            try:
                item = ray.get(next(gen))
            except StopIteration:
                row = {"result": "failed", "error": "the Ray task ended without a result"}
            except self.system_errors as exc:
                self.lost(task)
                if task.attempts == 1:  # the worker died: once more, in another one
                    task.attempts = 2
                    self.submit(task)
                    continue
                row = {"result": "crashed", "error": f"worker died: Ray {type(exc).__name__}: {_first(exc, True)}"}
            except ray.exceptions.RayError as exc:
                row = {"result": "failed", "error": f"Ray {type(exc).__name__}: {_first(exc)}"}
            else:
                if "rc" not in item:  # the start signal: the clock runs from here
                    task.started, task.where = now, item
                    task.first_start = task.first_start or now
                    self.running[gen] = task
                    continue
                row = row_from(item)
            self.finish(task, row)
            done += 1
        for gen, task in list(self.running.items()):
            if task.started is not None and now - task.started > self.timeout:
                ray.cancel(gen, force=True)  # kills that worker process
                del self.running[gen]
                self.lost(task)
                self.finish(task, {"result": "timeout", "error": f"no result after {self.timeout:g} s"})
                done += 1
        return done

    def stop(self) -> None:
        """Kill every running task; their rows say "interrupted"."""
        for gen, task in self.running.items():
            with contextlib.suppress(Exception):
                self.ray.cancel(gen, force=True)
            self.lost(task)
            self.finish(task, {"result": "interrupted", "error": "stopped: the fleet was interrupted"})
        self.running.clear()

    def clean(self) -> None:
        """Remove staging folders the lost attempts' processes left (rule 3), on their nodes."""
        if not self.dead:
            return
        folders = sorted(self.folders)
        pids: dict[str, list[int]] = {}
        for where in filter(None, self.dead):
            pids.setdefault(where["node_id"], []).append(where["pid"])
        nodes = [n["NodeID"] for n in _cpu_nodes(self.ray)]
        if all(self.dead):  # else: a task died before it said where it ran: every node looks
            nodes = [n for n in nodes if n in pids]
        clean = self.ray.remote(_clean_task)
        refs = [clean.options(**_pinned(n)).remote(folders, pids.get(n, [])) for n in nodes]
        with contextlib.suppress(Exception):  # best effort: the next write there removes them too
            self.ray.get(refs, timeout=60)
        for folder in folders:
            clean_stale(folder)


def run_ray_fleet(jobs: list[Job], inputs: list[str], outdir: str, *, address: str | None = None,
                  timeout: float = 600, force: bool = False, extra: list[str] | None = None,
                  recycle_after: int = 100) -> list[Job]:
    """Convert `jobs` as Ray tasks (one per model); fills each job's `result` row like `run_fleet`.

    Args:
        jobs: From `fleet.discover(inputs, outdir)`.
        inputs: The folders (or files) the user named: checked on every node with `outdir`.
        outdir: The output folder (exists).
        address: None/"local" starts a local Ray; "auto" or host:port joins a cluster.
        timeout: Seconds a model may run once started before its worker is killed.
        force: Convert even where the output is up to date.
        extra: More `convert` options for every model.
        recycle_after: A Ray worker process exits after this many models (`max_calls`).

    Raises:
        GraphfixError: Ray missing (exit 2), unreachable, or a node not sharing the file system.
        KeyboardInterrupt: After killing every task and filling the unfinished rows.
    """
    ray = import_ray()
    owned = not ray.is_initialized()
    handlers = [(s, signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        init_ray(address)
        for sig, handler in handlers:  # the CLI's clean-up on SIGINT/SIGTERM stays in charge
            signal.signal(sig, handler)
        check_shared_fs(ray, inputs, outdir)
        _run(ray, plan(jobs, force), extra or [], timeout, recycle_after)
    except KeyboardInterrupt:
        for job in jobs:
            if not job.result:
                job.result = dict(NOT_CONVERTED)
        raise
    finally:
        if owned and ray.is_initialized():
            ray.shutdown()
    return jobs


def _run(ray: types.ModuleType, pending: list[Job], extra: list[str], timeout: float, recycle_after: int) -> None:
    """Submit every job, then follow them to the end (on an interrupt: kill them all first)."""
    fleet = _Fleet(ray, timeout, recycle_after)
    try:
        for job in pending:
            os.makedirs(os.path.dirname(job.output), exist_ok=True)
            fleet.submit(_Task(job, job_argv(_absolute(job), extra)))
        with bar(total=len(pending), desc="converting", unit="model") as progress:
            while fleet.running:
                progress.update(fleet.step())
    except KeyboardInterrupt:
        for sig in (signal.SIGINT, signal.SIGTERM):  # finish the clean-up first
            signal.signal(sig, signal.SIG_IGN)
        fleet.stop()
        raise
    finally:
        fleet.clean()
