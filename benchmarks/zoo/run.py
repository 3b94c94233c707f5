"""Run swap-head -> export --target tensorrt -> check --build on every model of a zoo folder.

Each step is the `graphfix` command, run as a user would (a subprocess), so a traceback from
any of them is caught. A model refused by swap-head must say why in one line and suggest
`--features NAME`; the run then retries with that suggestion, which must work. Prints a
Markdown table and writes `results.json` beside the models. With `--fp16`, an export refused on
parity is retried with `--fp16 auto` (as the refusal's hint says) and the figures are printed:
plain pass / refused, auto pass, crashes (a command killed by a signal; must be 0).

    python benchmarks/zoo/run.py .cache/zoo [--fp16] [--no-build] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

GRAPHFIX = [str(Path(sys.executable).parent / "graphfix")]


def _run(args: list[str]) -> tuple[int, dict | None, str]:
    proc = subprocess.run([*GRAPHFIX, *args, "--json"], capture_output=True, text=True)
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        doc = None
    return proc.returncode, doc, proc.stderr.strip()


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("graphfix: error:")]
    return lines[-1] if lines else stderr[-300:]


def run_model(path: Path, *, fp16: bool, build: bool) -> dict:
    rec: dict = {"model": path.name.split(".")[0], "exporter": path.name.split(".")[1], "file": path.name}
    work = path.parent / "out"
    work.mkdir(exist_ok=True)
    swapped, exported = work / f"{path.stem}-ml.onnx", work / f"{path.stem}-trt.onnx"
    t0 = time.perf_counter()
    rc, doc, err = _run(["swap-head", str(path), "--labels", "5", "-o", str(swapped)])
    rec["traceback"] = "Traceback" in err
    if rc != 0:
        line = _error_line(err)
        rec["swap"] = f"refused: {line}"
        found = re.search(r"--features (\S+?)[;,)\s]", line + " ")
        if rc != 2 or found is None:
            rec["result"] = "FAIL (refusal without a --features suggestion)"
            return rec
        rec["features"] = found.group(1)
        rc, doc, err = _run(["swap-head", str(path), "--labels", "5", "--features", found.group(1), "-o", str(swapped)])
        rec["traceback"] |= "Traceback" in err
        if rc != 0:
            rec["result"] = f"FAIL (suggested --features failed: {_error_line(err)})"
            return rec
    else:
        rec["swap"] = "ok"
    head = (doc or {}).get("head", {})
    rec["head"] = f"{head.get('old_kind')}:{head.get('features')}" if head else None
    args = ["export", str(swapped), "--target", "tensorrt", "-o", str(exported)] + (["--fp16"] if fp16 else [])
    rc, doc, err = _run(args)
    rec["traceback"] |= "Traceback" in err
    rec["crash"] = rc < 0  # killed by a signal (SIGSEGV in a session): never acceptable
    if fp16:
        rec["fp16"] = "crash" if rc < 0 else "ok" if rc == 0 else "refused" if "parity failed" in err else "FAIL"
    if fp16 and rc == 1 and "parity failed" in err and "--fp16 auto" in err:
        rc, doc, err = _run([*args[:-1], "--fp16", "auto"])  # what the refusal's hint says to do
        rec["traceback"] |= "Traceback" in err
        rec["crash"] |= rc < 0
        rec["fp16_auto"] = "crash" if rc < 0 else "ok" if rc == 0 else "FAIL"
        if rc == 0 and doc:
            auto = (doc.get("notes") or {}).get("fp16_auto") or {}
            rec["fp16_auto_kept_fp32"] = f"{auto.get('kept_fp32_count')}/{auto.get('candidates')}"
    if rc != 0 and not exported.exists():
        rec["export"] = f"FAIL: {_error_line(err)}"
        rec["result"] = "FAIL"
        return rec
    parity = (doc or {}).get("parity") or {}
    rec["parity"] = {k: v.get("max_abs_diff") for k, v in (parity.get("outputs") or {}).items()}
    rec["export"] = "ok" if rc == 0 else f"written, exit {rc}"
    rc, doc, err = _run(["check", str(exported), "--target", "tensorrt"] + (["--build"] if build else []))
    rec["traceback"] |= "Traceback" in err
    rec["crash"] |= rc < 0
    report = doc or {}
    fails = [f"{f['id']}:{f.get('rule')}" for f in report.get("findings", []) if f.get("severity") == "FAIL"]
    rec["check"] = "ok" if rc == 0 else "FAIL " + ",".join(fails)
    rec["oracle"] = (report.get("build") or {}).get("status", "not run")
    ok = rec["check"] == "ok" and rec["export"] == "ok" and (not build or rec["oracle"] == "ok")
    rec["result"] = ("ok" if rec["swap"] == "ok" else "ok with --features") if ok and not rec["traceback"] else "FAIL"
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--fp16", action="store_true")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--only", default=None)
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    results = []
    print("| model | exporter | swap-head | export | check | oracle | parity (max abs diff) | result |")
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(args.folder.glob("*.onnx")):
        if only and path.name.split(".")[0] not in only:
            continue
        rec = run_model(path, fp16=args.fp16, build=not args.no_build)
        results.append(rec)
        swap = rec["swap"] if rec["swap"] == "ok" else f"--features {rec.get('features')}"
        if "fp16_auto" in rec:
            rec["export"] = f"{rec.get('export', '-')} (fp16 refused; auto {rec['fp16_auto']}, " \
                            f"fp32 {rec.get('fp16_auto_kept_fp32', '-')})"
        parity = ", ".join(f"{k} {v:.1e}" for k, v in (rec.get("parity") or {}).items() if v is not None)
        print(f"| {rec['model']} | {rec['exporter']} | {swap} | {rec.get('export', '-')} | {rec.get('check', '-')} "
              f"| {rec.get('oracle', '-')} | {parity} | {rec['result']}{' TRACEBACK' if rec['traceback'] else ''}{' CRASH' if rec.get('crash') else ''} |",
              flush=True)
    suffix = "-fp16" if args.fp16 else ""
    (args.folder / f"results{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    bad = [r for r in results if r["result"] == "FAIL" or r["traceback"] or r.get("crash")]
    print(f"\n{len(results) - len(bad)} of {len(results)} ok", flush=True)
    if args.fp16:
        count = lambda key, value: sum(r.get(key) == value for r in results)  # noqa: E731
        print(f"fp16: plain {count('fp16', 'ok')} pass, {count('fp16', 'refused')} refused on parity; "
              f"--fp16 auto {count('fp16_auto', 'ok')} of {count('fp16', 'refused')} pass; "
              f"crashes {sum(bool(r.get('crash')) for r in results)}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
