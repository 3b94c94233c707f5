"""calibrate --report: index.html (self-contained, sortable, 1,000 classes) and the matplotlib-less path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from graphfix.calibrate import evaluate, fit_thresholds_from_scores
from graphfix.calibrate.report import write_report
from tests.calibrate._chromium import Browser, find_chromium
from tests.tiny_heads import make_data
from tests.conftest import ROOT

HEAD = {"features": "pool5", "num_features": 2048, "num_labels": 1000, "old_kind": "gemm", "old_classes": 1000,
        "replaced": ["fc1000", "prob"], "init": "glorot_uniform", "seed": 0}


def _synthetic(n_cls: int, n: int = 600, seed: int = 0):
    """Scores that rank positives higher, some rare classes (fallbacks), one hostile label."""
    rng = np.random.default_rng(seed)
    rate = rng.uniform(0.002, 0.3, n_cls)
    y = (rng.random((n, n_cls)) < rate).astype(np.uint8)
    scores = np.clip(0.35 * y + rng.normal(0.3, 0.18, (n, n_cls)), 0, 1).astype(np.float32)
    labels = [f"class_{j:04d}" for j in range(n_cls)]
    labels[1] = '</script><img src=x onerror="alert(1)">'
    th = fit_thresholds_from_scores(scores, y, "f1", labels=labels, min_positives=3)
    splits = {"heldout": {"at_0.5": evaluate(scores, y, 0.5, labels), "tuned": th.heldout}}
    return th, splits, scores, y


def test_html_report_is_self_contained_and_deterministic(tmp_path):
    th, splits, scores, y = _synthetic(40)
    files = write_report(tmp_path / "a", th, splits, scores, y, plots=False, head=HEAD, extra={"model": "m.onnx"})
    write_report(tmp_path / "b", th, splits, scores, y, plots=False, head=HEAD, extra={"model": "m.onnx"})
    page = (tmp_path / "a" / "index.html").read_text()
    assert str(tmp_path / "a" / "index.html") in files
    assert page == (tmp_path / "b" / "index.html").read_text()
    # no network: no external URLs, no src/href attributes pointing anywhere
    assert not re.search(r"(src|href)\s*=", page.split('<script type="application/json"')[0])
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page
    # the hostile label is data, not markup
    assert "<img src=x" not in page.replace('<\\/script><img src=x', "")
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["rows"]) == 40 and len(data["curves"]) == 40
    assert data["rows"][1]["label"] == th.labels[1]
    assert "Gemm graphfix_head" in page and "Softmax" in page and "[N, 2048]" in page
    if th.fallbacks:
        assert "fallback" in page


def test_html_report_scales_to_1000_classes(tmp_path):
    th, splits, scores, y = _synthetic(1000, n=2000)
    t0 = time.perf_counter()
    write_report(tmp_path, th, splits, scores, y, plots=False, head=HEAD, extra={"model": "big.onnx"})
    seconds = time.perf_counter() - t0
    size = (tmp_path / "index.html").stat().st_size
    assert size < 3 << 20, size
    assert seconds < 30, seconds


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (CI installs Debian's chromium)")
def test_html_report_in_headless_chromium(tmp_path):
    th, splits, scores, y = _synthetic(1000, n=1500)
    write_report(tmp_path, th, splits, scores, y, plots=False, head=HEAD, extra={"model": "big.onnx"})
    with Browser() as browser:
        t0 = time.perf_counter()
        browser.open((tmp_path / "index.html").as_uri())
        load_s = time.perf_counter() - t0
        assert browser.errors == [], browser.errors
        assert browser.eval("document.querySelectorAll('#classes tbody tr').length") == 1000
        assert browser.eval("document.getElementById('count').textContent") == "1000 of 1000 classes"
        # sort by F1 (numbers descending on the first click), then ascending
        f1 = [r["f1"] for r in sorted(_rows(th, splits), key=lambda r: -r["f1"])]
        browser.eval("document.querySelector('th[data-key=\"f1\"]').click()")
        shown = browser.eval("Array.from(document.querySelectorAll('#classes tbody tr td:nth-child(7)'))"
                             ".map(td => Number(td.textContent))")
        assert np.allclose(shown, f1, atol=6e-5) and shown == sorted(shown, reverse=True)
        browser.eval("document.querySelector('th[data-key=\"f1\"]').click()")
        shown = browser.eval("Array.from(document.querySelectorAll('#classes tbody tr td:nth-child(7)'))"
                             ".map(td => Number(td.textContent))")
        assert shown == sorted(shown) and abs(shown[0] - min(f1)) < 6e-5
        # sort by label text; the hostile label is shown as text
        browser.eval("document.querySelector('th[data-key=\"label\"]').click()")
        first = browser.eval("document.querySelector('#classes tbody tr td').textContent")
        assert first == min(th.labels)
        assert browser.eval("document.querySelectorAll('#classes img').length") == 0
        # a PR curve on demand
        browser.eval("document.querySelector('#classes tbody tr:nth-child(3)').click()")
        assert browser.eval("document.querySelectorAll('#curve-plot svg path.line').length") == 1
        assert browser.eval("document.querySelectorAll('#curve-plot svg circle').length") == 1
        # filter and fallbacks-only
        browser.eval("const f = document.getElementById('filter'); f.value = 'class_00';"
                     "f.dispatchEvent(new Event('input'))")
        assert browser.eval("document.querySelectorAll('#classes tbody tr').length") == 99
        browser.eval("const f2 = document.getElementById('filter'); f2.value = '';"
                     "f2.dispatchEvent(new Event('input'));"
                     "const c = document.getElementById('only-fallbacks'); c.checked = true;"
                     "c.dispatchEvent(new Event('change'))")
        marked = sum(m not in ("tuned", "global") for m in th.methods)
        assert marked > 0
        assert browser.eval("document.querySelectorAll('#classes tbody tr').length") == marked
        assert browser.eval("document.querySelectorAll('#classes tbody tr.fallback, #classes tbody tr.mark').length") == marked
        browser.eval("const c2 = document.getElementById('only-fallbacks'); c2.checked = false;"
                     "c2.dispatchEvent(new Event('change'))")
        shot = tmp_path / "report.png"
        browser.screenshot(shot)
        assert browser.errors == [], browser.errors
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    print(f"index.html with 1000 classes: {(tmp_path / 'index.html').stat().st_size / 1e6:.2f} MB, "
          f"loaded in {load_s:.2f} s")


def _rows(th, splits):
    from graphfix.calibrate.report import _rows as rows

    return rows(th, splits["heldout"])


def test_calibrate_report_without_matplotlib(tmp_path, tiny_model):
    """No `report` extra: the report (HTML included) is written, the model saved, a warning said."""
    x, y = make_data(tiny_model, n=120)
    np.savez(tmp_path / "heldout.npz", x=x, y=y)
    head = {**HEAD, "features": "features", "num_features": 8, "num_labels": 4, "old_classes": 10}
    tiny_model.with_metadata(head=head).save(tmp_path / "model.onnx")
    blocker = tmp_path / "no_matplotlib" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("No module named \'matplotlib\' (blocked by the test)")\n')
    env = dict(os.environ, GRAPHFIX_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(blocker.parent), str(ROOT)]))
    proc = subprocess.run(
        [sys.executable, "-m", "graphfix.cli", "calibrate", str(tmp_path / "model.onnx"), "--untrained", "--heldout",
         str(tmp_path / "heldout.npz"), "--report", str(tmp_path / "rep"), "-o", str(tmp_path / "cal.onnx")],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "matplotlib is not installed" in proc.stderr
    assert (tmp_path / "cal.onnx").is_file()
    names = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert names == ["index.html", "per_class.csv", "per_class.md", "report.json"]
    rep = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert rep["plots"].startswith("skipped")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "The head that was replaced" in page and "W [4, 8]" in page and "[N, 10] (one label)" in page
    assert 'id="classes"' in page and page.count("<svg") == 1  # the head picture; curves are drawn on demand


def test_calibrate_report_with_matplotlib_writes_png(tmp_path, tiny_model):
    pytest.importorskip("matplotlib")
    x, y = make_data(tiny_model, n=120)
    th = fit_thresholds_from_scores(tiny_model.run(x)["probabilities"], y, "f1", labels=tiny_model.labels)
    scores = tiny_model.run(x)["probabilities"]
    splits = {"heldout": {"at_0.5": evaluate(scores, y, 0.5, tiny_model.labels), "tuned": th.heldout}}
    files = write_report(tmp_path, th, splits, scores, y)
    assert {Path(f).name for f in files} == {"report.json", "per_class.csv", "per_class.md", "index.html",
                                             "pr_curves.png"}
