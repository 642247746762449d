"""One run, start to finish — the skeleton every method goes through, naming none of them.

The method object (``registry.get_method(config.method)``, interface in ``interface.py``) supplies
the data, the model, the loss, the collate function, the evaluation and the output format; each
step below is a small function in ``run/``. Only the main process writes the run folder.
"""

from __future__ import annotations

from pathlib import Path

from .run.finish import evaluate_after, keep_best, save_output, summarize, write_outputs
from .run.folder import RunFolderExists, RunResult, resolve_run_dir
from .run.setup import attach, build_model, evaluate_before, load_data, open_run, plan_run
from .run.training import announce, best_weights, prepare_training, restore_checkpoint, train

__all__ = ["RunFolderExists", "RunResult", "resolve_run_dir", "train_from_config"]


def train_from_config(
    config, *, config_path=None, resume: bool = False, run_dir: Path | None = None, on_eval=None
) -> RunResult:
    """checks → data → plan → model → evaluate before → adapter → train → save → evaluate after → report.

    ``on_eval(step, metrics) -> bool``: sees every held-out evaluation; True stops training there (sweeps)."""
    from .training.engine import peak_memory_mb

    run = open_run(config, config_path=config_path, resume=resume, run_dir=run_dir)
    data = load_data(run)
    plan = plan_run(run, data)
    model = build_model(run, data)
    before = evaluate_before(run, model, data)

    steps = run.method.total_steps(config, data, run.accelerator.num_processes)
    model, adapted = attach(run, model, steps)
    parts = prepare_training(run, model, data, steps)
    start_state = restore_checkpoint(run, parts, run.run_dir) if resume else {}
    if config.training.trackers:
        run.accelerator.init_trackers(run.run_dir.name, config=config.model_dump(mode="json"))
    best = best_weights(run, data, before)  # training.early_stopping, or None
    announce(run, data, parts)
    result = train(run, parts, data, start_state, adapted=adapted, best=best, observer=on_eval)
    train_peak_mb = round(peak_memory_mb(run.accelerator.device), 1)  # before the "after" evaluation

    early = keep_best(run, parts, adapted, best)  # the best weights become the output; the last kept beside
    trained, output_dir = save_output(run, parts, adapted)
    after = evaluate_after(run, parts, data, trained, output_dir)
    if config.training.trackers:
        run.accelerator.end_training()
    summary = summarize(
        run,
        data=data,
        parts=parts,
        result=result,
        before=before,
        after=after,
        output_dir=output_dir,
        plan=plan,
        train_peak_mb=train_peak_mb,
        early=early,
    )
    write_outputs(run, summary, before, after, output_dir)
    # No process leaves while another still uses the process group (the main one generates and writes the
    # report meanwhile): a rank that exited early was seen to abort in gloo's teardown under FSDP2 on CPU.
    run.accelerator.wait_for_everyone()
    return RunResult(run_dir=run.run_dir, output_dir=output_dir, summary=summary, model=trained)
