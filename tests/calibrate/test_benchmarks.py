"""The benchmark scripts run (tiny sizes) and print their figures and command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script,args", [
    ("bench_thresholds.py", ["--samples", "3000", "--classes", "20", "--repeat", "1"]),
    ("bench_features.py", ["--samples", "64", "--batch-size", "16", "--size", "32", "--repeat", "1"]),
    ("bench_head_training.py", ["--n", "3000", "--features", "24", "--labels", "4"]),
])
def test_benchmark_runs(script, args, tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                          cwd=ROOT, env={"GRAPHFIX_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "command:" in proc.stdout


def test_head_quality_runs(tmp_path):
    """The quality benchmark, one small tabular set: the defaults stay within 0.01 of sklearn."""
    pytest.importorskip("sklearn")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "head_quality.py"), "--out", str(tmp_path),
                           "--sets", "tabular-0", "--tabular-samples", "1200"], capture_output=True, text=True, cwd=ROOT,
                          env={"GRAPHFIX_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| sklearn reference |" in proc.stdout and "command:" in proc.stdout
