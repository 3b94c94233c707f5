"""Regenerate docs/report-screenshot.png: a calibration report of 1,000 synthetic classes in
headless Chromium, sorted by F1 with one PR curve open.

    .venv/bin/python docs/report_screenshot.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graphfix.calibrate.report import write_report  # noqa: E402
from tests.calibrate._chromium import Browser  # noqa: E402
from tests.calibrate.test_report_html import HEAD, _synthetic  # noqa: E402


def main() -> None:
    th, splits, scores, y = _synthetic(1000, n=2000)
    with tempfile.TemporaryDirectory() as tmp:
        write_report(tmp, th, splits, scores, y, plots=False, head=HEAD, extra={"model": "resnet50-calibrated.onnx"})
        with Browser() as browser:
            browser.send("Emulation.setDeviceMetricsOverride", session=True, width=1280, height=1100,
                         deviceScaleFactor=1, mobile=False)
            browser.open(Path(tmp, "index.html").as_uri())
            browser.eval("document.querySelector('th[data-key=\"f1\"]').click()")
            browser.eval("document.querySelector('#classes tbody tr:nth-child(4)').click()")
            out = ROOT / "docs" / "report-screenshot.png"
            browser.screenshot(out)
            if browser.errors:
                raise SystemExit(f"console errors: {browser.errors}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
