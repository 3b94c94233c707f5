"""Coverage-guided fuzzing (atheris + libFuzzer) of graphfix's file readers.

Targets: `params` (MXNet .params reader), `symbol` (MXNet symbol JSON reader and converter),
`caffemodel` (Caffe binary reader), `prototxt` (Caffe text parser and converter). Each input
is written to a file and handed to the reader; a GraphfixError is the expected way to refuse
it, anything else is a crash (libFuzzer stops and writes the input under fuzz/findings/).
Seeds come from the committed fixtures; every past finding is kept in fuzz/regressions/TARGET/
and replayed by tests/test_fuzz_regressions.py.

Run (not part of CI; needs `pip install atheris`):
    .venv/bin/python fuzz/fuzz_readers.py all --runs 100000          # every target, in turn
    .venv/bin/python fuzz/fuzz_readers.py params --seconds 60        # one target, time budget
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: target -> (seed file globs under fixtures/, max input length)
TARGETS = {
    "params": (["mxnet/*/*.params", "mxnet/ops/*/*.params"], 1 << 17),
    "symbol": (["mxnet/*/*-symbol.json", "mxnet/ops/*/*-symbol.json"], 1 << 17),
    "caffemodel": (["caffe/*.caffemodel"], 1 << 17),
    "prototxt": (["caffe/*.prototxt"], 1 << 16),
}


def make_target(name: str, workdir: str):
    """The one-input function for `name`: returns normally or raises a non-GraphfixError."""
    from graphfix.errors import GraphfixError

    path = os.path.join(workdir, {"params": "x-0000.params", "symbol": "x-symbol.json",
                                  "caffemodel": "x.caffemodel", "prototxt": "x.prototxt"}[name])

    if name == "params":
        from graphfix.convert.mxnet._params import read_params as reader

        def run(path: str) -> None:
            pf = reader(path)
            for key in list(getattr(pf, "arrays", {}) or {}):
                pf.lookup(key)
    elif name == "symbol":
        from graphfix.convert.mxnet import load_mxnet

        def run(path: str) -> None:
            load_mxnet(path, params=None, input_shape={"": (1, 3, 8, 8)})
    elif name == "caffemodel":
        from graphfix.convert.caffe import read_caffemodel as reader

        def run(path: str) -> None:
            reader(path)
    else:
        from graphfix.convert.caffe import load_caffe

        def run(path: str) -> None:
            load_caffe(path, weights=None, input_shape={"": (1, 3, 8, 8)})

    def one_input(data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)
        try:
            run(path)
        except GraphfixError:
            pass

    return one_input


def _seed_corpus(name: str, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    globs, max_len = TARGETS[name]
    for pattern in globs:
        for f in sorted((ROOT / "fixtures").glob(pattern)):
            if f.stat().st_size <= max_len:
                shutil.copy(f, corpus / f"seed-{f.parent.name}-{f.name}")
    regressions = ROOT / "fuzz" / "regressions" / name
    for f in sorted(regressions.glob("*")) if regressions.is_dir() else []:
        shutil.copy(f, corpus / f"regression-{f.name}")


def fuzz_one(name: str, runs: int | None, seconds: int | None, corpus_dir: str | None) -> int:
    """Run libFuzzer on one target in this process (atheris exits the process when done)."""
    import atheris

    workdir = tempfile.mkdtemp(prefix=f"graphfix-fuzz-{name}-")
    corpus = Path(corpus_dir or os.path.join(workdir, "corpus"))
    _seed_corpus(name, corpus)
    findings = ROOT / "fuzz" / "findings" / name
    findings.mkdir(parents=True, exist_ok=True)
    import numpy, onnx, onnx_ir  # noqa: F401,E401  (third-party code is not instrumented)

    with atheris.instrument_imports(include=["graphfix"]):
        target = make_target(name, workdir)
    args = [sys.argv[0], str(corpus), f"-max_len={TARGETS[name][1]}", f"-artifact_prefix={findings}/",
            "-print_final_stats=1", "-rss_limit_mb=2048", "-timeout=10"]
    if runs:
        args.append(f"-runs={runs}")
    if seconds:
        args.append(f"-max_total_time={seconds}")
    atheris.Setup(args, target)
    atheris.Fuzz()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--runs", type=int, help="inputs per target (e.g. 100000)")
    parser.add_argument("--seconds", type=int, help="time budget per target")
    parser.add_argument("--corpus", help="corpus folder (default: a temp folder seeded from fixtures/)")
    args = parser.parse_args()
    if args.target != "all":
        return fuzz_one(args.target, args.runs, args.seconds, args.corpus)
    status = 0
    for name in TARGETS:
        cmd = [sys.executable, __file__, name]
        cmd += ["--runs", str(args.runs)] if args.runs else []
        cmd += ["--seconds", str(args.seconds)] if args.seconds else []
        print(f"== {name}", flush=True)
        status |= subprocess.call(cmd)
    return status


if __name__ == "__main__":
    sys.exit(main())
