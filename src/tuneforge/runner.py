"""One run, start to finish: checks → data → model → eval before → train → save → eval after → report.

Every method goes through this one skeleton and it names none of them: the
method object from ``registry.get_method(config.method)`` (interface in
``interface.py``) supplies the data, the model, the loss, the collate
function, the evaluation and the output format; the loop is
``training/loop.py``. Only the main process writes the run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import dump_config
from .eval.report import print_before_after, write_report
from .training.engine import console


class RunFolderExists(Exception):
    pass


@dataclass
class RunResult:
    run_dir: Path
    output_dir: Path
    summary: dict
    model: object = None  # the trained model (plain or peft), for callers in the same process


def resolve_run_dir(config, config_path: str | Path | None, *, resume: bool) -> Path:
    name = config.name or (Path(config_path).stem if config_path else config.method)
    run_dir = Path(config.output_dir) / name
    if resume:
        from .training.checkpoint import latest_checkpoint

        if not run_dir.exists():
            raise RunFolderExists(f"--resume: no run folder at {run_dir} to continue")
        if latest_checkpoint(run_dir) is None:
            raise RunFolderExists(
                f"--resume: {run_dir} has no checkpoint to continue from; start a new run with a new name, "
                f"e.g. `name={name}-2`, or delete the folder yourself"
            )
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderExists(
            f"{run_dir} already holds an earlier run and is never overwritten. Continue it with --resume, "
            f"or start a new run with a new name, e.g. `name={name}-2` on the command line."
        )
    return run_dir


def train_from_config(config, *, config_path=None, resume: bool = False, run_dir: Path | None = None) -> RunResult:
    from functools import partial

    from .adapters import attach_adapter
    from .checks import check_config
    from .interface import EvalContext
    from .models.load import (
        count_parameters,
        is_quantized,
        load_tokenizer,
        resolve_dtype,
        resolve_model,
        training_state_bytes,
    )
    from .registry import get_method
    from .training.checkpoint import (
        CheckpointMismatch,
        gather_full_state,
        is_sharded,
        latest_checkpoint,
        load_checkpoint,
    )
    from .training.divergence import DivergenceWatch, divergence_hint
    from .training.engine import make_accelerator, peak_memory_mb, total_steps
    from .training.loop import LoopSettings, heldout_mean_loss, train_loop
    from .training.optim import build_optimizer, build_scheduler

    method = get_method(config.method)
    t_start = time.perf_counter()
    tcfg = config.training
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    # Every process checks the folder before any writes: the accelerator's process-group
    # rendezvous below cannot complete until all of them got past this line.
    run_dir = run_dir or resolve_run_dir(config, config_path, resume=resume)
    accelerator = make_accelerator(
        mixed_precision=tcfg.mixed_precision,
        trackers=tcfg.trackers,
        project_dir=run_dir,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
    )
    main = accelerator.is_main_process

    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    check_config(config, tokenizer=tokenizer, method=method).raise_if_errors()
    data = method.load_data(config, tokenizer)
    collate = partial(method.collate, tokenizer=tokenizer)

    # The run folder appears only once config, data and template passed their checks,
    # so a rejected config never leaves a folder that blocks the corrected rerun.
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run keeps the config it started with; what it resumed with goes beside it.
        _save_text(run_dir / ("config.resumed.yaml" if resume else "config.yaml"), dump_config(config))
    accelerator.wait_for_everyone()

    from accelerate.utils import set_seed

    set_seed(tcfg.seed)
    with torch.random.fork_rng(devices=[]):  # the plan's timed matmul must not move the run's random state
        plan = _plan_run(config, data, accelerator) if main else None  # before any weight: runtime = this process
    dtype = resolve_dtype(config.model.dtype, accelerator.device)
    model = method.build_model(config, data, dtype=dtype)
    if not is_quantized(model):  # bitsandbytes places quantized weights itself; .to() would refuse
        model.to(accelerator.device)

    before = _load_json(run_dir / "before.json") if resume else None
    if before is None:
        if config.eval is not None and not getattr(config.eval, "before", True):
            before = {"metrics": {}, "samples": []}  # eval.before: false — nothing to compare against
        else:
            before = method.evaluate(model, EvalContext(config, tokenizer, data, accelerator, "before"))
        if main:
            _save_json(run_dir / "before.json", before)

    world = accelerator.num_processes
    global_batch = tcfg.batch_size * tcfg.gradient_accumulation_steps * world
    rows = data.train
    own_steps = getattr(method, "total_steps", None)  # optional hook: a method whose step is not a batch (PPO)
    steps = own_steps(config, data) if own_steps else total_steps(len(rows), global_batch, tcfg.epochs, tcfg.max_steps)

    adapted = None
    if config.adapter is not None:
        # AdaLoRA's rank schedule needs the step count; prompt tuning's text init the tokenizer.
        adapted = attach_adapter(
            model,
            config.adapter,
            task_type=method.peft_task_type,
            total_steps=steps,
            tokenizer_path=resolve_model(config.model.name),
            gradient_checkpointing=tcfg.gradient_checkpointing,
        )
        model = adapted.model
    adapter_model = adapted.saver if adapted is not None else None
    if tcfg.gradient_checkpointing:
        _enable_activation_checkpointing(model)
    trainable, total = count_parameters(model)
    state_bytes = training_state_bytes(model)
    chance = method.chance_loss(config, model, data)

    loss_model = method.loss_module(config, model, data)
    optimizer = build_optimizer(
        loss_model,
        learning_rate=tcfg.learning_rate,
        weight_decay=tcfg.weight_decay,
        betas=tuple(tcfg.adam_betas),
        eps=tcfg.adam_epsilon,
    )
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else int(tcfg.warmup_ratio * steps)
    scheduler = build_scheduler(optimizer, kind=tcfg.scheduler, warmup_steps=warmup, total_steps=steps)
    if is_sharded(accelerator):  # FSDP shards each process's own weights: start them all from the main one's
        from .distributed import broadcast_from_main

        broadcast_from_main(accelerator, loss_model)
    loss_model, optimizer = accelerator.prepare(loss_model, optimizer)

    start_state: dict = {}
    if resume and config.adapter is not None and config.adapter.type == "adalora":
        raise CheckpointMismatch(
            "adapter.type adalora: its rank allocator's importance statistics and rank "
            "pattern are not in the checkpoints, so a resumed run would not continue the "
            "same schedule; start the run again (without --resume)"
        )
    if resume:
        ckpt = latest_checkpoint(run_dir)
        sharded_state = is_sharded(accelerator) and (ckpt / "accelerate_state").exists()
        if sharded_state:
            accelerator.load_state(str(ckpt / "accelerate_state"))
        start_state = load_checkpoint(
            ckpt,
            model=accelerator.unwrap_model(loss_model),
            optimizer=optimizer,
            scheduler=scheduler,
            restore_weights=not sharded_state,
        )
        console.print(f"Resuming from {ckpt} (step {start_state['step']}/{steps})")
        if main:  # after a crash the log may run past the checkpoint: those steps are redone
            _truncate_metrics(run_dir / "metrics.jsonl", start_state["step"])
    if tcfg.trackers:
        accelerator.init_trackers(run_dir.name, config=config.model_dump(mode="json"))

    def periodic_eval():
        loss = heldout_mean_loss(loss_model, data.eval, collate, tcfg.batch_size, accelerator)
        return method.periodic_metrics(loss)

    settings = LoopSettings(
        batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        total_steps=steps,
        seed=tcfg.seed,
        max_grad_norm=tcfg.max_grad_norm,
        save_every=tcfg.save_every,
        keep_checkpoints=tcfg.keep_checkpoints,
        log_every=tcfg.log_every,
        eval_every=tcfg.eval_every,
    )
    watch = DivergenceWatch(
        chance_loss=chance,
        mode=tcfg.on_divergence,
        console=console if main else None,
        hint=divergence_hint(tcfg.learning_rate, tcfg.max_grad_norm, config.adapter is None),
    )
    step_size = "" if own_steps else f" of {global_batch} rows"  # a method's own step (PPO: a rollout) says itself
    console.print(
        f"[bold]{config.method}[/] on {len(rows)} rows ({sum(len(r.input_ids) for r in rows)} tokens), "
        f"{steps} steps{step_size}; trainable {trainable:,} / {total:,} parameters "
        f"({100 * trainable / max(total, 1):.4f}%)"
    )
    own_loop = getattr(method, "run_training", None)  # optional hook: a loop of its own, same arguments + 3
    loop = partial(own_loop, config=config, data=data, tokenizer=tokenizer) if own_loop else train_loop
    result = loop(
        loss_model=loss_model,
        optimizer=optimizer,
        scheduler=scheduler,
        accelerator=accelerator,
        rows=rows,
        collate=collate,
        settings=settings,
        run_dir=run_dir,
        start_state=start_state,
        adapter_model=adapter_model,
        eval_fn=periodic_eval if data.eval else None,
        watch=watch,
        arrange=data.arrange,
        after_step=adapted.after_optimizer_step if adapted else None,
    )

    train_peak_mb = round(peak_memory_mb(accelerator.device), 1)  # before the "after" evaluation
    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(loss_model).model
    output_dir = run_dir / ("adapter" if adapted is not None and adapted.saves_adapter else "model")
    full_state = None
    if is_sharded(accelerator):  # gather the sharded weights (collective) into one standard folder
        full_state = {k.removeprefix("model."): v for k, v in gather_full_state(accelerator, loss_model).items()}
    if main:
        method.save(config, trained, output_dir, tokenizer, state_dict=full_state)
        if adapted is not None:
            adapted.save(output_dir)
    after_ctx = EvalContext(config, tokenizer, data, accelerator, "after")
    if is_sharded(accelerator):
        # The trained model is sharded across processes: the held-out loss runs on the sharded
        # module everywhere, the rest on main with the saved (standard, unsharded) output.
        accelerator.wait_for_everyone()
        after_ctx.loss_module = loss_model
        reloaded = method.load_output(config, output_dir, dtype=dtype) if main else None
        if reloaded is not None and not is_quantized(reloaded):
            reloaded = reloaded.to(accelerator.device)
        after = method.evaluate(reloaded, after_ctx)
    else:
        after = method.evaluate(trained, after_ctx)
    if tcfg.trackers:
        accelerator.end_training()

    summary = {
        "before": before["metrics"],
        "after": after["metrics"],
        "train": {
            "tokens_per_second": round(result.tokens / max(result.wall_seconds, 1e-9), 2),
            "tokens": result.tokens,
            method.count_name: result.count,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "trainable_percent": round(100 * trainable / max(total, 1), 4),
            **state_bytes,
            "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
            "wall_seconds": round(result.wall_seconds, 2),
            "run_wall_seconds": round(time.perf_counter() - t_start, 2),
            "processes": world,
            "device": str(accelerator.device),
        },
        "data": {k: v for k, v in data.facts.items() if isinstance(v, (int, float, str, bool))},
        "run": {
            "name": run_dir.name,
            "method": config.method,
            "model": config.model.name,
            "adapter": config.adapter.type if config.adapter else None,
            "output": str(output_dir),
            "quantize": config.model.quantize,
        },
        "precision": _precision_entry(accelerator),
    }
    if watch.warning:
        summary["train"]["divergence_warning"] = watch.warning
    if plan is not None:
        summary["plan"] = _plan_summary(plan, summary["train"], train_peak_mb)
    summary.update(_report_extras(before, after))
    if main:
        _save_json(run_dir / "summary.json", summary)
        limit = getattr(config.eval, "samples_in_report", 6) if config.eval else 0
        samples = _paired_samples(before, after, limit)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        report_path = write_report(
            run_dir, summary=summary, metrics=metrics, samples=samples, config_text=dump_config(config)
        )
        print_before_after(console, summary)
        console.print(f"Output: {output_dir}\nReport: {report_path}")
    # No process leaves while another still uses the process group (the main one generates and writes the
    # report meanwhile): a rank that exited early was seen to abort in gloo's teardown under FSDP2 on CPU.
    accelerator.wait_for_everyone()
    return RunResult(run_dir=run_dir, output_dir=output_dir, summary=summary, model=trained)


def _precision_entry(accelerator) -> dict:
    """What training.mixed_precision resolved to (engine.make_accelerator) and why."""
    precision = getattr(accelerator, "precision", None)
    choice = precision.choice if precision is not None else str(accelerator.mixed_precision)
    return {
        "mixed_precision": choice,
        "label": precision.label if precision is not None else choice,
        "reason": precision.reason if precision is not None else "",
    }


def _plan_run(config, data, accelerator):
    """This run's resource plan (planning/) as (Plan or None, problem or None); never raises."""
    from .planning import safe_plan

    choice = getattr(getattr(accelerator, "precision", None), "choice", None)
    plan, problem = safe_plan(
        config,
        data=data,
        processes=accelerator.num_processes,
        device=accelerator.device.type,
        precision={"no": "fp32"}.get(choice, choice),
    )
    if problem:
        console.print(f"[yellow]! {problem}[/]", highlight=False)
    elif plan.fits is False:
        console.print(
            f"[yellow]! plan: about {plan.machine_bytes / 2**30:.1f} GiB needed, "
            f"{plan.free_bytes / 2**30:.1f} GiB free: this run may run out of memory[/]",
            highlight=False,
        )
    return plan, problem


def _plan_summary(plan, train: dict, train_peak_mb: float) -> dict:
    """summary.json's ``plan``: planned, measured (peak memory up to the end of training), relative error."""
    made, problem = plan
    if made is None:
        return {"planned": None, "measured": None, "error": None, "problem": problem}
    try:
        from .planning import planned_vs_measured

        return planned_vs_measured(made.summary(), {**train, "train_peak_memory_mb": train_peak_mb})
    except Exception as exc:
        return {"planned": None, "measured": None, "error": None, "problem": f"{type(exc).__name__}: {exc}"}


def _enable_activation_checkpointing(model) -> None:
    """transformers 5 renamed gradient checkpointing to activation checkpointing; use whichever exists."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _report_extras(before: dict, after: dict) -> dict:
    """What evaluations returned beyond metrics and samples, shaped for summary.json and the report."""
    extras: dict = {}
    field_errors = {k: v["field_errors"] for k, v in (("before", before), ("after", after)) if v.get("field_errors")}
    if field_errors:
        extras["field_errors"] = field_errors
    baselines = {**before.get("baselines", {}), **after.get("baselines", {})}
    if baselines:
        extras["baselines"] = baselines
    matrices: dict = {}
    for side, result in (("before", before), ("after", after)):
        for title, matrix in (result.get("matrices") or {}).items():
            matrices.setdefault(title, {"labels": matrix["labels"]})[side] = matrix["values"]
    if matrices:
        extras["matrices"] = matrices
    curves: dict = {}
    for side, result in (("before", before), ("after", after)):
        for title, curve in (result.get("curves") or {}).items():
            entry = curves.setdefault(title, {k: v for k, v in curve.items() if k != "y"})
            entry[side] = curve["y"]
    if curves:
        extras["curves"] = curves
    tables = {
        f"{title} ({side})": table
        for side, result in (("before", before), ("after", after))
        for title, table in (result.get("tables") or {}).items()
    }
    if tables:
        extras["tables"] = tables
    return extras


def _paired_samples(before: dict, after: dict, limit: int) -> list[dict]:
    out = []
    for b, a in zip(before.get("samples", [])[:limit], after.get("samples", [])[:limit]):
        out.append(
            {
                "prompt": a["prompt"],
                "reference": a["reference"],
                "before": b["prediction"],
                "after": a["prediction"],
                "scores": {"before": b["scores"], "after": a["scores"]},
            }
        )
    if not out:
        out = [
            {
                "prompt": a["prompt"],
                "reference": a["reference"],
                "before": "",
                "after": a["prediction"],
                "scores": {"before": {}, "after": a["scores"]},
            }
            for a in after.get("samples", [])[:limit]
        ]
    return out


def _save_json(path: Path, data) -> None:
    _save_text(path, json.dumps(data, indent=2, default=float))


def _save_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _truncate_metrics(path: Path, step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
    _save_text(path, "".join(line + "\n" for line in kept))


def _load_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None
