"""The run report: one self-contained ``report.html`` plus PNG plots.

The page must open anywhere a run folder is copied to (a laptop, a CI
artifact, an e-mail attachment), so it loads nothing: CSS is inline and the
plots are embedded as base64 data URIs (and also saved under ``plots/`` for
slides). Every text from data or models is HTML-escaped: samples are model
output and user data, and may contain markup.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime
from pathlib import Path

from tuneforge.eval.export_report import export_section
from tuneforge.eval.report_figures import curve_png, make_plots, matrix_png, number, series
from tuneforge.eval.scorers import json_field_errors

# Metric names that mean "lower is better"; everything else (scores) is higher-better.
_LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "unmapped", "error")
# Metrics with no good direction of their own: DPO's implicit rewards and log-probs of each side (the
# rejected side falling is the aim, the chosen side often falls too; the margin says how it went).
_NEITHER = ("rewards/chosen", "rewards/rejected", "logps/")
LONG_PROMPT_CHARS = 700
LONG_PROMPT_LINES = 14


def lower_is_better(metric: str) -> bool:
    return any(word in metric.lower() for word in _LOWER_IS_BETTER)


# --------------------------------------------------------------------------- formatting


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    return str(value)


def _delta(metric: str, before, after) -> tuple[str, str]:
    """(text, css class) of after − before; class says better / worse / same."""
    b, a = number(before), number(after)
    if b is None or a is None or not (math.isfinite(a) and math.isfinite(b)):
        return "", ""
    diff = a - b
    if diff == 0:
        return "±0", "same"
    better = (diff < 0) == lower_is_better(metric)
    sign = "+" if diff > 0 else "−"
    text = f"{sign}{_fmt(abs(diff))}"
    if any(word in metric for word in _NEITHER):
        return text, "neutral"
    if b != 0 and lower_is_better(metric):
        # Relative change reads well for losses; for scores in [0, 1] "+300%" from
        # 0.125 to 0.5 misleads, so those show the absolute change only.
        text += f" ({sign}{abs(diff) / abs(b) * 100:.1f}%)"
    return text, "better" if better else "worse"


def _duration(seconds) -> str:
    s = number(seconds)
    if s is None:
        return "—"
    if s < 60:
        return f"{s:.1f} s"
    minutes, secs = divmod(round(s), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _count(value) -> str:
    n = number(value)
    if n is None:
        return "—"
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.3g}{suffix}"
    return f"{n:.0f}"


def _memory(mb) -> str:
    m = number(mb)
    if m is None:
        return "—"
    return f"{m / 1024:.2f} GB" if m >= 1024 else f"{m:,.0f} MB"


def _e(text) -> str:
    return html.escape("" if text is None else str(text), quote=True)


# --------------------------------------------------------------------------- sections


def _header(run: dict) -> str:
    name = run.get("name") or "tuneforge run"
    chips = "".join(
        f'<span class="chip"><b>{_e(label)}</b> {_e(run[key])}</span>'
        for key, label in (("method", "method"), ("model", "model"), ("adapter", "adapter"), ("output", "output"))
        if run.get(key)
    )
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    return f'<header><h1>{_e(name)}</h1><div class="chips">{chips}</div><p class="muted">Report written {when}</p></header>'


def _results_table(before: dict, after: dict, baselines: dict | None = None) -> str:
    """Metric rows: before, after, change; plus one column per baseline (e.g. zero-shot prompting)."""
    if not before and not after:
        return (
            '<p class="empty">No evaluation was run. Add an <code>eval:</code> section to the config '
            "(or a held-out set) to score the model before and after training.</p>"
        )
    baselines = baselines or {}
    names = list(dict.fromkeys([*after, *before, *(k for b in baselines.values() for k in b)]))
    rows = []
    for name in names:
        text, cls = _delta(name, before.get(name), after.get(name))
        hint = (
            "no good direction"
            if cls == "neutral"
            else "lower is better"
            if lower_is_better(name)
            else "higher is better"
        )
        extra = "".join(f'<td class="num">{_e(_fmt(b.get(name)))}</td>' for b in baselines.values())
        rows.append(
            f'<tr><th scope="row">{_e(name)} <span class="hint">{hint}</span></th>{extra}'
            f'<td class="num">{_e(_fmt(before.get(name)))}</td>'
            f'<td class="num">{_e(_fmt(after.get(name)))}</td>'
            f'<td class="num delta {cls}">{_e(text)}</td></tr>'
        )
    heads = "".join(f'<th class="num baseline">{_e(title)}</th>' for title in baselines)
    return (
        f'<table class="metrics"><thead><tr><th>metric</th>{heads}<th class="num">before</th>'
        '<th class="num">after</th><th class="num">change</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _matrices_html(matrices: dict, run_dir: Path) -> str:
    figures = []
    for k, (title, matrix) in enumerate(matrices.items()):
        for side in ("before", "after"):
            if side not in matrix:
                continue
            data = matrix_png(side, matrix["labels"], matrix[side])
            name = f"matrix-{k + 1}-{side}.png"
            (run_dir / "plots").mkdir(parents=True, exist_ok=True)
            (run_dir / "plots" / name).write_bytes(data)
            figures.append((title, side, name, data))
    if not figures:
        return ""
    html_parts = []
    for title in matrices:
        cells = "".join(
            f'<figure><img alt="{_e(title)} {side}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
            f"<figcaption>{_e(side)} training · plots/{_e(name)}</figcaption></figure>"
            for t, side, name, data in figures
            if t == title
        )
        html_parts.append(f'<h3>{_e(title)}</h3><div class="plots matrices">{cells}</div>')
    return "".join(html_parts)


def _curves_html(curves: dict, run_dir: Path) -> str:
    """Before / after curves over the same x (e.g. recall@k against k), one plot each."""
    parts = []
    for k, (title, curve) in enumerate(curves.items()):
        data = curve_png(title, curve)
        name = f"curve-{k + 1}.png"
        (run_dir / "plots").mkdir(parents=True, exist_ok=True)
        (run_dir / "plots" / name).write_bytes(data)
        parts.append(
            f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
            f"<figcaption>plots/{_e(name)}</figcaption></figure>"
        )
    return f'<div class="plots curves">{"".join(parts)}</div>' if parts else ""


def _tables_html(tables: dict) -> str:
    parts = []
    for title, table in tables.items():
        head = "".join(f'<th class="{"num" if i else ""}">{_e(c)}</th>' for i, c in enumerate(table["columns"]))
        body = "".join(
            "<tr>"
            + "".join(f'<td class="{"num" if i else ""}">{_e(_fmt(v))}</td>' for i, v in enumerate(row))
            + "</tr>"
            for row in table["rows"]
        )
        parts.append(
            f'<h3>{_e(title)}</h3><table class="metrics narrow"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )
    return "".join(parts)


def _field_errors_table(summary: dict, samples: list[dict]) -> str:
    errors = summary.get("field_errors") or {}
    note = ""
    if not errors and any("json_field_accuracy" in (s.get("scores") or {}).get("after", {}) for s in samples):
        # No totals from the full eval: count over the samples we have, and say so.
        errors = {}
        for side in ("before", "after"):
            pairs = [(s[side], s["reference"]) for s in samples if s.get(side) is not None]
            try:
                errors[side] = json_field_errors(pairs) if pairs else {}
            except ValueError:
                return ""
        note = f'<p class="muted">Counted over the {len(samples)} samples shown below.</p>'
    if not any(errors.values()):
        return ""
    fields = list(dict.fromkeys([*errors.get("after", {}), *errors.get("before", {})]))

    def cell(side, field):
        entry = errors.get(side, {}).get(field)
        return "—" if not entry else f"{entry['wrong']} / {entry['total']}"

    rows = "".join(
        f'<tr><th scope="row"><code>{_e(f)}</code></th><td class="num">{cell("before", f)}</td>'
        f'<td class="num">{cell("after", f)}</td></tr>'
        for f in fields
    )
    return (
        "<h3>JSON fields most often wrong</h3>"
        '<table class="metrics narrow"><thead><tr><th>field</th><th class="num">wrong before</th>'
        f'<th class="num">wrong after</th></tr></thead><tbody>{rows}</tbody></table>{note}'
    )


def _train_and_data(summary: dict) -> dict:
    """Training facts, then what the method reported about its data (prefixed "data")."""
    data = {f"data_{k}": v for k, v in (summary.get("data") or {}).items()}
    return {**(summary.get("train") or {}), **data}


def _facts(train: dict, metrics: list[dict]) -> str:
    items: list[tuple[str, str]] = []
    known = {
        "tokens_per_second",
        "tokens",
        "trainable_parameters",
        "total_parameters",
        "peak_memory_mb",
        "wall_seconds",
        "steps",
        "final_loss",
    }
    if "tokens_per_second" in train:
        items.append(("throughput", f"{_fmt(number(train['tokens_per_second']))} tokens/s"))
    if "tokens" in train:
        items.append(("tokens trained", _fmt(train["tokens"])))
    trainable, total = number(train.get("trainable_parameters")), number(train.get("total_parameters"))
    if trainable is not None:
        share = f" ({trainable / total * 100:.2f}%)" if total else ""
        items.append(("trainable parameters", f"{_count(trainable)} of {_count(total)}{share}"))
    if "peak_memory_mb" in train:
        items.append(("peak memory", _memory(train["peak_memory_mb"])))
    if "wall_seconds" in train:
        items.append(("wall time", _duration(train["wall_seconds"])))
    steps, loss = series(metrics, "loss")
    if steps:
        items.append(("optimizer steps", _fmt(int(max(steps)))))
        items.append(("final training loss", _fmt(float(loss[-1]))))
    if "run_wall_seconds" in train:
        items.append(("whole run (load, eval, train)", _duration(train["run_wall_seconds"])))
    for key, value in train.items():
        if key not in known | {"run_wall_seconds"} and not isinstance(value, (dict, list)):
            items.append((key.replace("_", " "), _fmt(value)))
    if not items:
        return ""
    cards = "".join(
        f'<div class="fact"><div class="label">{_e(k)}</div><div class="value">{_e(v)}</div></div>' for k, v in items
    )
    return f'<div class="facts">{cards}</div>'


def _plots_html(plots: dict[str, bytes]) -> str:
    if not plots:
        return '<p class="empty">No training metrics were recorded.</p>'
    figures = "".join(
        f'<figure><img alt="{_e(name[:-4])} plot" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>plots/{_e(name)}</figcaption></figure>"
        for name, data in plots.items()
    )
    return f'<div class="plots">{figures}</div>'


def _score_class(scores: dict) -> str:
    """Border colour of an answer from its first score: right, partly right, wrong."""
    values = [v for v in scores.values() if number(v) is not None]
    if not values:
        return ""
    first = values[0]
    return "right" if first >= 1 else "wrong" if first <= 0 else "partial"


def _answer(title: str, text, scores: dict | None) -> str:
    scores = scores or {}
    badges = "".join(f'<span class="badge">{_e(k)} {_e(_fmt(v))}</span>' for k, v in scores.items())
    body = _e(text) if text else '<span class="muted">(empty)</span>'
    return (
        f'<div class="answer {_score_class(scores)}"><div class="answer-head"><b>{_e(title)}</b>{badges}</div>'
        f"<pre>{body}</pre></div>"
    )


def _prompt(text: str) -> str:
    text = text or ""
    lines = text.count("\n") + 1
    if len(text) <= LONG_PROMPT_CHARS and lines <= LONG_PROMPT_LINES:
        return f'<div class="prompt"><div class="answer-head"><b>prompt</b></div><pre>{_e(text)}</pre></div>'
    # Long prompts (system text, few-shot examples) end where the question is:
    # show that tail, and the whole prompt on demand. CSS hides the tail when open.
    tail = _tail_lines(text, 400)
    return (
        f'<div class="prompt"><details><summary><b>prompt</b> <span class="muted">{len(text):,} characters, '
        f"{lines} lines — show all</span></summary><pre>{_e(text)}</pre></details>"
        f'<pre class="tail"><span class="muted">…</span>{_e(tail)}</pre></div>'
    )


def _tail_lines(text: str, limit: int) -> str:
    """The last whole lines of ``text`` that fit in ``limit`` characters (at
    least the last line, itself cut to ``limit``)."""
    lines = text.rstrip("\n").split("\n")
    kept: list[str] = []
    size = 0
    for line in reversed(lines):
        if kept and size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    tail = "\n".join(reversed(kept))
    return tail[-limit:]


def _samples_html(samples: list[dict]) -> str:
    if not samples:
        return '<p class="empty">No sample generations (no held-out prompts, or eval was off).</p>'
    with_before = any(s.get("before") is not None for s in samples)
    cards = []
    for i, s in enumerate(samples, 1):
        scores = s.get("scores") or {}
        columns = [_answer("reference", s.get("reference"), None)]
        if with_before:
            columns.append(_answer("before", s.get("before"), scores.get("before")))
        columns.append(_answer("after", s.get("after"), scores.get("after")))
        cards.append(
            f'<article class="sample"><h3>Sample {i}</h3>{_prompt(s.get("prompt", ""))}'
            f'<div class="cols cols-{len(columns)}">{"".join(columns)}</div></article>'
        )
    return "".join(cards)


_CSS = """
:root { --fg:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f6f7f9; --card:#fff;
        --good:#15803d; --good-bg:#dcfce7; --bad:#b91c1c; --bad-bg:#fee2e2; --mid:#b45309; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 24px 48px; }
header h1 { margin:0 0 8px; font-size:26px; }
h2 { font-size:18px; margin:0 0 14px; }
h3 { font-size:15px; margin:18px 0 8px; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:20px 22px; margin-top:20px; }
.chips { display:flex; flex-wrap:wrap; gap:8px; }
.chip { background:var(--card); border:1px solid var(--line); border-radius:999px; padding:3px 12px; font-size:13px; }
.chip b { color:var(--muted); font-weight:600; margin-right:4px; }
.muted, .hint { color:var(--muted); font-size:13px; }
.hint { font-weight:400; margin-left:6px; font-size:12px; }
.empty { color:var(--muted); font-style:italic; margin:4px 0; }
table.metrics { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; }
table.metrics.narrow { width:auto; min-width:420px; }
table.metrics th, table.metrics td { padding:8px 12px; border-bottom:1px solid var(--line); text-align:left; }
table.metrics thead th { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
table.metrics tbody th { font-weight:600; }
.num { text-align:right !important; white-space:nowrap; }
.delta.better { color:var(--good); background:var(--good-bg); font-weight:600; }
.delta.worse { color:var(--bad); background:var(--bad-bg); font-weight:600; }
.delta.same, .delta.neutral { color:var(--muted); }
.plots { display:grid; grid-template-columns:repeat(auto-fit,minmax(440px,1fr)); gap:16px; }
.plots.matrices { grid-template-columns:repeat(auto-fit,minmax(260px,380px)); }
.plots.curves { grid-template-columns:repeat(auto-fit,minmax(320px,560px)); margin-top:16px; }
th.baseline { color:#7c3aed !important; }
figure { margin:0; }
figure img { width:100%; height:auto; border:1px solid var(--line); border-radius:8px; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
.facts { display:grid; grid-template-columns:repeat(auto-fill,minmax(200px,1fr)); gap:12px; margin-top:16px; }
.fact { border:1px solid var(--line); border-radius:8px; padding:10px 14px; }
.fact .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.fact .value { font-size:17px; font-weight:600; font-variant-numeric:tabular-nums; }
.sample { border-top:1px solid var(--line); padding-top:6px; margin-top:14px; }
.sample:first-of-type { border-top:0; margin-top:0; padding-top:0; }
.cols { display:grid; gap:12px; margin-top:10px; }
.cols-2 { grid-template-columns:1fr 1fr; } .cols-3 { grid-template-columns:1fr 1fr 1fr; }
@media (max-width:800px) { .cols-2, .cols-3 { grid-template-columns:1fr; } }
.answer, .prompt { border:1px solid var(--line); border-left:4px solid #cbd5e1; border-radius:6px; background:#fafafa; min-width:0; }
.answer.right { border-left-color:var(--good); } .answer.wrong { border-left-color:var(--bad); }
.answer.partial { border-left-color:var(--mid); }
.answer-head { display:flex; flex-wrap:wrap; gap:6px; align-items:center; padding:6px 10px 0; font-size:13px; }
.answer-head b { text-transform:uppercase; letter-spacing:.04em; font-size:12px; color:var(--muted); margin-right:auto; }
.badge { background:#eef2ff; color:#3730a3; border-radius:4px; padding:0 6px; font-size:12px; font-variant-numeric:tabular-nums; }
pre { margin:0; padding:8px 10px 10px; white-space:pre-wrap; overflow-wrap:anywhere; max-height:420px; overflow:auto;
      font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace; }
details > summary { cursor:pointer; padding:6px 10px; font-size:13px; }
details > summary b { text-transform:uppercase; letter-spacing:.04em; font-size:12px; color:var(--muted); }
details[open] + pre.tail { display:none; }
section.config pre { background:#f8fafc; border:1px solid var(--line); border-radius:6px; max-height:none; margin-top:8px; }
code { font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:#f1f5f9; padding:1px 4px; border-radius:4px; }
"""


def _page(run: dict, body: str) -> str:
    title = _e(f"{run.get('name') or 'run'} — tuneforge report")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
        f"<style>{_CSS}</style></head><body><main>{body}</main></body></html>\n"
    )


def write_report(run_dir: Path, *, summary: dict, metrics: list[dict], samples: list[dict], config_text: str) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and ``run_dir/plots/*.png``;
    return the HTML path. Any of summary's sections, metrics and samples may be empty."""
    run_dir = Path(run_dir)
    summary = summary or {}
    run = summary.get("run") or {}
    before, after = summary.get("before") or {}, summary.get("after") or {}
    plots = make_plots(metrics or [], early_stopping=summary.get("early_stopping"))
    if plots:
        (run_dir / "plots").mkdir(parents=True, exist_ok=True)
        for name, data in plots.items():
            (run_dir / "plots" / name).write_bytes(data)
    samples = samples or []
    body = (
        _header(run) + f"<section><h2>Before and after training</h2>"
        f"{_results_table(before, after, summary.get('baselines'))}"
        f"{_field_errors_table(summary, samples)}{_curves_html(summary.get('curves') or {}, run_dir)}"
        f"{_matrices_html(summary.get('matrices') or {}, run_dir)}"
        f"{_tables_html(summary.get('tables') or {})}</section>"
        + f"<section><h2>Training</h2>{_plots_html(plots)}{_facts(_train_and_data(summary), metrics or [])}</section>"
        + _plan_html(summary.get("plan"))
        + f"<section><h2>Held-out samples</h2>{_samples_html(samples)}</section>"
        + export_section(run_dir)  # verify-export results (eval/export_report.py)
        + '<section class="config"><details><summary><b>resolved config</b></summary>'
        f"<pre>{_e(config_text) if config_text else '(not recorded)'}</pre></details></section>"
    )
    path = run_dir / "report.html"
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(_page(run, body), encoding="utf-8")
    return path


def _plan_html(plan: dict | None) -> str:
    """The resource plan (planning/) beside what the run measured; empty when the run has none."""
    if not plan:
        return ""
    if not plan.get("planned"):
        return f"<section><h2>Resource plan</h2><p>{_e(plan.get('problem') or 'not available')}</p></section>"
    planned, measured, error = plan["planned"], plan.get("measured") or {}, plan.get("error") or {}
    parts = "".join(
        f'<tr><td>{_e(name)}</td><td class="num">{_memory(mb)}</td></tr>'
        for name, mb in (planned.get("memory_mb") or {}).items()
    )

    def pct(key):
        value = error.get(key)
        return "—" if value is None else f"{100 * value:+.0f}%"

    compare = (
        f'<tr><td>peak memory</td><td class="num">{_memory(planned.get("peak_memory_mb"))}</td>'
        f'<td class="num">{_memory(measured.get("peak_memory_mb"))}</td><td class="num">'
        f"{pct('peak_memory')}</td></tr>"
        f'<tr><td>seconds per step</td><td class="num">{_fmt(planned.get("step_seconds"))}</td>'
        f'<td class="num">{_fmt(measured.get("step_seconds"))}</td><td class="num">'
        f"{pct('step_seconds')}</td></tr>"
    )
    return (
        "<section><h2>Resource plan</h2>"
        f"<p>{_e(planned.get('device'))} {_e(planned.get('precision'))}, {_e(planned.get('processes'))} "
        f"process(es); data: {_e((planned.get('data') or {}).get('source'))}</p>"
        '<table class="metrics narrow"><thead><tr><th></th><th class="num">planned</th>'
        '<th class="num">measured</th><th class="num">error</th></tr></thead>'
        f"<tbody>{compare}</tbody></table>"
        '<details><summary>planned memory by part</summary><table class="metrics narrow"><tbody>'
        f"{parts}</tbody></table></details></section>"
    )


def report_samples(before, after, limit: int) -> list[dict]:
    """Report ``samples`` from two ``GenerationResult``s over the same prompts
    (``before`` may be None when the base model was not scored), first ``limit``."""
    if after is None:
        return []
    rows = []
    for i, a in enumerate(after.samples[:limit]):
        b = before.samples[i] if before is not None and i < len(before.samples) else None
        if b is not None and b.prompt != a.prompt:
            raise ValueError("before and after results are not over the same samples in the same order")
        rows.append(
            {
                "prompt": a.prompt,
                "reference": a.reference,
                "before": b.prediction if b else None,
                "after": a.prediction,
                "scores": {"before": b.scores if b else {}, "after": a.scores},
            }
        )
    return rows


def print_before_after(console, summary: dict) -> None:
    """A short rich table (metric, before, after, change) for the CLI; prints
    nothing when there was no evaluation."""
    from rich.markup import escape
    from rich.table import Table

    before, after = (summary or {}).get("before") or {}, (summary or {}).get("after") or {}
    if not before and not after:
        return
    baselines = (summary or {}).get("baselines") or {}
    table = Table(title="Before / after", title_justify="left")
    table.add_column("metric")
    for title in baselines:
        table.add_column(escape(title), justify="right", style="magenta")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_column("change", justify="right")
    for name in dict.fromkeys([*after, *before]):
        text, cls = _delta(name, before.get(name), after.get(name))
        style = {"better": "green", "worse": "red"}.get(cls, "dim")
        table.add_row(
            escape(name),
            *(_fmt(b.get(name)) for b in baselines.values()),
            _fmt(before.get(name)),
            _fmt(after.get(name)),
            f"[{style}]{text}[/]" if text else "",
        )
    console.print(table)
