"""The `--report DIR` of calibrate: report.json, index.html, a per-class table (CSV + Markdown), PR plots.

Files:
- `report.json`: thresholds with methods and reasons, metrics at 0.5 and at the fitted
  thresholds on every evaluated split, and the metric definitions.
- `per_class.csv` / `per_class.md`: label, held-out positives, threshold, method, precision,
  recall, F1 at the threshold and at 0.5, AP (first split: the held-out set unless a test set
  is given, then the test set).
- `index.html`: one self-contained page (`report_html`): summary before/after tuning,
  fallbacks and warnings, the replaced head, the sortable per-class table, PR curves on demand.
  Needs no matplotlib.
- `pr_curves[_N].png`: per-class precision-recall curves (held-out scores) with the chosen
  threshold marked, 25 classes per file (matplotlib, Agg backend, imported here only). Without
  matplotlib (no `graphfix[report]`) they are skipped and report.json says so.
"""

from __future__ import annotations

__all__ = ["write_report", "plots_available", "METRIC_DEFINITIONS"]

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from graphfix import metrics
from graphfix.errors import GraphfixError
from graphfix.jsonout import jsonable

logger = logging.getLogger(__name__)

#: Stated in report.json so numbers can be compared with papers.
METRIC_DEFINITIONS = {
    "micro_f1": "2*sum(TP) / (2*sum(TP) + sum(FP) + sum(FN)) over all (sample, class) pairs",
    "macro_f1": "mean over all classes of per-class F1 = 2TP/(2TP+FP+FN) (0 when undefined)",
    "mAP": "mean over classes with >= 1 positive of non-interpolated AP = sum_k (R_k - R_k-1) P_k over "
    "distinct score cuts (sklearn average_precision_score)",
    "mAP_voc07": "VOC2007 11-point interpolated AP averaged over classes with >= 1 positive",
    "subset_accuracy": "share of samples whose predicted label set equals the true set",
    "hamming_loss": "share of wrong (sample, class) entries",
    "samples_f1": "mean per-sample F1, empty/empty counted as 1",
}

#: Classes per PNG.
PER_FIGURE = 25


def plots_available() -> bool:
    """True when matplotlib imports (the PNG plots need it; index.html does not)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def write_report(
    folder: str | os.PathLike,
    thresholds: Any,
    splits: dict[str, dict[str, Any]],
    heldout_scores: np.ndarray,
    heldout_y: np.ndarray,
    *,
    extra: dict[str, Any] | None = None,
    plots: bool = True,
    head: dict[str, Any] | None = None,
) -> list[str]:
    """Write the report files; returns their paths.

    Args:
        folder: Created if missing.
        thresholds: The fitted `Thresholds`.
        splits: Split name -> {"at_0.5": summarize(...), "tuned": summarize(...)}.
        heldout_scores, heldout_y: For the PR curves.
        extra: More keys for report.json (model, objective, ...).
        plots: Write the PNGs (skipped, and said in report.json, when matplotlib is missing).
        head: The model's `graphfix.head` metadata, for the head picture of index.html.
    """
    from graphfix.calibrate.report_html import render_html

    out = Path(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GraphfixError(f"cannot create report folder ({exc.strerror})", kind="usage", path=out) from exc
    written = []
    with_plots = plots and plots_available()
    doc = {
        **(extra or {}),
        "thresholds": thresholds.to_dict(),
        "splits": splits,
        "definitions": METRIC_DEFINITIONS,
        "plots": "png" if with_plots else ("skipped: matplotlib is not installed (graphfix[report])" if plots else "off"),
    }
    table_split = "test" if "test" in splits else next(iter(splits))
    rows = _rows(thresholds, splits[table_split])
    cols = ["label", "positives", "threshold", "method", "precision", "recall", "f1", "f1_at_0.5", "ap", "reason"]
    csv_lines: list[list[str]] = [cols] + [[_fmt(r[c]) for c in cols] for r in rows]
    md = [f"Per-class results on the {table_split} split (objective {thresholds.objective}).", ""]
    md.append("| " + " | ".join(cols) + " |")
    md.append("|" + "---|" * len(cols))
    md += ["| " + " | ".join(_fmt(r[c]).replace("|", "/") for c in cols) + " |" for r in rows]
    page = render_html(rows, thresholds, splits, heldout_scores, heldout_y, table_split=table_split, head=head,
                       extra=extra)
    try:
        _write_text(out / "report.json", json.dumps(doc, indent=2, default=jsonable) + "\n", written)
        with open(out / "per_class.csv", "w", newline="") as fh:
            csv.writer(fh).writerows(csv_lines)
        written.append(str(out / "per_class.csv"))
        _write_text(out / "per_class.md", "\n".join(md) + "\n", written)
        _write_text(out / "index.html", page, written)
        if with_plots:
            written.extend(_plot_pr(out, thresholds, heldout_scores, heldout_y))
    except OSError as exc:
        raise GraphfixError(f"cannot write the report ({exc.strerror})", path=exc.filename or out) from exc
    return written


def _write_text(path: Path, text: str, written: list[str]) -> None:
    """The one place the report writes a text file (to move onto graphfix's common output path)."""
    path.write_text(text, encoding="utf-8")
    written.append(str(path))


def _rows(thresholds: Any, split: dict[str, Any]) -> list[dict[str, Any]]:
    tuned = split["tuned"]["per_class"]
    base = split["at_0.5"]["per_class"]
    return [
        {
            "label": t["label"],
            "positives": t["positives"],
            "threshold": float(thresholds.values[j]),
            "method": thresholds.methods[j],
            "precision": t["precision"],
            "recall": t["recall"],
            "f1": t["f1"],
            "f1_at_0.5": base[j]["f1"],
            "ap": t["ap"],
            "reason": thresholds.reasons[j] or "",
        }
        for j, t in enumerate(tuned)
    ]


def _plot_pr(out: Path, thresholds: Any, scores: np.ndarray, y: np.ndarray) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cls = scores.shape[1]
    written = []
    for start in range(0, n_cls, PER_FIGURE):
        idx = list(range(start, min(start + PER_FIGURE, n_cls)))
        cols = min(5, len(idx))
        rows = (len(idx) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), squeeze=False)
        for ax in axes.flat[len(idx):]:
            ax.axis("off")
        for ax, j in zip(axes.flat, idx):
            name = thresholds.labels[j]
            t = float(thresholds.values[j])
            if y[:, j].any():
                prec, rec, cuts = metrics.precision_recall_curve(y[:, j], scores[:, j])
                ax.plot(rec, prec, lw=1.2)
                pred = scores[:, j] >= np.float32(t)
                tp = int((pred & (y[:, j] != 0)).sum())
                p_at = tp / max(int(pred.sum()), 1)
                r_at = tp / int((y[:, j] != 0).sum())
                ax.plot([r_at], [p_at], "o", color="crimson", ms=5)
                ax.set_title(f"{name} t={t:.3f} ({thresholds.methods[j]})", fontsize=8)
            else:
                ax.text(0.5, 0.5, "no positives", ha="center", va="center", fontsize=8)
                ax.set_title(f"{name} t={t:.3f} ({thresholds.methods[j]})", fontsize=8)
            ax.set_xlim(0, 1.02)
            ax.set_ylim(0, 1.02)
            ax.tick_params(labelsize=6)
        fig.supxlabel("recall")
        fig.supylabel("precision")
        fig.tight_layout()
        name = "pr_curves.png" if n_cls <= PER_FIGURE else f"pr_curves_{start // PER_FIGURE + 1:02d}.png"
        path = out / name
        fig.savefig(path, dpi=80)
        plt.close(fig)
        written.append(str(path))
    return written
