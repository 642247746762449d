"""The run report's figures: PNG bytes drawn with matplotlib (``report.py`` embeds and saves them).

Figure + Agg canvas directly, not pyplot: no global state, no GUI backend, safe in a training process
that may have picked another backend. ``continual_report.py`` draws its figures with the same frame.
"""

from __future__ import annotations

import io


def number(value) -> float | None:
    """``value`` as a float when it is a number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def figure_png(draw, *, figsize=(6.4, 3.4), integer_x: bool = True) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=figsize, dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    draw(ax)
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        ax.grid(True, color="#e5e7eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def series(metrics: list[dict], key: str) -> tuple[list[float], list[float]]:
    points = [
        (r["step"], r[key]) for r in metrics if number(r.get("step")) is not None and number(r.get(key)) is not None
    ]
    points.sort()
    return [p[0] for p in points], [p[1] for p in points]


def ema(values: list[float], span: int) -> list[float]:
    alpha, out, avg = 2 / (span + 1), [], values[0]
    for v in values:
        avg = alpha * v + (1 - alpha) * avg
        out.append(avg)
    return out


def sci(value: float, _pos=None) -> str:
    """Compact scientific tick label: 2e-4, 1.75e-4, 0."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def make_plots(metrics: list[dict], early_stopping: dict | None = None) -> dict[str, bytes]:
    """PNG bytes by file name: ``loss.png`` and ``lr.png`` when the data has them; with early stopping, the
    best step is marked and a metric other than the held-out loss gets its own ``early_stopping.png``."""
    plots: dict[str, bytes] = {}
    best_step = (early_stopping or {}).get("best_step")

    def mark_best(ax):
        if best_step is not None:
            ax.axvline(best_step, color="#7c3aed", linestyle="--", linewidth=1.2, label=f"best (step {best_step})")

    steps, loss = series(metrics, "loss")
    eval_steps, eval_loss = series(metrics, "eval_loss")
    if steps or eval_steps:

        def draw_loss(ax):
            if steps:
                smooth = len(loss) > 30  # raw per-step loss is noisy; show the trend over it
                ax.plot(
                    steps,
                    loss,
                    color="#93c5fd" if smooth else "#2563eb",
                    linewidth=1,
                    marker="o" if len(steps) < 3 else None,
                    label="training loss",
                )
                if smooth:
                    ax.plot(
                        steps,
                        ema(loss, max(5, len(loss) // 20)),
                        color="#2563eb",
                        linewidth=1.8,
                        label="training loss (smoothed)",
                    )
            if eval_steps:
                ax.plot(eval_steps, eval_loss, color="#ea580c", marker="o", linewidth=1.5, label="held-out loss")
            for name in sorted({k for m in metrics for k in m if k.startswith("eval_loss/")}):
                xs, ys = series(metrics, name)  # a mixture's sources, each its own held-out curve
                ax.plot(xs, ys, linestyle="--", marker=".", linewidth=1.2, label=f"held-out: {name[10:]}")
            mark_best(ax)
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            ax.set_title("Loss", loc="left", fontsize=11)
            ax.legend(frameon=False, fontsize=8)

        plots["loss.png"] = figure_png(draw_loss)
    tracked = (early_stopping or {}).get("metric")
    if tracked and tracked != "eval_loss" and early_stopping and early_stopping.get("evaluations"):
        points = early_stopping["evaluations"]

        def draw_tracked(ax):
            ax.plot([p[0] for p in points], [p[1] for p in points], color="#ea580c", marker="o", label=tracked)
            mark_best(ax)
            ax.set_xlabel("step")
            ax.set_ylabel(tracked)
            ax.set_title(f"Held-out {tracked} (early stopping)", loc="left", fontsize=11)
            ax.legend(frameon=False, fontsize=8)

        plots["early_stopping.png"] = figure_png(draw_tracked)
    lr_steps, lr = series(metrics, "lr")
    if lr_steps:
        from matplotlib.ticker import FuncFormatter

        def draw_lr(ax):
            ax.plot(lr_steps, lr, color="#16a34a", linewidth=1.6, marker="o" if len(lr_steps) < 3 else None)
            ax.set_xlabel("step")
            ax.set_ylabel("learning rate")
            ax.set_title("Learning rate", loc="left", fontsize=11)
            # Label each tick (2.0e-04) instead of matplotlib's offset text, which
            # collides with the title.
            ax.yaxis.set_major_formatter(FuncFormatter(sci))

        plots["lr.png"] = figure_png(draw_lr)
    return plots


def matrix_png(title: str, labels: list[str], values: list[list[float]]) -> bytes:
    """A heatmap with the count in each cell (rows: true label, columns: predicted)."""

    def draw(ax):
        import numpy as np

        data = np.array(values, dtype=float)
        ax.imshow(data, cmap="Blues", vmin=0, vmax=max(float(data.max()), 1.0))
        ticks = range(len(labels))
        ax.set_xticks(ticks, labels=labels, rotation=30 if max(map(len, labels)) > 6 else 0, ha="right")
        ax.set_yticks(ticks, labels=labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, loc="left", fontsize=11)
        top = data.max() or 1
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{data[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color="white" if data[i, j] > 0.6 * top else "#1f2937",
                )
        ax.grid(False)

    size = min(3.0 + 0.35 * len(labels), 7.0)
    return figure_png(draw, figsize=(size, size * 0.85), integer_x=False)


def curve_png(title: str, curve: dict) -> bytes:
    """Before / after over the same x (``curve["x"]``, e.g. recall@k against k), on a log x axis."""

    def draw(ax):
        for side, colour in (("before", "#94a3b8"), ("after", "#2563eb")):
            if side in curve:
                ax.plot(curve["x"], curve[side], marker="o", color=colour, linewidth=1.8, label=side)
        ax.set_xscale("log")  # k = 1, 2, 3, 5, 10, 20: the small k matter most
        ax.set_xticks(curve["x"], labels=[str(x) for x in curve["x"]])
        ax.minorticks_off()
        ax.set_xlabel(curve.get("xlabel", ""))
        ax.set_ylabel(curve.get("ylabel", ""))
        ax.set_ylim(0, 1.02 if max(curve.get("after", [0]) + curve.get("before", [0])) <= 1 else None)
        ax.set_title(title, loc="left", fontsize=11)
        ax.legend(frameon=False, fontsize=8)

    return figure_png(draw, figsize=(5.2, 3.4), integer_x=False)
