"""The report of a continual run (issue #10): one self-contained ``report.html`` plus PNGs under ``plots/``.

Built from the continual ``summary.json`` (stages, the accuracy matrix R, ACC / BWT / FWT / forgetting,
general-text perplexity, an optional WiSE-FT sweep) and each stage's ``stages/<k>-<name>/metrics.jsonl``.
It reuses the run report's page, styles, formatting and plotting (``eval/report.py``); like that report it
loads nothing and escapes every text that comes from data or configs. Any field may be None or missing.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import datetime
from pathlib import Path

from tuneforge.eval.report import _delta, _duration, _e, _fmt, _page, lower_is_better
from tuneforge.eval.report_figures import ema, figure_png, number, series

# Styles only this page needs (report.py's _CSS comes with _page).
_CSS_EXTRA = """<style>
.plots.narrow { grid-template-columns:repeat(auto-fit,minmax(400px,1fr)); align-items:start; }
th.greek { text-transform:none !important; }
td.reading { color:var(--muted); font-size:13px; white-space:normal; }
table.metrics td.path { font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; color:var(--muted); }
</style>"""
_COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777")


def _figure(run_dir: Path, name: str, data: bytes, alt: str) -> str:
    """Save ``plots/<name>`` (for slides) and return the figure embedding it as a data URI."""
    (run_dir / "plots").mkdir(parents=True, exist_ok=True)
    (run_dir / "plots" / name).write_bytes(data)
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        f"<figcaption>plots/{_e(name)}</figcaption></figure>"
    )


def _finite(value) -> float | None:
    v = number(value)
    return v if v is not None and math.isfinite(v) else None


def _signed(value: float) -> str:
    return ("+" if value > 0 else "−" if value < 0 else "±") + _fmt(abs(value))


# --------------------------------------------------------------------------- header and headline


def _header(summary: dict) -> str:
    joint = summary.get("strategy") == "joint"
    precision = summary.get("precision") if isinstance(summary.get("precision"), dict) else {}
    chips = [
        ("kind", "continual"),
        ("method", summary.get("method")),
        ("strategy", summary.get("strategy")),
        ("tasks" if joint else "stages", (", " if joint else " → ").join(map(str, summary.get("stages") or []))),
        ("metric", summary.get("metric")),
        ("wall time", _duration(summary.get("wall_seconds"))),
        ("precision", precision.get("label") or precision.get("mixed_precision")),
    ]
    chips_html = "".join(f'<span class="chip"><b>{_e(k)}</b> {_e(v)}</span>' for k, v in chips if v and v != "—")
    written = datetime.now().strftime("%Y-%m-%d %H:%M")
    created = f"Run started {_e(str(summary['created']).replace('T', ' '))} · " if summary.get("created") else ""
    return (
        f'<header><h1>{_e(summary.get("name") or "continual run")}</h1><div class="chips">{chips_html}</div>'
        f'<p class="muted">{created}Report written {written}</p></header>'
    )


def _moved(change: float, metric: str, lower: bool) -> str:
    """A change already signed by the metric's direction (> 0: the tasks got better), in words that say
    which way the raw numbers went: "score 0.42 lower", or "have a 0.3 higher eval_loss (worse)"."""
    side = "higher" if (change > 0) != lower else "lower"
    if not lower:
        return f"score {_fmt(abs(change))} {side}"
    return f"have a {_fmt(abs(change))} {side} {metric} ({'better' if change > 0 else 'worse'})"


def _readings(cm: dict, metric: str, tasks: int, joint: bool) -> dict[str, str]:
    """One plain-English line per headline number. BWT, FWT and forgetting come signed by the metric's
    direction (continual/metrics.py: BWT < 0 and forgetting > 0 mean worse, for a loss too)."""
    lower = lower_is_better(metric)
    acc, bwt, fwt, mf = (_finite(cm.get(k)) for k in ("acc", "bwt", "fwt", "mean_forgetting"))
    why = "not defined for joint training (one stage over all tasks)" if joint else "needs at least two stages"
    out = {
        "ACC": f"after {'joint training' if joint else 'the last stage'}, the mean {metric} over all {tasks} tasks is {_fmt(acc)}"
        if acc is not None
        else "no final scores"
    }
    if bwt is not None:
        out["BWT"] = (
            f"after the last stage, earlier tasks {_moved(bwt, metric, lower)} on average than right "
            "after they were learned"
            if bwt
            else "earlier tasks kept their scores after later stages"
        )
    else:
        out["BWT"] = why
    if fwt is not None:
        out["FWT"] = (
            f"before being trained on, tasks {_moved(fwt, metric, lower)} on average than the base model "
            "did (transfer from earlier stages)"
            if fwt
            else "earlier stages did not change the score of tasks not yet trained"
        )
    else:
        out["FWT"] = why
    forgetting = cm.get("forgetting")
    per_task = (
        " (" + ", ".join(f"{k} {_fmt(v)}" for k, v in forgetting.items()) + ")"
        if isinstance(forgetting, dict) and forgetting
        else ""
    )
    best = f"above their best (lowest) {metric}" if lower else "below their best score"
    out["mean forgetting"] = (
        f"earlier tasks end {_fmt(mf)} {best} after being learned{per_task}" if mf is not None else why
    )
    return out


def _headline(summary: dict, matrix: dict) -> str:
    cm = dict(summary.get("continual_metrics") or {})
    values, joint = matrix.get("values") or [], summary.get("strategy") == "joint"
    if not cm and values and not joint:  # an older summary without the metrics: work them out from R
        from tuneforge.continual.metrics import continual_metrics

        try:
            m = continual_metrics(values, lower_is_better=lower_is_better(summary.get("metric") or "score"))
            cm = {
                "acc": m.acc,
                "bwt": m.bwt,
                "fwt": m.fwt,
                "mean_forgetting": m.mean_forgetting,
                "forgetting": dict(zip(matrix.get("columns") or [], m.forgetting)),
            }
        except (ValueError, TypeError):
            pass
    tasks = len(matrix.get("columns") or summary.get("stages") or [])
    readings = _readings(cm, summary.get("metric") or "score", tasks, joint)
    rows = []
    for label, key, good in (
        ("ACC", "acc", None),
        ("BWT", "bwt", 1),
        ("FWT", "fwt", 1),
        ("mean forgetting", "mean_forgetting", -1),
    ):
        v = _finite(cm.get(key))
        cls = "" if v is None or good is None or v == 0 else "better" if v * good > 0 else "worse"
        rows.append(
            f'<tr><th scope="row">{_e(label)}</th><td class="num delta {cls}">'
            f"{_e(_signed(v) if v is not None and good == 1 else _fmt(v))}</td>"
            f'<td class="reading">{_e(readings[label])}</td></tr>'
        )
    settings = summary.get("strategy_settings") or {}
    table = ""
    if isinstance(settings, dict) and settings:
        cells = "".join(
            f'<tr><th scope="row">{_e(k)}</th><td class="num">'
            f"{_e(json.dumps(v) if isinstance(v, (dict, list)) else _fmt(v))}</td></tr>"
            for k, v in settings.items()
        )
        table = (
            f"<h3>Strategy settings: {_e(summary.get('strategy') or '—')}</h3>"
            f'<table class="metrics narrow"><tbody>{cells}</tbody></table>'
        )
    return (
        '<section><h2>Headline</h2><table class="metrics"><thead><tr><th>metric</th><th class="num">value</th>'
        f"<th>reading</th></tr></thead><tbody>{''.join(rows)}</tbody></table>{table}</section>"
    )


# --------------------------------------------------------------------------- accuracy matrix


def _grid(matrix: dict, extra: dict) -> tuple[list[str], list[str], list[list[float]], int]:
    """(row labels, columns, values with NaN for gaps, number of R rows before the extra rows)."""
    columns = [str(c) for c in matrix.get("columns") or []]
    raw = [list(r or []) for r in matrix.get("values") or []]
    labels = [str(r) for r in matrix.get("rows") or []] + [
        f"row {i}" for i in range(len(matrix.get("rows") or []), len(raw))
    ]
    labels = [_after(r) if i else r for i, r in enumerate(labels[: len(raw)])]
    n = len(raw)
    for name, row in (extra or {}).items():
        labels.append(str(name))
        raw.append(list(row or []))
    width = max([len(columns)] + [len(r) for r in raw])
    columns += [f"task {j + 1}" for j in range(len(columns), width)]
    values = [[(_finite(r[j]) if j < len(r) else None) for j in range(width)] for r in raw]
    return labels, columns, [[math.nan if v is None else v for v in r] for r in values], n


def _heatmap_png(labels, columns, values, n, metric: str, joint: bool) -> bytes:
    import numpy as np

    data = np.array(values, dtype=float)
    finite = data[np.isfinite(data)]
    lo, hi = (
        (0.0, 1.0)
        if finite.size == 0 or (finite.min() >= 0 and finite.max() <= 1)
        else (float(finite.min()), float(finite.max()) or 1.0)
    )

    def draw(ax):
        from matplotlib import colormaps

        cmap = colormaps["Blues"].with_extremes(bad="#f1f5f9")
        ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(
            range(len(columns)),
            labels=columns,
            rotation=30 if max(map(len, columns)) > 8 else 0,
            ha="right" if max(map(len, columns)) > 8 else "center",
        )
        ax.set_yticks(range(len(labels)), labels=labels)
        ax.xaxis.tick_top()
        ax.xaxis.set_label_position("top")
        ax.set_xlabel(f"task ({metric})")
        ax.tick_params(length=0)
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                v = data[i, j]
                shade = (v - lo) / (hi - lo) if hi > lo else 0
                ax.text(
                    j,
                    i,
                    "—" if math.isnan(v) else f"{v:.3g}",
                    ha="center",
                    va="center",
                    fontsize=11,
                    color="white" if not math.isnan(v) and shade > 0.55 else "#1f2937",
                    fontweight="bold" if (joint and i == n - 1 and i) or (not joint and i == j + 1) else None,
                )
                if i < n and i and ((joint and i == n - 1) or (not joint and i == j + 1)):
                    ax.add_patch(_box(j, i))  # the cell where the task was trained
        if n < data.shape[0]:
            ax.axhline(n - 0.5, color="#1f2937", linewidth=2.5)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)

    width = min(max(3.2 + 1.0 * len(columns), 4.5), 10.0)
    return figure_png(draw, figsize=(width, 1.0 + 0.5 * len(labels)), integer_x=False)


def _box(j: int, i: int):
    from matplotlib.patches import Rectangle

    return Rectangle((j - 0.47, i - 0.47), 0.94, 0.94, fill=False, edgecolor="#f59e0b", linewidth=2)


def _lines_png(labels: list[str], columns: list[str], values, metric: str, joint: bool) -> bytes:
    def draw(ax):
        xs = range(len(labels))
        for j, task in enumerate(columns):
            colour = _COLOURS[j % len(_COLOURS)]
            ys = [row[j] for row in values]
            ax.plot(xs, ys, marker="o", markersize=4, color=colour, linewidth=1.8, label=task)
            trained = len(labels) - 1 if joint else j + 1
            if trained < len(labels) and not math.isnan(ys[trained]):
                ax.plot([trained], [ys[trained]], marker="*", markersize=14, color=colour, markeredgecolor="white")
        ax.set_xticks(list(xs), labels=labels, rotation=20 if sum(map(len, labels)) > 60 else 0)
        ax.set_ylabel(metric)
        finite = [v for row in values for v in row if not math.isnan(v)]
        if finite and min(finite) >= 0 and max(finite) <= 1:
            ax.set_ylim(-0.03, 1.05)
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.set_title("Score on each task after each stage (★ where it was trained)", loc="left", fontsize=11)
        ax.legend(
            frameon=False, fontsize=8, title="task", title_fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5)
        )

    return figure_png(draw, figsize=(6.0, 3.6), integer_x=False)


def _matrix_section(summary: dict, matrix: dict, run_dir: Path) -> str:
    labels, columns, values, n = _grid(matrix, summary.get("extra_rows") or {})
    if not values or not columns:
        return '<section><h2>Accuracy matrix</h2><p class="empty">No accuracy matrix was recorded.</p></section>'
    metric, joint = summary.get("metric") or "score", summary.get("strategy") == "joint"
    better = "lower" if lower_is_better(metric) else "higher"
    heat = _figure(run_dir, "matrix.png", _heatmap_png(labels, columns, values, n, metric, joint), "accuracy matrix")
    lines = (
        _figure(
            run_dir,
            "tasks.png",
            _lines_png(labels[:n], columns, values[:n], metric, joint),
            "score of each task across stages",
        )
        if n >= 2
        else ""
    )
    extra = " Below the dark line: extra evaluations of the final model(s)." if n < len(labels) else ""
    return (
        "<section><h2>Accuracy matrix R</h2>"
        f'<p class="muted">R[i][j] = {_e(metric)} on task j (column) after stage i (row); {better} is better. '
        f"Outlined cells: the stage that trained the task.{_e(extra)}</p>"
        f'<div class="plots narrow">{heat}{lines}</div></section>'
    )


# --------------------------------------------------------------------------- perplexity, WiSE-FT, stages


def _after(row) -> str:
    return str(row) if str(row) in ("base", "joint") or str(row).startswith("after ") else f"after {row}"


def _perplexity_section(ppl: dict | None) -> str:
    if not ppl or not ppl.get("values"):
        return ""
    rows, values = ppl.get("rows") or [], ppl["values"]
    base = values[0] if values else None
    body = "".join(
        f'<tr><th scope="row">{_e(_after(rows[i] if i < len(rows) else f"row {i}"))}</th><td class="num">{_e(_fmt(v))}</td>'
        + (
            '<td class="num delta same">base</td>'
            if i == 0
            else '<td class="num delta {1}">{0}</td>'.format(*(_e(x) for x in _delta("perplexity", base, v)))
        )
        + "</tr>"
        for i, v in enumerate(values)
    )
    return (
        '<section><h2>General-text perplexity</h2><p class="muted">Perplexity on general text after each stage '
        "(lower is better): how far training drifts from the base model's language modelling.</p>"
        '<table class="metrics narrow"><thead><tr><th>model</th><th class="num">perplexity</th>'
        f'<th class="num">change from base</th></tr></thead><tbody>{body}</tbody></table></section>'
    )


def _wise_png(alphas, new, old, metric: str) -> bytes:
    def draw(ax):
        ax.plot(old, new, color="#2563eb", marker="o", linewidth=1.6)
        for a, x, y in zip(alphas, old, new):
            if _finite(x) is not None and _finite(y) is not None:
                ax.annotate(
                    f"α={_fmt(a)}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8, color="#374151"
                )
        ax.set_xlabel(f"old tasks ({metric})")
        ax.set_ylabel(f"new task ({metric})")
        ax.set_title("WiSE-FT: weight interpolation old ↔ new", loc="left", fontsize=11)
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
        ax.margins(0.15)

    return figure_png(draw, figsize=(5.6, 3.8), integer_x=False)


def _wise_section(wise: dict | None, metric: str, run_dir: Path) -> str:
    if not wise or not wise.get("alphas"):
        return ""
    alphas = list(wise["alphas"])
    new = [(wise.get("new") or [])[i] if i < len(wise.get("new") or []) else None for i in range(len(alphas))]
    old = [(wise.get("old") or [])[i] if i < len(wise.get("old") or []) else None for i in range(len(alphas))]
    body = "".join(
        f'<tr><td class="num">{_e(_fmt(a))}</td><td class="num">{_e(_fmt(n))}</td>'
        f'<td class="num">{_e(_fmt(o))}</td></tr>'
        for a, n, o in zip(alphas, new, old)
    )
    nan = ([math.nan if _finite(v) is None else v for v in new], [math.nan if _finite(v) is None else v for v in old])
    fig = _figure(run_dir, "wise_ft.png", _wise_png(alphas, *nan, metric), "WiSE-FT sweep")
    return (
        '<section><h2>WiSE-FT sweep</h2><p class="muted">Weights θ = (1−α)·θ<sub>before</sub> + α·θ<sub>after</sub> '
        f"of stage {_e(wise.get('stage') or '—')}: α = 0 is the model before the stage, α = 1 after it.</p>"
        f'<div class="plots narrow">{fig}<div><table class="metrics narrow"><thead><tr><th class="num greek">α</th>'
        f'<th class="num">new task</th><th class="num">old tasks</th></tr></thead><tbody>{body}</tbody>'
        "</table></div></div></section>"
    )


def _stages_section(summary: dict) -> str:
    results = summary.get("stage_results") or []
    if not results:
        return '<p class="empty">No stage results were recorded.</p>'
    body = "".join(
        f'<tr><th scope="row">{_e(r.get("stage"))}</th><td class="num">{_e(_fmt(r.get("steps")))}</td>'
        f'<td class="num">{_e(_fmt(r.get("tokens")))}</td><td class="num">{_e(_duration(r.get("wall_seconds")))}</td>'
        f'<td class="num">{_e(_fmt(r.get("final_loss")))}</td><td class="path">{_e(r.get("output") or "—")}</td></tr>'
        for r in results
        if isinstance(r, dict)
    )
    return (
        '<table class="metrics"><thead><tr><th>stage</th><th class="num">steps</th>'
        '<th class="num">tokens</th><th class="num">wall time</th><th class="num">final loss</th>'
        f"<th>output</th></tr></thead><tbody>{body}</tbody></table>"
    )


# --------------------------------------------------------------------------- training loss across stages


def _stage_losses(run_dir: Path, stages: list[str]) -> list[tuple[str, list[float], list[float]]]:
    """(stage, steps, losses) per stage with a readable metrics.jsonl; bad lines are skipped."""
    out = []
    for k, stage in enumerate(stages, 1):
        path = run_dir / "stages" / f"{k}-{stage}" / "metrics.jsonl"
        if not path.is_file():
            continue
        records = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        steps, loss = series(records, "loss")
        if steps:
            out.append((stage, steps, loss))
    return out


def _loss_png(series) -> bytes:
    def draw(ax):
        offset, bounds = 0.0, []
        for k, (stage, steps, loss) in enumerate(series):
            xs = [offset + s for s in steps]
            colour = _COLOURS[k % len(_COLOURS)]
            smooth = len(loss) > 30
            ax.plot(
                xs,
                loss,
                color=colour,
                linewidth=1,
                alpha=0.35 if smooth else 1,
                marker="o" if len(xs) < 3 else None,
                label=None if smooth else stage,
            )
            if smooth:
                ax.plot(xs, ema(loss, max(5, len(loss) // 20)), color=colour, linewidth=1.8, label=stage)
            bounds.append((offset, stage))
            offset = xs[-1]
        for x, _ in bounds[1:]:
            ax.axvline(x, color="#6b7280", linestyle="--", linewidth=1)
        ax.set_xlabel("step (stages end to end)")
        ax.set_ylabel("training loss")
        ax.set_title("Training loss, all stages", loc="left", fontsize=11)
        ax.legend(frameon=False, fontsize=8, title="stage", title_fontsize=8, loc="upper right")

    return figure_png(draw, figsize=(9.0, 3.4))


def _loss_section(run_dir: Path, stages: list[str]) -> str:
    series = _stage_losses(run_dir, [str(s) for s in stages])
    if not series:
        return (
            '<p class="empty">No stage training metrics were found (stages/&lt;k&gt;-&lt;stage&gt;/metrics.jsonl).</p>'
        )
    return f'<div style="margin-top:16px">{_figure(run_dir, "loss.png", _loss_png(series), "training loss")}</div>'


# --------------------------------------------------------------------------- the page


def write_continual_report(run_dir: Path, *, summary: dict, config_text: str) -> Path:
    """Write ``run_dir/report.html`` (self-contained) and ``run_dir/plots/*.png`` for a continual run;
    return the HTML path. Any field of ``summary`` may be None or missing."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary = summary or {}
    matrix = summary.get("matrix") or {}
    stages = summary.get("stages") or [r.get("stage") for r in summary.get("stage_results") or [] if r.get("stage")]
    body = (
        _CSS_EXTRA
        + _header(summary)
        + _headline(summary, matrix)
        + _matrix_section(summary, matrix, run_dir)
        + _perplexity_section(summary.get("general_perplexity"))
        + _wise_section(summary.get("wise_ft"), summary.get("metric") or "score", run_dir)
        + f"<section><h2>Stages</h2>{_stages_section(summary)}{_loss_section(run_dir, stages)}</section>"
        + '<section class="config"><details><summary><b>resolved config</b></summary>'
        f"<pre>{_e(config_text) if config_text else '(not recorded)'}</pre></details></section>"
    )
    path = run_dir / "report.html"
    path.write_text(_page({"name": summary.get("name") or "continual run"}, body), encoding="utf-8")
    return path
