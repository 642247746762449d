"""The steps before training: open the run, load its data, plan it, build the model, score it, adapt it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ..interface import EvalContext, Method, MethodData
from ..training.engine import console
from .folder import load_json, resolve_run_dir, save_json, write_config


@dataclass
class RunContext:
    """What every step of one run shares (a continual run: of all its stages)."""

    config: Any
    method: Method
    accelerator: Any
    tokenizer: Any
    run_dir: Path
    resume: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def collate(self):
        return partial(self.method.collate, tokenizer=self.tokenizer)


def open_run(config, *, config_path=None, resume: bool = False, run_dir: Path | None = None, folder=None) -> RunContext:
    """Method, folder, accelerator and tokenizer; the config, data and template checked (no weights yet).

    ``folder(config, config_path, resume=...)`` picks the run folder (default ``folder.resolve_run_dir``)."""
    from ..checks import check_config
    from ..models.load import load_tokenizer
    from ..registry import get_method
    from ..training.engine import make_accelerator

    started = time.perf_counter()
    method = get_method(config.method)
    tcfg = config.training
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    # Every process checks the folder before any writes: the accelerator's process-group
    # rendezvous below cannot complete until all of them got past this line.
    run_dir = run_dir or (folder or resolve_run_dir)(config, config_path, resume=resume)
    accelerator = make_accelerator(
        mixed_precision=tcfg.mixed_precision,
        trackers=tcfg.trackers,
        project_dir=run_dir,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
    )
    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    check_config(config, tokenizer=tokenizer, method=method).raise_if_errors()
    return RunContext(config, method, accelerator, tokenizer, run_dir, resume, started)


def load_data(run: RunContext, config=None) -> MethodData:
    """The method's data; then the run folder and its config.yaml (only once everything passed its
    checks, so a rejected config never leaves a folder that blocks the corrected rerun)."""
    data = run.method.load_data(config or run.config, run.tokenizer)
    if run.main:
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run.run_dir, run.config, resume=run.resume)
    run.accelerator.wait_for_everyone()
    return data


def plan_run(run: RunContext, data: MethodData):
    """This run's resource plan (planning/) as (Plan or None, problem or None); None off the main process.

    Made before any weight loads (the runtime it measures is this process) and under a forked RNG: its
    timed matmul must not move the run's random state."""
    if not run.main:
        return None
    from ..planning import safe_plan

    choice = getattr(getattr(run.accelerator, "precision", None), "choice", None) or "no"
    with torch.random.fork_rng(devices=[]):
        plan, problem = safe_plan(
            run.config,
            data=data,
            processes=run.accelerator.num_processes,
            device=run.accelerator.device.type,
            precision={"no": "fp32"}.get(choice, choice),
        )
    if problem:
        console.print(f"[yellow]! {problem}[/]", highlight=False)
    elif plan is not None and plan.fits is False and plan.free_bytes is not None:
        console.print(
            f"[yellow]! plan: about {plan.machine_bytes / 2**30:.1f} GiB needed, "
            f"{plan.free_bytes / 2**30:.1f} GiB free: this run may run out of memory[/]",
            highlight=False,
        )
    return plan, problem


def build_model(run: RunContext, data: MethodData, config=None) -> torch.nn.Module:
    """The method's model (before any adapter), seeded, on the run's device."""
    from accelerate.utils import set_seed

    from ..models.load import is_quantized

    set_seed(run.config.training.seed)  # heads and adapters start the same in every run of this config
    model = run.method.build_model(config or run.config, data, dtype=model_dtype(run))
    if not is_quantized(model):  # bitsandbytes places quantized weights itself; .to() would refuse
        model.to(run.accelerator.device)
    return model


def model_dtype(run: RunContext) -> torch.dtype:
    from ..models.load import resolve_dtype

    return resolve_dtype(run.config.model.dtype, run.accelerator.device)


def evaluate_before(run: RunContext, model, data: MethodData) -> dict:
    """The "before" scores (kept from the first attempt when resuming; empty with eval.before: false)."""
    path = run.run_dir / "before.json"
    before = load_json(path) if run.resume else None
    if before is not None:
        return before
    if run.config.eval is not None and not getattr(run.config.eval, "before", True):  # not every eval has it
        before = {"metrics": {}, "samples": []}  # nothing to compare against
    else:
        before = run.method.evaluate(model, EvalContext(run.config, run.tokenizer, data, run.accelerator, "before"))
    if run.main:
        save_json(path, before)
    return before


def attach(run: RunContext, model, steps: int | None):
    """(model to train, the attached adapter or None); activation checkpointing switched on if asked."""
    from ..adapters import attach_adapter
    from ..models.load import enable_activation_checkpointing, resolve_model

    config, adapted = run.config, None
    if config.adapter is not None:
        # AdaLoRA's rank schedule needs the step count; prompt tuning's text init the tokenizer.
        adapted = attach_adapter(
            model,
            config.adapter,
            task_type=run.method.peft_task_type,
            total_steps=steps,
            tokenizer_path=resolve_model(config.model.name),
            gradient_checkpointing=config.training.gradient_checkpointing,
        )
        model = adapted.model
    if config.training.gradient_checkpointing:
        enable_activation_checkpointing(model)
    return model, adapted
