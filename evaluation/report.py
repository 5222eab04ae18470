"""``omni report RUN``: one self-contained HTML page (and a Markdown twin) of a run.

The page holds the training loss per task over steps (``runs/NAME/metrics.jsonl``),
Recall@K curves per task and system, per-language Recall@10 bars, the headline table
with the paper's figures beside ours, the relevance metrics of an imported data set,
approximate-search recall and the ablation tables (``runs/NAME/eval/results.json``).

Charts are inline SVG written here by hand: a few dozen lines buy a page that opens
offline in any browser, with no plotting library to install and no external asset.
"""
from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omnisearchsage.atomic import atomic_path
from omnisearchsage.contract import Workspace
from omnisearchsage.errors import OmniError

#: Chart size and margins in SVG user units (pixels).
WIDTH, HEIGHT, MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 560, 300, 56, 150, 28, 40
#: Series colours (Okabe-Ito, readable by colour-blind readers).
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
#: The Recall@K every table and bar chart shows.
K = 10
CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:1em}
svg text{font-size:11px;font-family:system-ui,sans-serif}.note{color:#666;font-size:90%}
"""


def _paper(h: dict[str, Any]) -> str:
    if h["paper_omnisearchsage"] is None:
        return "–"
    return f"{fmt(h['paper_searchsage'])}→{fmt(h['paper_omnisearchsage'])}"


def fmt(v: Any) -> str:
    """One table cell: floats to 3 places, (lo, hi) intervals in brackets, a (difference, lo, hi) as
    "+0.022 [-0.004, +0.048]", missing as "–"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}"
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, float) for x in v):
        return f"[{v[0]:.3f}, {v[1]:.3f}]"
    if isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, float) for x in v):
        return f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"
    return str(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    step = (hi - lo) / n if hi > lo else 1.0
    return [lo + i * step for i in range(n + 1)]


def line_chart(title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
               log_x: bool = False, y_range: tuple[float, float] | None = None) -> str:
    """An SVG line chart of named (x, y) series, legend on the right."""
    pts = [p for s in series.values() for p in s if p[1] is not None and math.isfinite(p[1])]
    if not pts:
        return ""
    fx = math.log10 if log_x else float
    xs = [fx(p[0]) for p in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = y_range or (min(p[1] for p in pts), max(p[1] for p in pts))
    y1 = y1 if y1 > y0 else y0 + 1
    pw, ph = WIDTH - MARGIN_L - MARGIN_R, HEIGHT - MARGIN_T - MARGIN_B

    def sx(x: float) -> float:
        return MARGIN_L + (fx(x) - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return MARGIN_T + (1 - (y - y0) / (y1 - y0)) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">',
           f'<text x="{WIDTH / 2 - MARGIN_R / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{MARGIN_L - 4}" x2="{MARGIN_L}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#999"/>'
                   f'<text x="{MARGIN_L - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>')
    xticks = sorted({p[0] for s in series.values() for p in s}) if log_x else [
        x0 + i * (x1 - x0) / 5 for i in range(6)]
    for t in xticks:
        out.append(f'<text x="{sx(t):.1f}" y="{HEIGHT - MARGIN_B + 14}" text-anchor="middle">{t:.4g}</text>')
    out.append(f'<text x="{MARGIN_L + pw / 2}" y="{HEIGHT - 8}" text-anchor="middle">{html.escape(xlabel)}</text>')
    out.append(f'<text transform="translate(14,{MARGIN_T + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text>')
    for i, (name, s) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        good = [(x, y) for x, y in s if y is not None and math.isfinite(y)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.6"/>')
        ly = MARGIN_T + 14 * i + 6
        out.append(f'<line x1="{WIDTH - MARGIN_R + 8}" x2="{WIDTH - MARGIN_R + 24}" y1="{ly}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="3"/><text x="{WIDTH - MARGIN_R + 28}" y="{ly + 4}">'
                   f'{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(title: str, groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str) -> str:
    """An SVG grouped bar chart: one group per label, one bar per series (values in [0, 1])."""
    if not groups or not series:
        return ""
    pw, ph = WIDTH - MARGIN_L - MARGIN_R, HEIGHT - MARGIN_T - MARGIN_B
    gw = pw / len(groups)
    bw = gw * 0.8 / len(series)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img">',
           f'<text x="{WIDTH / 2 - MARGIN_R / 2}" y="16" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
           f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for t in _ticks(0.0, 1.0):
        y = MARGIN_T + (1 - t) * ph
        out.append(f'<text x="{MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.1f}</text>')
    for gi, g in enumerate(groups):
        out.append(f'<text x="{MARGIN_L + gw * (gi + 0.5):.1f}" y="{HEIGHT - MARGIN_B + 14}" '
                   f'text-anchor="middle">{html.escape(g)}</text>')
        for si, values in enumerate(series.values()):
            v = values[gi]
            if v is None or not math.isfinite(v):
                continue
            h = max(0.0, min(1.0, v)) * ph
            x = MARGIN_L + gw * gi + gw * 0.1 + bw * si
            out.append(f'<rect x="{x:.1f}" y="{MARGIN_T + ph - h:.1f}" width="{bw:.1f}" height="{h:.1f}" '
                       f'fill="{COLOURS[si % len(COLOURS)]}"><title>{v:.3f}</title></rect>')
    for si, name in enumerate(series):
        ly = MARGIN_T + 14 * si + 6
        out.append(f'<rect x="{WIDTH - MARGIN_R + 8}" y="{ly - 5}" width="12" height="10" '
                   f'fill="{COLOURS[si % len(COLOURS)]}"/><text x="{WIDTH - MARGIN_R + 24}" y="{ly + 4}">'
                   f'{html.escape(name)}</text>')
    out.append(f'<text transform="translate(14,{MARGIN_T + ph / 2}) rotate(-90)" text-anchor="middle">'
               f'{html.escape(ylabel)}</text></svg>')
    return "".join(out)


def load_metrics(path: Path) -> list[dict[str, Any]]:
    """The training log's JSON lines (unreadable lines of an interrupted run are skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def loss_series(metrics: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per loss key (``loss``, ``loss/query-pin`` ...) its (step, value) points."""
    series: dict[str, list[tuple[float, float]]] = {}
    for row in metrics:
        step = row.get("step")
        if not isinstance(step, (int, float)):
            continue
        for key, value in row.items():
            if "loss" in key and isinstance(value, (int, float)) and math.isfinite(value):
                series.setdefault(key, []).append((float(step), float(value)))
    return series


def tables(results: dict[str, Any], detail: bool = True) -> list[tuple[str, list[str], list[list[Any]], str]]:
    """Every table of the report as (title, header, rows, note); the one source of the HTML/Markdown
    report and of what ``omni eval`` prints (``detail=False``: without the wide per-system and ANN tables)."""
    out = []
    head = results.get("headline", [])
    if head:
        out.append((
            "Headline: Recall@10 of the model beside BM25 and the paper (Table 2)",
            ["set", "pairs", "rnd", "filt", "BM25", "paper"],
            [[f"{h['task']}/{h['action']}", h["pairs"], h["model_random"], h["model_full"], h["bm25_random"],
              _paper(h)] for h in head],
            ("rnd: among N random entities + the positive (paper protocol, N capped at the catalogue); filt: "
             "whole catalogue without the query's other positives; BM25: text + engaged queries, rnd; paper: "
             "SearchSage→OmniSearchSage on the paper's set beside ours (pin save, pin long click; product save ↔ "
             "add_to_cart, product long click ↔ click; query click); compat rows: Table 6, trained alone→jointly."),
        ))
    rows = [r for r in results.get("rows", []) if r["lang"] == "all"]
    if rows and detail:
        ks = [k for k in rows[0]["random"] if k.startswith("recall@")] + ["mrr"]
        out.append((
            "All systems, all sets (random index | full catalogue, filtered)",
            ["system", "set", "pairs"] + [f"{k} rnd" for k in ks] + [f"{k} full" for k in ks],
            [[r["system"], f"{r['task']} / {r['action']}", r["pairs"]] + [r["random"][k] for k in ks]
             + [r["full"][k] for k in ks] for r in rows],
            "",
        ))
    rel = results.get("relevance")
    if rel:
        metrics = ["pair_recall@10", "pair_recall@100", "query_recall@10", "ndcg@10"]
        body = [[name] + [m.get(k) for k in metrics] + [m.get(f"{k}_ci") for k in ("pair_recall@10", "ndcg@10")]
                for name, m in rel["systems"].items()]
        body += [[name] + [m.get(k) for k in metrics] + [None, None] for name, m in rel.get("references", {}).items()]
        out.append((
            (f"Relevance set {rel.get('dataset')}: {rel['test_queries']} test queries, "
             f"{rel['positive_pairs']} positive pairs, {rel['candidates']} products"),
            ["system"] + metrics + ["pair_recall@10 95% CI", "ndcg@10 95% CI"],
            body,
            "README rows are the data set's reference figures (same split and metrics); CIs are query-bootstrap.",
        ))
    ann = results.get("ann")
    if ann and detail:
        out.append((
            "Approximate search vs exact search (model embeddings, test queries)",
            ["library", "entity type", "candidates", "queries", "recall vs exact@10", "build s", "search s",
             "exact search s"],
            [[a["library"], a["entity_type"], a["candidates"], a["queries"], a["recall_vs_exact@10"], a["build_s"],
              a["search_s"], a["exact_search_s"]] for a in ann],
            "",
        ))
    for table in results.get("ablations", {}).get("tables", {}).values():
        out.append((table["title"], table["columns"], table["rows"], "ablation: variants trained with a short budget"))
    return out


def _html_table(title: str, header: list[str], rows: list[list[Any]], note: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<h2>{html.escape(title)}</h2>{note_html}<table><tr>{head}</tr>{body}</table>"


def _md_table(title: str, header: list[str], rows: list[list[Any]], note: str) -> str:
    lines = [f"## {title}", ""] + ([note, ""] if note else [])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def charts(results: dict[str, Any], metrics: list[dict[str, Any]]) -> list[str]:
    """The SVG charts: loss per task, Recall@K curves per task, Recall@10 per language."""
    out = []
    losses = loss_series(metrics)
    if losses:
        out.append(line_chart("Training loss per task", losses, "step", "loss"))
    for task in next(iter(results.get("curves", {}).values()), {}):
        series = {system: list(zip(c[task]["k"], c[task]["recall"])) for system, c in results["curves"].items()
                  if task in c}
        out.append(line_chart(f"Recall@K, {task} (random index)", series, "K", "recall", log_x=True,
                              y_range=(0.0, 1.0)))
    by_lang = [r for r in results.get("rows", []) if r["system"] == "model" and r["lang"] != "all"]
    langs = sorted({r["lang"] for r in by_lang})
    if langs:
        sets = sorted({(r["task"], r["action"]) for r in by_lang})
        value = {(r["task"], r["action"], r["lang"]): r["random"].get(f"recall@{K}") for r in by_lang}
        out.append(bar_chart(f"Recall@{K} per language (model, random index)", langs,
                             {f"{t}/{a}": [value.get((t, a, lang)) for lang in langs] for t, a in sets},
                             f"recall@{K}"))
    return [c for c in out if c]


def write_report(ws: Workspace, name: str) -> Path:
    """Write ``runs/NAME/eval/report.html`` and ``report.md`` from the run's results; return the HTML path."""
    results_path = ws.eval_dir(name) / "results.json"
    if not results_path.exists():
        raise OmniError(f"{results_path}: missing; run `omni eval {name}` first")
    results = json.loads(results_path.read_text(encoding="utf-8"))
    metrics = load_metrics(ws.run_dir(name) / "metrics.jsonl")
    title = f"omni report: run {name} (model {results.get('model_version')})"
    split = results.get("split", {})
    intro = (f"Test window [{split.get('test_start')}, {split.get('test_end')}); training data before "
             f"{split.get('train_end')}. Evaluated {results.get('created')}.")
    blocks = tables(results)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"
            f"<div class='charts'>{''.join(charts(results, metrics))}</div>"
            + "".join(_html_table(*b) for b in blocks) + "</body></html>\n")
    losses = loss_series(metrics)
    loss_rows = [[k, v[0][1], v[-1][1], int(v[-1][0])] for k, v in losses.items()]
    md = [f"# {title}", "", intro, ""]
    if loss_rows:
        md.append(_md_table("Training loss", ["series", "first", "last", "last step"], loss_rows, ""))
    md += [_md_table(*b) for b in blocks]
    out = ws.eval_dir(name)
    with atomic_path(out / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(md), encoding="utf-8")
    return out / "report.html"
