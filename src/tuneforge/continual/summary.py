"""The end of a continual run: the R matrix and its metrics in summary.json, matrix.csv, report.html."""

from __future__ import annotations

import time
from pathlib import Path

from ..run.finish import precision_entry
from ..run.folder import RunResult, save_json
from ..training.engine import console
from .evaluation import write_matrix_csv


def finish(session) -> RunResult:
    """The end of a continual run (``session``: the ``session.ContinualRun``)."""
    from ..config import dump_config
    from ..eval.report import lower_is_better
    from .metrics import continual_metrics

    names = session.tasks.names
    labels = ["base", "joint"] if session.strategy == "joint" else ["base", *names]
    values = [session.state["rows"][label]["scores"] for label in labels]
    ppl = [session.state["rows"][label]["general_perplexity"] for label in labels]
    if session.strategy == "joint":
        acc = sum(values[-1]) / len(values[-1])
        cm = {"acc": acc, "bwt": None, "fwt": None, "forgetting": {}, "mean_forgetting": None}
    else:
        m = continual_metrics(values, lower_is_better=lower_is_better(session.metric))
        cm = {
            "acc": m.acc,
            "bwt": m.bwt,
            "fwt": m.fwt,
            "forgetting": dict(zip(names, m.forgetting)),
            "mean_forgetting": m.mean_forgetting,
        }
    extra = session.merged_rows() if session.stage_adapters is not None else {}
    output: dict[str, str] | str
    if session.stage_adapters is not None:
        output = {name: str(session.stage_dir(k) / "output") for k, name in enumerate(names)}
    else:
        output = str(session.stage_dir(len(labels) - 2) / "output")
    summary = {
        "kind": "continual",
        "name": session.run_dir.name,
        "method": session.config.method,
        "strategy": session.strategy,
        "strategy_settings": strategy_settings(session.settings, session.strategy),
        "model": session.config.model.name,
        "adapter": session.config.adapter.type if session.config.adapter else None,
        "stages": names,
        "metric": session.metric,
        "matrix": {"rows": labels, "columns": names, "values": values},
        "general_perplexity": {"rows": labels, "values": ppl} if any(p is not None for p in ppl) else None,
        "continual_metrics": cm,
        "stage_results": session.state["stage_results"],
        "wise_ft": session.state.get("wise_ft"),
        "output": output,
        "task_metrics": {label: session.state["rows"][label]["metrics"] for label in labels},
        "fisher": session.state.get("fisher"),
        "wall_seconds": round(session.elapsed(), 2),
        "precision": precision_entry(session.accelerator),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if extra:
        summary["extra_rows"] = extra
        summary["merged_outputs"] = session.state.get("merged_outputs")
    save_json(session.run_dir / "summary.json", summary)
    write_matrix_csv(session.run_dir / "matrix.csv", summary)
    report = _write_report(session.run_dir, summary, dump_config(session.config))
    _print_summary(summary)
    console.print(f"Summary: {session.run_dir / 'summary.json'}\nReport: {report}")
    return RunResult(
        run_dir=session.run_dir,
        output_dir=Path(output) if isinstance(output, str) else session.run_dir,
        summary=summary,
        model=session.model,
    )


def strategy_settings(settings, strategy: str) -> dict:
    part = {"replay": "replay", "l2": "l2", "ewc": "ewc", "adapter": "adapter"}.get(strategy)
    chosen: dict = getattr(settings, part).model_dump() if part else {}
    if settings.wise_ft.alphas:
        chosen["wise_ft"] = settings.wise_ft.model_dump()
    return chosen


def _write_report(run_dir: Path, summary: dict, config_text: str) -> Path | None:
    try:
        from ..eval.continual_report import write_continual_report
    except ImportError:  # pragma: no cover - the report module ships with this package
        return None
    return write_continual_report(run_dir, summary=summary, config_text=config_text)


def _print_summary(summary: dict) -> None:
    from rich.table import Table

    from ..eval.report import lower_is_better

    matrix = summary["matrix"]
    better = "lower" if lower_is_better(summary["metric"]) else "higher"
    table = Table(title=f"{summary['metric']} ({better} is better) on each task (columns) after each stage (rows)")
    table.add_column("after")
    for name in matrix["columns"]:
        table.add_column(name, justify="right")
    ppl = (summary.get("general_perplexity") or {}).get("values")
    if ppl:
        table.add_column("general ppl", justify="right")
    for k, label in enumerate(matrix["rows"]):
        cells = [f"{v:.3f}" for v in matrix["values"][k]]
        table.add_row(label, *cells, *([f"{ppl[k]:.2f}"] if ppl else []))
    for label, row in (summary.get("extra_rows") or {}).items():
        table.add_row(label, *[f"{v:.3f}" for v in row], *([""] if ppl else []))
    console.print(table)
    cm = summary["continual_metrics"]
    parts = [f"ACC {cm['acc']:.3f}"] + [f"{k.upper()} {cm[k]:+.3f}" for k in ("bwt", "fwt") if cm[k] is not None]
    console.print("  ".join(parts))
