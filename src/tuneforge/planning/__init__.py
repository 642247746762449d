"""`tuneforge plan`: memory and time of a run, planned from its config without loading weights.

- ``build_plan(config, processes=N)`` → :class:`Plan` (``plan.py``): memory by
  part (``memory.py``), time per step and per run (``speed.py``), whether it
  fits this machine's free memory.
- ``print_plan(console, plan)``: the table `tuneforge plan` prints.
- ``plan_warning(config, facts)``: one line for `validate` when the plan does not fit.
- ``planned_vs_measured(plan_summary, train_summary)``: what summary.json records.

The planner never makes a run or a check fail: the ``*_safe`` helpers turn any
exception into a warning.
"""

from __future__ import annotations

from .plan import Plan, PlanError, build_plan, free_memory

__all__ = [
    "Plan",
    "PlanError",
    "build_plan",
    "free_memory",
    "plan_warning",
    "planned_vs_measured",
    "print_plan",
    "safe_plan",
]


def _fmt_bytes(n: float) -> str:
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 or n == 0 else f"{n / 2**10:.1f} KiB"


def _fmt_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.2f} s" if s < 10 else f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def print_plan(console, plan: Plan) -> None:
    """The memory table, then time and fit, on a rich console."""
    from rich.table import Table

    table = Table(
        title=f"plan: {plan.method} · {plan.model} · {plan.device} {plan.precision}"
        + (f" · {plan.processes} processes" if plan.processes > 1 else "")
    )
    table.add_column("memory (per process)")
    table.add_column("size", justify="right")
    table.add_column("held")
    table.add_column("what")
    for part in plan.parts:
        table.add_row(part.name, _fmt_bytes(part.bytes), part.phase, part.note)
    if plan.runtime_bytes:
        table.add_row(
            "runtime", _fmt_bytes(plan.runtime_bytes), "static", "Python, torch, libraries, tokenizer, data (now)"
        )
    several = plan.processes > 1 and plan.device == "cpu"
    total = f"; × {plan.processes} processes = {_fmt_bytes(plan.machine_bytes)}" if several else ""
    table.add_row(
        "[bold]peak[/]",
        f"[bold]{_fmt_bytes(plan.process_bytes)}[/]",
        "",
        "runtime + static parts + the largest of forward / backward" + total,
    )
    console.print(table)
    s = plan.step
    console.print(f"data: {s.source}", highlight=False)
    console.print(
        f"time: {_fmt_seconds(plan.step_seconds)} per step × {s.steps:,} steps = "
        f"[bold]{_fmt_seconds(plan.run_seconds)}[/] ({s.tokens_per_step * plan.processes:,.0f} tokens per step, "
        f"{plan.flops_per_step / 1e12:.2f} TFLOP per process; matmul peak {plan.peak_flops / 1e9:.0f} GFLOP/s "
        f"({plan.peak_how}) × utilisation {plan.util:.2f} ({plan.util_source}))",
        highlight=False,
    )
    if plan.free_bytes is None:
        console.print("fit: free memory unknown", highlight=False)
    else:
        verdict = "[green]fits[/]" if plan.fits else "[bold red]does not fit[/]"
        console.print(
            f"fit: {verdict}: {_fmt_bytes(plan.machine_bytes)} needed, {_fmt_bytes(plan.free_bytes)} "
            f"free on the {'GPU' if plan.device == 'cuda' else 'machine'}",
            highlight=False,
        )
    for note in plan.notes:
        console.print(f"[yellow]! {note}[/]", highlight=False)


def safe_plan(config, **kwargs) -> tuple[Plan | None, str | None]:
    """(plan, None), or (None, the reason as one line): planning never raises."""
    try:
        return build_plan(config, **kwargs), None
    except Exception as exc:
        return (None, f"resource plan unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")


def plan_warning(config, facts: dict | None = None) -> str | None:
    """One warning line when the plan says the run needs more memory than is free (None otherwise)."""
    plan, problem = safe_plan(config, facts=facts or {})
    if plan is None:
        return problem
    if plan.fits is False:
        return (
            f"plan: this run needs about {_fmt_bytes(plan.machine_bytes)} and {_fmt_bytes(plan.free_bytes)} is "
            f"free; lower training.batch_size or data.max_length, turn on training.gradient_checkpointing, or "
            f"use an adapter (`tuneforge plan` shows the parts)"
        )
    return None


def planned_vs_measured(planned: dict, train: dict) -> dict:
    """summary.json's ``plan``: the plan, what the run measured, and the relative errors."""
    steps = max(int(train.get("steps") or 0), 1)
    measured = {
        "peak_memory_mb": train.get("train_peak_memory_mb", train.get("peak_memory_mb")),
        "step_seconds": round(float(train.get("wall_seconds") or 0.0) / steps, 3),
        "tokens_per_second": train.get("tokens_per_second"),
        "wall_seconds": train.get("wall_seconds"),
        "steps": train.get("steps"),
    }

    def rel(p, m):
        return round((p - m) / m, 3) if p is not None and m else None

    error = {
        "peak_memory": rel(planned.get("peak_memory_mb"), measured["peak_memory_mb"]),
        "step_seconds": rel(planned.get("step_seconds"), measured["step_seconds"]),
    }
    return {"planned": planned, "measured": measured, "error": error}
