"""A continual run: the run skeleton's training steps once per stage, every task scored after every stage.

    checks (every stage) → data (every stage) → model → score all tasks (row 0, the base) →
    for each stage: strategy set-up (replay mix, anchor, Fisher, new adapter) → train (``run.training``:
    a fresh optimizer and a restarted schedule) → save the stage's output → score all tasks
    (row k) → WiSE-FT sweep → mark the stage done
    → summary.json, matrix.csv, report.html

The method (``registry.get_method``) supplies data, model, loss, collate and evaluation exactly as in
a one-stage run; the strategy (``session.ContinualRun``) only decides what each stage trains on and
what is added to its loss. ``continual_state.json`` records finished stages and their scores, so
``--resume`` picks up between stages (from the saved stage outputs) or within one (from the stage's
latest checkpoint). Any method whose interface says ``continual = True`` can be trained this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config.continual import ContinualConfig
from ..run.folder import RunFolderExists, RunResult, refuse_earlier_run, run_name, write_config
from .checks import ContinualRefused, continual_problems
from .session import STATE_FILE
from .stages import stage_config

__all__ = ["ContinualRefused", "continual_problems", "run_continual"]


@dataclass
class Tasks:
    """Every stage's config and prepared data, in stage order."""

    names: list[str]
    configs: list
    data: list
    general: list = field(default_factory=list)


def run_continual(config, *, config_path=None, resume: bool = False) -> RunResult:
    from ..checks import ChecksFailed
    from ..registry import get_method
    from ..run.setup import open_run
    from .evaluation import load_general_rows, score_metric
    from .session import ContinualRun, load_state

    problems = continual_problems(config, get_method(config.method))
    if problems:  # before the accelerator and the tokenizer: these need no weights
        raise ChecksFailed(problems)
    run = open_run(config, config_path=config_path, resume=resume, folder=continual_run_dir)
    if run.accelerator.num_processes > 1:
        raise ContinualRefused(
            "stages: continual runs train in one process for now; run without --num-processes / accelerate launch"
        )
    configs = [stage_config(config, k) for k in range(len(config.stages))]
    tasks = Tasks(
        names=[s.name for s in config.stages],
        configs=configs,
        data=[run.method.load_data(c, run.tokenizer) for c in configs],
    )
    settings = config.continual or ContinualConfig()
    if settings.general_text:
        tasks.general = load_general_rows(settings.general_text, config.data, run.tokenizer)

    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run.run_dir, config, resume=resume)
    state = (
        load_state(run.run_dir)
        if resume
        else {"rows": {}, "trained": [], "completed": [], "stage_results": [], "wise_ft": None}
    )
    session = ContinualRun(run, settings, tasks, state, score_metric(config, run.method))
    session.go()
    return session.finish()


def continual_run_dir(config, config_path, *, resume: bool) -> Path:
    """``output_dir / name``: new, or, with ``resume``, holding a continual run's state file."""
    name = run_name(config, config_path, f"continual-{config.method}")
    run_dir = Path(config.output_dir) / name
    if resume:
        if not (run_dir / STATE_FILE).exists():
            raise RunFolderExists(
                f"--resume: {run_dir} holds no continual run to continue ({STATE_FILE} "
                f"missing); start it without --resume, or with a new name"
            )
        return run_dir
    refuse_earlier_run(run_dir, name)
    return run_dir
