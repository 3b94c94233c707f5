"""Every input the fuzzer ever broke a reader with is refused with a GraphfixError, and fast."""

from __future__ import annotations

import importlib.util
import time

import pytest

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("fuzz_readers", ROOT / "fuzz" / "fuzz_readers.py")
fuzz_readers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_readers)

CASES = sorted((p.parent.name, p) for p in (ROOT / "fuzz" / "regressions").glob("*/*") if p.is_file())


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{t}/{p.name}" for t, p in CASES])
def test_regression_input_is_refused_cleanly(target, path, tmp_path):
    one_input = fuzz_readers.make_target(target, str(tmp_path))
    start = time.perf_counter()
    one_input(path.read_bytes())  # raises on anything but a GraphfixError
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("target", sorted(fuzz_readers.TARGETS))
def test_fuzz_seeds_run(target, tmp_path):
    """The seed corpus (fixtures) goes through each target without a crash."""
    corpus = tmp_path / "corpus"
    fuzz_readers._seed_corpus(target, corpus)
    one_input = fuzz_readers.make_target(target, str(tmp_path))
    seeds = sorted(corpus.iterdir())[:20]
    assert seeds
    for seed in seeds:
        one_input(seed.read_bytes())
