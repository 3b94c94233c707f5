"""`index.html` of calibrate's `--report DIR`: one self-contained page, no network, no matplotlib.

The page holds (inline CSS, JS and SVG; the data as one JSON block):

- a summary: micro/macro F1, mAP, subset accuracy and Hamming loss at 0.5 and at the fitted
  thresholds, per split, with the change;
- fallbacks and warnings, highlighted;
- a picture of the head that was replaced (old classifier + softmax vs Gemm + Sigmoid, shapes);
- the per-class table (label, positives, threshold, how chosen, precision, recall, F1, F1 at
  0.5, AP, reason): sortable by any column, filtered by name, "fallbacks only"; rows not tuned
  on their own held-out scores are highlighted;
- a precision-recall curve for the class clicked (drawn on demand from at most CURVE_POINTS
  points per class, with the chosen threshold marked).

With 1,000 classes the page stays one file of about 1-2 MB that renders in well under a second.
"""

from __future__ import annotations

__all__ = ["render_html", "curve_points", "CURVE_POINTS"]

import html
import json
from typing import Any

import numpy as np

from graphfix import metrics

#: Points kept per class PR curve (evenly spaced along the curve, ends kept).
CURVE_POINTS = 80
#: Summary metrics shown, with their names on the page.
SUMMARY = (("micro_f1", "micro-F1"), ("macro_f1", "macro-F1"), ("mAP", "mAP"),
           ("subset_accuracy", "subset accuracy"), ("hamming_loss", "Hamming loss"))
#: Columns of the per-class table: key, heading, kind (text / int / num).
COLUMNS = (("label", "label", "text"), ("positives", "positives", "int"), ("threshold", "threshold", "num"),
           ("method", "how chosen", "text"), ("precision", "precision", "num"), ("recall", "recall", "num"),
           ("f1", "F1", "num"), ("f1_at_0.5", "F1 at 0.5", "num"), ("ap", "AP", "num"), ("reason", "reason", "text"))


def curve_points(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any] | None:
    """One class's PR curve, thinned to CURVE_POINTS, and the operating point at `threshold`.

    Returns:
        `{"r": [...], "p": [...], "at": [recall, precision]}` (4 decimals), None without positives.
    """
    truth = np.asarray(y).reshape(-1) != 0
    if not truth.any():
        return None
    prec, rec, _ = metrics.precision_recall_curve(truth, scores)
    if len(rec) > CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(rec) - 1, CURVE_POINTS).round().astype(int))
        prec, rec = prec[keep], rec[keep]
    pred = np.asarray(scores).reshape(-1) >= np.float32(threshold)
    tp = int((pred & truth).sum())
    at = [tp / int(truth.sum()), tp / max(int(pred.sum()), 1)]
    return {"r": [round(float(v), 4) for v in rec], "p": [round(float(v), 4) for v in prec],
            "at": [round(v, 4) for v in at]}


def render_html(
    rows: list[dict[str, Any]],
    thresholds: Any,
    splits: dict[str, dict[str, Any]],
    heldout_scores: np.ndarray,
    heldout_y: np.ndarray,
    *,
    table_split: str,
    head: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """The page as text (deterministic: the same inputs give the same bytes)."""
    extra = extra or {}
    rows = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
    curves = [curve_points(heldout_y[:, j], heldout_scores[:, j], float(thresholds.values[j]))
              for j in range(heldout_scores.shape[1])]
    data = {"columns": [list(c) for c in COLUMNS], "rows": rows, "curves": curves}
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False, default=_json_default)
    payload = payload.replace("</", "<\\/")  # cannot end the script element
    title = f"graphfix calibration report: {extra.get('model', '')}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style></head><body>",
        f"<h1>Calibration report</h1><p class=\"meta\">{_meta_line(extra, thresholds, table_split, len(rows))}</p>",
        _summary_html(splits), _notes_html(thresholds), _head_svg(head, len(rows)),
        '<section><h2>Per-class results</h2><div class="controls">',
        '<input id="filter" type="search" placeholder="filter labels" aria-label="filter labels">',
        '<label><input id="only-fallbacks" type="checkbox"> fallbacks and marks only</label>',
        '<span id="count"></span></div>',
        '<div class="split"><div class="tablewrap"><table id="classes"><thead><tr>',
        "".join(f'<th data-key="{_e(k)}" data-kind="{kind}" tabindex="0">{_e(h)}</th>' for k, h, kind in COLUMNS),
        "</tr></thead><tbody></tbody></table></div>",
        '<aside id="curve"><h3 id="curve-title">Precision-recall curve</h3>'
        '<p class="hint">Click a row to draw its held-out PR curve.</p><div id="curve-plot"></div></aside></div>',
        "</section>",
        f'<script type="application/json" id="report-data">{payload}</script>',
        f"<script>{_JS}</script></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _meta_line(extra: dict[str, Any], thresholds: Any, table_split: str, n_cls: int) -> str:
    bits = [f"model <code>{_e(extra.get('model', '?'))}</code>"]
    if extra.get("output"):
        bits.append(f"written to <code>{_e(extra['output'])}</code>")
    bits.append(f"objective <b>{_e(thresholds.objective)}</b>")
    bits.append(f"{n_cls} classes; table and metrics on the <b>{_e(table_split)}</b> split")
    bits.append(f"min positives {thresholds.min_positives}" + (f", {thresholds.folds} folds" if thresholds.folds else ""))
    return " &middot; ".join(bits)


def _summary_html(splits: dict[str, dict[str, Any]]) -> str:
    rows = []
    for split, res in splits.items():
        for key, name in SUMMARY:
            before, after = res["at_0.5"].get(key), res["tuned"].get(key)
            delta = after - before if before is not None and after is not None else None
            better = delta is not None and (delta < 0 if key == "hamming_loss" else delta > 0)
            worse = delta is not None and (delta > 0 if key == "hamming_loss" else delta < 0)
            cls = ' class="up"' if better else (' class="down"' if worse else "")
            rows.append(f"<tr><td>{_e(split)}</td><td>{_e(name)}</td><td>{_num(before)}</td><td>{_num(after)}</td>"
                        f"<td{cls}>{'' if delta is None else f'{delta:+.4f}'}</td></tr>")
    return ('<section><h2>Summary: before (threshold 0.5) and after tuning</h2><table class="summary">'
            "<thead><tr><th>split</th><th>metric</th><th>at 0.5</th><th>tuned</th><th>change</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></section>")


def _notes_html(thresholds: Any) -> str:
    fallbacks = thresholds.fallbacks
    items = [f'<li class="warn">{_e(w)}</li>' for w in thresholds.warnings]
    items += [f'<li class="fallback"><b>{_e(f["label"])}</b>: {_e(f["method"])} (t={f["threshold"]:.4f}): '
              f'{_e(f["reason"] or "")}</li>' for f in fallbacks[:200]]
    if len(fallbacks) > 200:
        items.append(f'<li class="fallback">... and {len(fallbacks) - 200} more (tick "fallbacks and marks only")</li>')
    if not items:
        return '<section><h2>Fallbacks and warnings</h2><p class="ok">None: every class was tuned on its own held-out scores.</p></section>'
    return (f'<section><h2>Fallbacks and warnings ({len(thresholds.warnings)} warnings, {len(fallbacks)} fallbacks)</h2>'
            f'<ul class="notes">{"".join(items)}</ul></section>')


def _head_svg(head: dict[str, Any] | None, n_labels: int) -> str:
    """Old head (classifier + softmax) above the new one (Gemm + Sigmoid), boxes with shapes."""
    if not head:
        return ""
    feat, n_feat = head.get("features", "features"), head.get("num_features", "F")
    old_kind = {"gemm": "Gemm", "matmul_add": "MatMul + Add", "conv": "1x1 Conv + GlobalAveragePool"}.get(
        str(head.get("old_kind")), str(head.get("old_kind", "classifier")))
    old_classes = head.get("old_classes", "K")
    replaced = ", ".join(head.get("replaced") or [])

    def box(x: int, y: int, w: int, text: str, sub: str, cls: str) -> str:
        return (f'<rect x="{x}" y="{y}" width="{w}" height="46" rx="6" class="{cls}"/>'
                f'<text x="{x + w / 2:.0f}" y="{y + 19}" text-anchor="middle">{_e(text)}</text>'
                f'<text x="{x + w / 2:.0f}" y="{y + 36}" text-anchor="middle" class="sub">{_e(sub)}</text>')

    def arrow(x1: int, x2: int, y: int) -> str:
        return f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" class="arrow" marker-end="url(#tip)"/>'

    svg = ['<svg class="head" viewBox="0 0 760 150" width="760" height="150" role="img" '
           'aria-label="replaced head: old classifier and softmax, new Gemm and Sigmoid">',
           '<defs><marker id="tip" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
           'orient="auto"><path d="M0,0L10,5L0,10z"/></marker></defs>',
           '<text x="6" y="30" class="row">before</text><text x="6" y="108" class="row">after</text>',
           box(70, 10, 150, f"features {feat}", f"[N, {n_feat}]", "keep"), arrow(220, 262, 33),
           box(264, 10, 220, old_kind, f"{n_feat} -> {old_classes} classes", "old"), arrow(484, 526, 33),
           box(528, 10, 170, "Softmax", f"[N, {old_classes}] (one label)", "old"),
           box(70, 88, 150, f"features {feat}", f"[N, {n_feat}]", "keep"), arrow(220, 262, 111),
           box(264, 88, 220, "Gemm graphfix_head", f"W [{n_labels}, {n_feat}] -> logits [N, {n_labels}]", "new"),
           arrow(484, 526, 111),
           box(528, 88, 170, "Sigmoid", f"probabilities [N, {n_labels}]", "new"), "</svg>"]
    return (f'<section><h2>The head that was replaced</h2>{"".join(svg)}'
            f'<p class="hint">Removed nodes: {_e(replaced) or "none recorded"}; init {_e(head.get("init", "?"))}, '
            f'seed {_e(head.get("seed", "?"))}.</p></section>')


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:20px 28px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 8px}h3{font-size:14px;margin:0 0 6px}
.meta{color:#556;margin:0}code{background:#f2f4f7;padding:0 3px;border-radius:3px}
table{border-collapse:collapse}th,td{padding:3px 8px;border-bottom:1px solid #e4e7ec;text-align:right;white-space:nowrap}
th{background:#f5f7fa;position:sticky;top:0;cursor:pointer;user-select:none}
td:first-child,th:first-child,td.text{text-align:left}
table.summary td:nth-child(2),table.summary th:nth-child(2){text-align:left}
td.text{max-width:240px;overflow:hidden;text-overflow:ellipsis}
th.asc::after{content:" \\25B2";font-size:10px}th.desc::after{content:" \\25BC";font-size:10px}
.up{color:#0a7d32}.down{color:#b42318}.ok{color:#0a7d32}
ul.notes{margin:0;padding-left:18px;max-height:220px;overflow:auto}
li.warn{background:#fff4e5;border-left:4px solid #f79009;padding:2px 6px;margin:2px 0;list-style:none}
li.fallback{background:#fdf2fa;border-left:4px solid #c11574;padding:2px 6px;margin:2px 0;list-style:none}
tr.fallback td{background:#fdf2fa}tr.mark td{background:#fff4e5}tr.sel td{background:#d1e9ff}
tbody tr:hover td{background:#eef4ff;cursor:pointer}
.controls{display:flex;gap:14px;align-items:center;margin-bottom:6px}#filter{padding:3px 6px;width:220px}
.split{display:flex;gap:18px;align-items:flex-start}
.tablewrap{max-height:70vh;overflow:auto;border:1px solid #e4e7ec}
aside#curve{min-width:300px;border:1px solid #e4e7ec;padding:8px 10px;position:sticky;top:10px}
.hint{color:#667;font-size:12px}
svg.head rect.keep{fill:#f2f4f7;stroke:#98a2b3}svg.head rect.old{fill:#fef3f2;stroke:#f04438}
svg.head rect.new{fill:#ecfdf3;stroke:#12b76a}svg.head text{font-size:12px}svg.head text.sub{font-size:11px;fill:#475467}
svg.head text.row{font-size:12px;font-weight:600;fill:#475467}svg.head .arrow{stroke:#475467;stroke-width:1.5}
svg.pr .axis{stroke:#98a2b3}svg.pr .line{fill:none;stroke:#2e90fa;stroke-width:1.6}svg.pr circle{fill:#d92d20}
svg.pr text{font-size:10px;fill:#475467}
"""

_JS = """
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var cols = data.columns, rows = data.rows;
  var tbody = document.querySelector("#classes tbody");
  var order = rows.map(function (_, i) { return i; });
  var sortKey = null, sortDir = 1, selected = -1;

  function fmt(v, kind) {
    if (v === null || v === undefined) { return ""; }
    return kind === "num" ? Number(v).toFixed(4) : String(v);
  }
  function isMark(r) { return r.method !== "tuned" && r.method !== "global"; }
  function render() {
    var needle = document.getElementById("filter").value.toLowerCase();
    var only = document.getElementById("only-fallbacks").checked;
    var frag = document.createDocumentFragment(), shown = 0;
    order.forEach(function (i) {
      var r = rows[i];
      if (needle && String(r.label).toLowerCase().indexOf(needle) < 0) { return; }
      if (only && !isMark(r)) { return; }
      var tr = document.createElement("tr");
      tr.dataset.index = String(i);
      if (isMark(r)) { tr.className = r.method.indexOf("fallback") === 0 ? "fallback" : "mark"; }
      if (i === selected) { tr.className += " sel"; }
      cols.forEach(function (c) {
        var td = document.createElement("td");
        td.textContent = fmt(r[c[0]], c[2]);
        if (c[2] === "text") { td.className = "text"; td.title = td.textContent; }
        tr.appendChild(td);
      });
      frag.appendChild(tr);
      shown += 1;
    });
    tbody.replaceChildren(frag);
    document.getElementById("count").textContent = shown + " of " + rows.length + " classes";
  }
  function compare(key, kind) {
    return function (a, b) {
      var x = rows[a][key], y = rows[b][key];
      var xn = x === null || x === undefined, yn = y === null || y === undefined;
      if (xn || yn) { return xn === yn ? a - b : (xn ? 1 : -1); }
      var c = kind === "text" ? String(x).localeCompare(String(y)) : x - y;
      return c !== 0 ? c * sortDir : a - b;
    };
  }
  function sortBy(th) {
    var key = th.dataset.key;
    sortDir = sortKey === key ? -sortDir : (th.dataset.kind === "text" ? 1 : -1);
    sortKey = key;
    order.sort(compare(key, th.dataset.kind));
    document.querySelectorAll("#classes th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(sortDir > 0 ? "asc" : "desc");
    render();
  }
  function drawCurve(i) {
    var r = rows[i], c = data.curves[i], box = document.getElementById("curve-plot");
    document.getElementById("curve-title").textContent = r.label + ": t=" + Number(r.threshold).toFixed(4) +
      " (" + r.method + ")";
    if (!c) { box.textContent = "No held-out positives: no curve."; return; }
    var W = 300, H = 250, L = 36, B = 28, T = 8, R = 8, ns = "http://www.w3.org/2000/svg";
    var sx = function (v) { return L + v * (W - L - R); }, sy = function (v) { return H - B - v * (H - B - T); };
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "pr"); svg.setAttribute("width", W); svg.setAttribute("height", H);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    function add(tag, attrs, text) {
      var el = document.createElementNS(ns, tag);
      Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
      if (text !== undefined) { el.textContent = text; }
      svg.appendChild(el);
      return el;
    }
    add("path", {"class": "axis", d: "M" + sx(0) + "," + sy(1) + "V" + sy(0) + "H" + sx(1), fill: "none"});
    [0, 0.5, 1].forEach(function (v) {
      add("text", {x: sx(v), y: H - B + 14, "text-anchor": "middle"}, String(v));
      add("text", {x: L - 4, y: sy(v) + 3, "text-anchor": "end"}, String(v));
    });
    add("text", {x: sx(0.5), y: H - 2, "text-anchor": "middle"}, "recall");
    add("text", {x: 10, y: sy(0.5), transform: "rotate(-90 10 " + sy(0.5) + ")", "text-anchor": "middle"}, "precision");
    var d = c.r.map(function (rv, k) { return (k ? "L" : "M") + sx(rv).toFixed(1) + "," + sy(c.p[k]).toFixed(1); });
    add("path", {"class": "line", d: d.join("")});
    add("circle", {cx: sx(c.at[0]), cy: sy(c.at[1]), r: 4});
    var left = c.at[0] > 0.55;
    add("text", {x: sx(c.at[0]) + (left ? -6 : 6), y: sy(c.at[1]) - 6, "text-anchor": left ? "end" : "start"},
        "R " + c.at[0].toFixed(3) + ", P " + c.at[1].toFixed(3));
    box.replaceChildren(svg);
    document.querySelector("#curve .hint").hidden = true;
  }
  document.querySelectorAll("#classes th").forEach(function (th) {
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (ev) { if (ev.key === "Enter") { sortBy(th); } });
  });
  tbody.addEventListener("click", function (ev) {
    var tr = ev.target.closest("tr");
    if (!tr) { return; }
    selected = Number(tr.dataset.index);
    render();
    drawCurve(selected);
  });
  document.getElementById("filter").addEventListener("input", render);
  document.getElementById("only-fallbacks").addEventListener("change", render);
  render();
}());
"""
