"""ONNX's backend node tests through `graphfix export`, per target: the whole-set table.

Every node test of the installed onnx wheel (`onnx.backend.test.loader.load_model_tests(
kind="node")`) that onnxruntime runs as stored goes through `graphfix export MODEL --target T
[--fp16] -o OUT` (the CLI, in a worker process), and the outcome is one of:

- pass:            exit 0 and the written model computes onnxruntime's outputs of the original
                   on the stored inputs (fp32: allclose rtol 1e-3, atol 1e-5; fp16: graphfix's
                   own fp16 tolerance, 0.1 x max(1, max|ref|); integers and bools exactly);
- silently wrong:  a written model (exit 0, or exit 1 "not ready") that computes other outputs;
- refused:         no output written, exactly one stderr line `graphfix: error: ...`;
- not ready:       exit 1 with the file written (a readiness FAIL remains), outputs right;
- bad:             anything else: a traceback, a crash (signal), stderr lines beside the one
                   error line, or a written model onnxruntime cannot run on the stored inputs.

Usage:
  python benchmarks/onnx_node_tests.py [--targets cpu,cuda,tensorrt] [--fp16] [--only SUBSTR]
      [--limit N] [--workers N] [--json FILE] [--show bad,wrong]

Used by tests/export/test_node_tests.py (`run_cases`) on a sample.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("pass", "silently wrong", "refused", "not ready", "bad")


def all_cases(cache: str | None = None) -> dict[str, str]:
    """Node test name -> a folder holding its model.onnx and data.pkl (test data set 0).

    onnx's loader builds the node tests in memory; they are written once under `cache`
    (default: a temp folder named after the onnx version).
    """
    import pickle
    import warnings

    import onnx

    cache = cache or os.path.join(tempfile.gettempdir(), f"graphfix-onnx-node-tests-{onnx.__version__}")
    done = os.path.join(cache, "complete")
    if not os.path.exists(done):
        from onnx.backend.test.loader import load_model_tests

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = load_model_tests(kind="node")
        for case in cases:
            folder = os.path.join(cache, case.name)
            os.makedirs(folder, exist_ok=True)
            onnx.save(case.model, os.path.join(folder, "model.onnx"))
            with open(os.path.join(folder, "data.pkl"), "wb") as fh:
                pickle.dump(case.data_sets[0] if case.data_sets else ([], []), fh)
        with open(done, "w") as fh:
            fh.write("\n".join(case.name for case in cases))
    with open(done) as fh:
        return {name: os.path.join(cache, name) for name in fh.read().split()}


def _load_data(folder: str) -> tuple[list, list]:
    """The stored inputs and outputs (arrays, lists for sequences, None for empty optionals)."""
    import pickle

    with open(os.path.join(folder, "data.pkl"), "rb") as fh:
        inputs, outputs = pickle.load(fh)
    return list(inputs), list(outputs)


def _session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _run(path: str, inputs: list) -> list:
    sess = _session(path)
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, dict(zip(names, inputs)))


def _same(ref, got, fp16: bool) -> bool:
    import numpy as np

    if isinstance(ref, list) or isinstance(got, list):
        return isinstance(ref, list) and isinstance(got, list) and len(ref) == len(got) and all(
            _same(a, b, fp16) for a, b in zip(ref, got))
    if ref is None or got is None:
        return ref is None and got is None
    a, b = np.asarray(ref), np.asarray(got)
    if a.shape != b.shape:
        return False
    if a.dtype.kind not in "fc":
        return a.dtype == b.dtype and bool(np.array_equal(a, b))
    if b.dtype.kind not in "fc":
        return False
    a64, b64 = a.astype(np.complex128 if a.dtype.kind == "c" else np.float64), b.astype(
        np.complex128 if b.dtype.kind == "c" else np.float64)
    nan_a, nan_b = np.isnan(a64), np.isnan(b64)
    if not np.array_equal(nan_a, nan_b):
        return False
    a64, b64 = a64[~nan_a], b64[~nan_b]
    if fp16:
        scale = max(1.0, float(np.max(np.abs(a64[np.isfinite(a64)])))) if np.isfinite(a64).any() else 1.0
        inf = ~np.isfinite(a64)
        return bool(np.array_equal(a64[inf], b64[inf]) and np.all(np.abs(a64[~inf] - b64[~inf]) <= 0.1 * scale))
    return bool(np.allclose(b64, a64, rtol=1e-3, atol=1e-5, equal_nan=True))


def runnable(folder: str) -> bool:
    """onnxruntime runs the stored model on its stored inputs."""
    try:
        inputs, _ = _load_data(folder)
        _run(os.path.join(folder, "model.onnx"), inputs)
        return True
    except Exception:
        return False


def run_one(name: str, folder: str, target: str, fp16: bool, workdir: str) -> dict:
    """One case through the CLI in this process; stderr (fd 2 too) captured. -> {outcome, ...}."""
    from graphfix import cli

    out = os.path.join(workdir, f"{name}-{target}{'-fp16' if fp16 else ''}.onnx")
    argv = ["export", os.path.join(folder, "model.onnx"), "--target", target, "-o", out, "-q"]
    if fp16:
        argv.append("--fp16")
    with tempfile.TemporaryFile(mode="w+b") as err:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        text_err = io.StringIO()
        real_stderr, sys.stderr = sys.stderr, text_err
        real_stdout, sys.stdout = sys.stdout, io.StringIO()
        try:
            try:
                code = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                import traceback

                traceback.print_exc(file=text_err)
                code = 99
        finally:
            sys.stderr, sys.stdout = real_stderr, real_stdout
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        stderr = text_err.getvalue() + err.read().decode("utf-8", "replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    written = os.path.exists(out)
    result = {"name": name, "exit": code, "stderr": lines[:6]}
    try:
        if "Traceback" in stderr:
            return {**result, "outcome": "bad", "why": "traceback"}
        if not written:
            if code != 0 and len(lines) == 1 and lines[0].startswith("graphfix: error: "):
                return {**result, "outcome": "refused"}
            return {**result, "outcome": "bad", "why": "stderr lines" if lines else "no output, no error"}
        inputs, _ = _load_data(folder)
        reference = _run(os.path.join(folder, "model.onnx"), inputs)
        try:
            got = _run(out, inputs)
        except Exception as exc:
            return {**result, "outcome": "bad", "why": f"written model fails: {str(exc).splitlines()[0][:200]}"}
        same = len(got) == len(reference) and all(_same(a, b, fp16) for a, b in zip(reference, got))
        if not same:
            return {**result, "outcome": "silently wrong"}
        if code == 0:
            return {**result, "outcome": "pass" if not lines else "bad", **({"why": "stderr noise"} if lines else {})}
        if code == 1 and lines and all(line.startswith("graphfix: ") or line.startswith("  ") for line in lines):
            return {**result, "outcome": "not ready"}
        return {**result, "outcome": "bad", "why": f"exit {code} with a file"}
    finally:
        if written:
            os.unlink(out)


def _worker() -> None:
    """Read `name\\tfolder\\ttarget\\tfp16` lines on stdin, answer one JSON line each."""
    import logging

    logging.disable(logging.NOTSET)
    workdir = tempfile.mkdtemp(prefix="node-tests-")
    real_out = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        name, folder, target, fp16 = line.rstrip("\n").split("\t")
        if target == "runnable":
            answer = {"name": name, "runnable": runnable(folder)}
        else:
            answer = run_one(name, folder, target, fp16 == "1", workdir)
        real_out.write(json.dumps(answer) + "\n")
        real_out.flush()


class _Pool:
    """Worker processes fed one case at a time; a worker that dies (a native crash) is the
    outcome "bad" for its case and is replaced."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def _start(self):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env, bufsize=1)

    def map(self, jobs: list[tuple[str, str, str, bool]], progress=None) -> list[dict]:
        import selectors

        pending = list(enumerate(jobs))[::-1]
        results: list[dict | None] = [None] * len(jobs)
        procs: dict = {}
        sel = selectors.DefaultSelector()

        def feed(proc) -> None:
            if not pending:
                sel.unregister(proc.stdout)
                proc.stdin.close()
                proc.wait()
                del procs[proc]
                return
            index, (name, folder, target, fp16) = pending.pop()
            procs[proc] = index
            proc.stdin.write(f"{name}\t{folder}\t{target}\t{int(fp16)}\n")
            proc.stdin.flush()

        for _ in range(min(self.workers, len(jobs))):
            proc = self._start()
            sel.register(proc.stdout, selectors.EVENT_READ, proc)
            feed(proc)
        while procs:
            for key, _ in sel.select():
                proc = key.data
                line = proc.stdout.readline()
                index = procs[proc]
                if line:
                    results[index] = json.loads(line)
                    feed(proc)
                else:  # the worker died on this case
                    proc.wait()
                    results[index] = {"name": jobs[index][0], "outcome": "bad", "exit": proc.returncode,
                                      "why": f"crash (exit {proc.returncode})", "runnable": False}
                    sel.unregister(proc.stdout)
                    del procs[proc]
                    if pending:
                        fresh = self._start()
                        sel.register(fresh.stdout, selectors.EVENT_READ, fresh)
                        feed(fresh)
                if progress:
                    progress(results[index])
        return results  # type: ignore[return-value]


def runnable_cases(cases: dict[str, str], workers: int = 1) -> dict[str, str]:
    """The cases onnxruntime runs as stored."""
    answers = _Pool(workers).map([(n, f, "runnable", False) for n, f in cases.items()])
    return {a["name"]: cases[a["name"]] for a in answers if a.get("runnable")}


def run_cases(cases: dict[str, str], target: str, fp16: bool = False, workers: int = 1, progress=None) -> list[dict]:
    """Each case through `graphfix export --target target [--fp16]`: a result dict per case."""
    return _Pool(workers).map([(n, f, target, fp16) for n, f in cases.items()], progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="cpu,cuda,tensorrt")
    parser.add_argument("--fp16", action="store_true", help="also each target with --fp16")
    parser.add_argument("--only", help="cases whose name contains this")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="write every result here")
    parser.add_argument("--show", default="bad,silently wrong", help="list cases with these outcomes")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    cases = all_cases()
    if args.only:
        cases = {k: v for k, v in cases.items() if args.only in k}
    if args.limit:
        cases = dict(list(cases.items())[: args.limit])
    total = len(cases)
    cases = runnable_cases(cases, args.workers)
    print(f"{len(cases)} of {total} node tests run in onnxruntime as stored ({time.perf_counter() - start:.0f} s)")
    show = set(args.show.split(",")) if args.show else set()
    table, everything = {}, {}
    runs = [(t, False) for t in args.targets.split(",")] + ([(t, True) for t in args.targets.split(",")] if args.fp16 else [])
    for target, fp16 in runs:
        label = target + (" fp16" if fp16 else "")
        t0 = time.perf_counter()
        results = run_cases(cases, target, fp16, args.workers)
        everything[label] = results
        table[label] = Counter(r["outcome"] for r in results)
        print(f"{label}: " + ", ".join(f"{table[label][o]} {o}" for o in OUTCOMES) + f" ({time.perf_counter() - t0:.0f} s)")
        for r in results:
            if r["outcome"] in show:
                print(f"  {r['outcome']}: {r['name']}: {r.get('why', '')} {' | '.join(r.get('stderr', [])[:3])[:300]}")
        sys.stdout.flush()
    print()
    print(f"{'target':<14}" + "".join(f"{o:>16}" for o in OUTCOMES))
    for label, counts in table.items():
        print(f"{label:<14}" + "".join(f"{counts[o]:>16}" for o in OUTCOMES))
    print(f"\n{len(cases)} cases, {time.perf_counter() - start:.0f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(everything, fh, indent=1)
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:
        sys.exit(main())
