"""The sweep report: the trials' table, the best config, the metric against each parameter."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..eval.report_figures import figure_png


def _png_tag(data: bytes, caption: str) -> str:
    encoded = base64.b64encode(data).decode()
    return f'<figure><img src="data:image/png;base64,{encoded}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def metric_plots(sweep) -> dict[str, bytes]:
    """One scatter per parameter (metric vs value; stopped trials hollow) and one of the trials in order."""
    metric = sweep.config.metric
    trials = [t for t in sweep.state["trials"] if t.get("value") is not None]
    plots: dict[str, bytes] = {}
    if not trials:
        return plots
    best = sweep.state.get("best", {}).get("trial")
    for key in sweep.config.parameters:
        points = [(t["values"][key], t["value"], t["status"], t["number"] == best) for t in trials]
        numeric = all(isinstance(p[0], (int, float)) and not isinstance(p[0], bool) for p in points)
        spec = sweep.config.parameters[key]
        xs = [p[0] for p in points] if numeric else []
        wide = numeric and min(xs) > 0 and max(xs) / min(xs) >= 100  # e.g. learning rates: a log axis

        def draw(ax, points=points, numeric=numeric, key=key, log=spec.log or wide):
            labels = sorted({str(p[0]) for p in points}) if not numeric else None
            for x, y, status, is_best in points:
                pos = x if numeric else labels.index(str(x))
                ax.scatter(
                    [pos],
                    [y],
                    s=60 if is_best else 36,
                    color="#7c3aed" if is_best else "#2563eb",
                    facecolors="none" if status == "stopped" else None,
                    zorder=3,
                )
            if not numeric:
                ax.set_xticks(range(len(labels)), labels)
            elif log:
                ax.set_xscale("log")
            ax.set_xlabel(key)
            ax.set_ylabel(metric)
            ax.set_title(f"{metric} against {key}", loc="left", fontsize=11)

        plots[f"{key}.png"] = figure_png(draw, integer_x=False)

    def draw_order(ax):
        xs = [t["number"] for t in trials]
        ax.plot(xs, [t["value"] for t in trials], color="#2563eb", marker="o")
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} by trial", loc="left", fontsize=11)

    plots["trials.png"] = figure_png(draw_order)
    return plots


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def write_sweep_report(sweep) -> Path:
    plots = metric_plots(sweep)
    folder = sweep.folder / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in plots.items():
        (folder / name).write_bytes(data)
    keys = list(sweep.config.parameters)
    best = sweep.state.get("best") or {}
    rows = []
    for t in sweep.state["trials"]:
        mark = " ★" if t["number"] == best.get("trial") else ""
        value = f"{t['value']:.4g}" if t.get("value") is not None else "—"
        cells = "".join(f"<td>{html.escape(str(t['values'].get(k)))}</td>" for k in keys)
        status = t["status"] + (f" at step {t['stopped_at_step']}" if t.get("stopped_at_step") else "")
        wall = duration(t.get("wall_seconds"))
        planned = duration(t.get("predicted_seconds"))
        rows.append(
            f"<tr><td>{t['number']}{mark}</td>{cells}<td>{value}</td><td>{html.escape(status)}</td>"
            f"<td>{planned}</td><td>{wall}</td></tr>"
        )
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    best_html = (
        f"<p>Best: trial {best['trial']}, {html.escape(sweep.config.metric)} = {best['value']:.4g}. "
        f"Its config: <code>{html.escape(str(sweep.folder / 'best.yaml'))}</code></p>"
        if best
        else "<p>No trial finished.</p>"
    )
    figures = "".join(_png_tag(data, name) for name, data in plots.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>sweep {html.escape(sweep.folder.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#111}} table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}} th{{background:#f5f5f5}}
.plots{{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}} img{{max-width:100%}}</style>
</head><body><h1>Sweep {html.escape(sweep.folder.name)}</h1>
<p>{html.escape(sweep.config.strategy)} search, {len(sweep.state["trials"])} trial(s), metric
{html.escape(sweep.config.metric)} ({"lower" if sweep.lower else "higher"} is better).</p>{best_html}
<table><tr><th>trial</th>{head}<th>{html.escape(sweep.config.metric)}</th><th>status</th><th>planned</th>
<th>took</th></tr>{"".join(rows)}</table><h2>Metric against each parameter</h2><div class="plots">{figures}</div>
</body></html>"""
    path = sweep.folder / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
