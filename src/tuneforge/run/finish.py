"""The steps after training: save the output, score it, write summary.json and the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..interface import EvalContext, MethodData
from ..training.engine import console
from .folder import save_json
from .setup import RunContext, model_dtype
from .training import TrainingParts


def save_output(run: RunContext, parts: TrainingParts, adapted):
    """(trained model, output folder): ``adapter/`` for adapters peft saves, else ``model/``.

    A sharded run gathers its weights first (a collective: every process takes part)."""
    from ..training.checkpoint import gather_full_state, is_sharded

    acc = run.accelerator
    acc.wait_for_everyone()
    trained = acc.unwrap_model(parts.loss_model).model
    output_dir = run.run_dir / ("adapter" if adapted is not None and adapted.saves_adapter else "model")
    full_state = None
    if is_sharded(acc):
        full_state = {k.removeprefix("model."): v for k, v in gather_full_state(acc, parts.loss_model).items()}
    if run.main:
        run.method.save(run.config, trained, output_dir, run.tokenizer, state_dict=full_state)
        if adapted is not None:
            adapted.save(output_dir)
    return trained, output_dir


def keep_best(run: RunContext, parts: TrainingParts, adapted, best) -> dict | None:
    """Early stopping's end: the last weights saved as ``<output>-last/``, then the best ones loaded back
    so that ``save_output`` writes them as the run's output. None when early stopping was off."""
    if best is None or best.best_step is None:
        return None
    acc = run.accelerator
    last_dir = run.run_dir / ("adapter-last" if adapted is not None and adapted.saves_adapter else "model-last")
    if run.main:
        run.method.save(run.config, acc.unwrap_model(parts.loss_model).model, last_dir, run.tokenizer)
        if adapted is not None:
            adapted.save(last_dir)
    best.restore(acc.unwrap_model(parts.loss_model))
    console.print(
        f"Early stopping: best {best.metric} {best.best_value:.4g} at step {best.best_step}"
        + (f", stopped at step {best.stopped_at}" if best.stopped_at else "")
        + f"; the output holds those weights, {last_dir.name}/ the last ones"
    )
    return {**best.summary(), "last_output": str(last_dir)}


def evaluate_after(run: RunContext, parts: TrainingParts, data: MethodData, trained, output_dir: Path) -> dict:
    """The "after" scores. A sharded model is spread over the processes: the held-out loss runs on the
    sharded module everywhere, the rest on main with the saved (standard, unsharded) output."""
    from ..models.load import is_quantized
    from ..training.checkpoint import is_sharded

    acc = run.accelerator
    ctx = EvalContext(run.config, run.tokenizer, data, acc, "after")
    if not is_sharded(acc):
        return run.method.evaluate(trained, ctx)
    acc.wait_for_everyone()
    ctx.loss_module = parts.loss_model
    reloaded = run.method.load_output(run.config, output_dir, dtype=model_dtype(run)) if run.main else None
    if reloaded is not None and not is_quantized(reloaded):
        reloaded = reloaded.to(acc.device)
    return run.method.evaluate(reloaded, ctx)


def summarize(
    run: RunContext, *, data, parts, result, before, after, output_dir, plan, train_peak_mb, early=None
) -> dict:
    """summary.json: before / after metrics, what training did and cost, the run, and the plan vs measured."""
    from ..training.engine import peak_memory_mb

    config, acc = run.config, run.accelerator
    summary = {
        "before": before["metrics"],
        "after": after["metrics"],
        "train": {
            "tokens_per_second": round(result.tokens / max(result.wall_seconds, 1e-9), 2),
            "tokens": result.tokens,
            run.method.count_name: result.count,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "trainable_parameters": parts.trainable,
            "total_parameters": parts.total,
            "trainable_percent": round(100 * parts.trainable / max(parts.total, 1), 4),
            **parts.state_bytes,
            "peak_memory_mb": round(peak_memory_mb(acc.device), 1),
            "wall_seconds": round(result.wall_seconds, 2),
            "run_wall_seconds": round(time.perf_counter() - run.started, 2),
            "processes": acc.num_processes,
            "device": str(acc.device),
        },
        "data": {
            k: v for k, v in data.facts.items() if isinstance(v, (int, float, str, bool)) or k == "sources"
        },  # sources: a mixture's shares per source (data/mixture.py)
        "run": {
            "name": run.run_dir.name,
            "method": config.method,
            "model": config.model.name,
            "adapter": config.adapter.type if config.adapter else None,
            "output": str(output_dir),
            "quantize": config.model.quantize,
        },
        "precision": precision_entry(acc),
    }
    if early is not None:
        summary["early_stopping"] = early
    if parts.watch.warning:
        summary["train"]["divergence_warning"] = parts.watch.warning
    if plan is not None:
        summary["plan"] = plan_summary(plan, summary["train"], train_peak_mb)
    summary.update(report_extras(before, after))
    return summary


def write_outputs(run: RunContext, summary: dict, before: dict, after: dict, output_dir: Path) -> None:
    """summary.json, report.html and the before / after table (main process only)."""
    if not run.main:
        return
    from ..config import dump_config
    from ..eval.report import print_before_after, write_report

    save_json(run.run_dir / "summary.json", summary)
    limit = getattr(run.config.eval, "samples_in_report", 6) if run.config.eval else 0  # not every eval has it
    metrics_path = run.run_dir / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    report_path = write_report(
        run.run_dir,
        summary=summary,
        metrics=metrics,
        samples=paired_samples(before, after, limit),
        config_text=dump_config(run.config),
    )
    print_before_after(console, summary)
    console.print(f"Output: {output_dir}\nReport: {report_path}")


def precision_entry(accelerator) -> dict:
    """What training.mixed_precision resolved to (engine.make_accelerator) and why."""
    precision = getattr(accelerator, "precision", None)  # an accelerate.Accelerator made elsewhere has none
    choice = precision.choice if precision is not None else str(accelerator.mixed_precision)
    return {
        "mixed_precision": choice,
        "label": precision.label if precision is not None else choice,
        "reason": precision.reason if precision is not None else "",
    }


def plan_summary(plan, train: dict, train_peak_mb: float) -> dict:
    """summary.json's ``plan``: planned, measured (peak memory up to the end of training), relative error."""
    made, problem = plan
    if made is None:
        return {"planned": None, "measured": None, "error": None, "problem": problem}
    try:
        from ..planning import planned_vs_measured

        return planned_vs_measured(made.summary(), {**train, "train_peak_memory_mb": train_peak_mb})
    except Exception as exc:
        return {"planned": None, "measured": None, "error": None, "problem": f"{type(exc).__name__}: {exc}"}


def report_extras(before: dict, after: dict) -> dict:
    """What evaluations returned beyond metrics and samples, shaped for summary.json and the report."""
    extras: dict = {}
    sides = (("before", before), ("after", after))
    field_errors = {k: v["field_errors"] for k, v in sides if v.get("field_errors")}
    if field_errors:
        extras["field_errors"] = field_errors
    baselines = {**before.get("baselines", {}), **after.get("baselines", {})}
    if baselines:
        extras["baselines"] = baselines
    matrices: dict = {}
    for side, result in sides:
        for title, matrix in (result.get("matrices") or {}).items():
            matrices.setdefault(title, {"labels": matrix["labels"]})[side] = matrix["values"]
    if matrices:
        extras["matrices"] = matrices
    curves: dict = {}
    for side, result in sides:
        for title, curve in (result.get("curves") or {}).items():
            entry = curves.setdefault(title, {k: v for k, v in curve.items() if k != "y"})
            entry[side] = curve["y"]
    if curves:
        extras["curves"] = curves
    tables = {
        f"{title} ({side})": table for side, result in sides for title, table in (result.get("tables") or {}).items()
    }
    if tables:
        extras["tables"] = tables
    return extras


def paired_samples(before: dict, after: dict, limit: int) -> list[dict]:
    """The report's samples: each held-out prompt with its answer before and after."""
    pairs = list(zip(before.get("samples", [])[:limit], after.get("samples", [])[:limit]))
    if not pairs:  # no "before" (eval.before: false, or a resumed run without one)
        pairs = [({"prediction": "", "scores": {}}, a) for a in after.get("samples", [])[:limit]]
    return [
        {
            "prompt": a["prompt"],
            "reference": a["reference"],
            "before": b["prediction"],
            "after": a["prediction"],
            "scores": {"before": b["scores"], "after": a["scores"]},
        }
        for b, a in pairs
    ]
