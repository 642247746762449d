"""A continual run: the stages one after another in one process, every task scored after every stage.

    checks (every stage) → data (every stage) → model → score all tasks (row 0, the base) →
    for each stage: strategy set-up (replay mix, anchor, Fisher, new adapter) → train (the shared
    loop, a fresh optimizer and a restarted schedule) → save the stage's output → score all tasks
    (row k) → WiSE-FT sweep → mark the stage done
    → summary.json, matrix.csv, report.html

The method (``registry.get_method``) supplies data, model, loss, collate and evaluation exactly as in
a one-stage run; this module only decides what each stage trains on and what is added to its loss.
``continual_state.json`` records finished stages and their scores, so ``--resume`` picks up between
stages (from the saved stage outputs) or within one (from the stage's latest checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config.continual import ContinualConfig
from ..runner import RunFolderExists, RunResult, _save_text
from .session import STATE_FILE
from .stages import stage_config


class ContinualRefused(ValueError):
    """A continual setup that cannot work as asked; the message names the key and the fix."""


def continual_problems(config, method) -> list[str]:
    """What `validate` and the run refuse before loading anything."""
    settings = config.continual or ContinualConfig()
    problems = []
    adapter = config.adapter
    if settings.strategy == "adapter":
        if adapter is None or adapter.type != "lora":
            problems.append(
                "continual.strategy adapter: needs adapter: {type: lora, ...} (one LoRA per stage; "
                "O-LoRA's penalty is defined on LoRA's A matrices)"
            )
        elif config.model.quantize:
            problems.append(
                "continual.strategy adapter: not with model.quantize (stage adapters are merged in "
                "full precision); leave model.quantize out"
            )
    if adapter is not None and adapter.type == "adalora":
        problems.append(
            "adapter.type adalora: its rank schedule spans one run's steps, not a sequence of stages; use lora"
        )
    if settings.general_text and config.method not in ("sft", "cpt"):
        problems.append(f"continual.general_text: perplexity needs a causal-LM method (sft, cpt), not {config.method}")
    if settings.general_text and not Path(settings.general_text).exists():
        problems.append(f"continual.general_text: no file at {settings.general_text}")
    if settings.strategy != "adapter" and settings.adapter.merge:
        problems.append("continual.adapter.merge: only with continual.strategy adapter")
    return problems


@dataclass
class _Tasks:
    """Every stage's config and prepared data, in stage order."""

    names: list[str]
    configs: list
    data: list
    general: list = field(default_factory=list)


def run_continual(config, *, config_path=None, resume: bool = False) -> RunResult:
    from ..checks import ChecksFailed, check_config
    from ..models.load import load_tokenizer
    from ..registry import get_method
    from ..training.engine import make_accelerator
    from .evaluation import load_general_rows, score_metric
    from .session import ContinualRun, load_state

    method = get_method(config.method)
    settings = config.continual or ContinualConfig()
    tcfg = config.training
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    problems = continual_problems(config, method)
    if problems:  # before the accelerator and the tokenizer: these need no weights
        raise ChecksFailed(problems)
    run_dir = _run_dir(config, config_path, resume)
    accelerator = make_accelerator(
        mixed_precision=tcfg.mixed_precision,
        project_dir=run_dir,
        gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
    )
    if accelerator.num_processes > 1:
        raise ContinualRefused(
            "stages: continual runs train in one process for now; run without --num-processes / accelerate launch"
        )
    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    check_config(config, tokenizer=tokenizer, method=method).raise_if_errors()
    configs = [stage_config(config, k) for k in range(len(config.stages))]
    tasks = _Tasks(
        names=[s.name for s in config.stages], configs=configs, data=[method.load_data(c, tokenizer) for c in configs]
    )
    if settings.general_text:
        tasks.general = load_general_rows(settings.general_text, config.data, tokenizer)

    from ..config import dump_config

    run_dir.mkdir(parents=True, exist_ok=True)
    _save_text(run_dir / ("config.resumed.yaml" if resume else "config.yaml"), dump_config(config))
    state = (
        load_state(run_dir)
        if resume
        else {"rows": {}, "trained": [], "completed": [], "stage_results": [], "wise_ft": None}
    )
    run = ContinualRun(config, settings, method, tokenizer, accelerator, tasks, run_dir, state, score_metric(config))
    run.go()
    return run.finish()


def _run_dir(config, config_path, resume: bool) -> Path:
    name = config.name or (Path(config_path).stem if config_path else f"continual-{config.method}")
    run_dir = Path(config.output_dir) / name
    if resume:
        if not (run_dir / STATE_FILE).exists():
            raise RunFolderExists(
                f"--resume: {run_dir} holds no continual run to continue ({STATE_FILE} "
                f"missing); start it without --resume, or with a new name"
            )
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        raise RunFolderExists(
            f"{run_dir} already holds an earlier run and is never overwritten. Continue it with --resume, "
            f"or start a new run with a new name, e.g. `name={name}-2` on the command line."
        )
    return run_dir
