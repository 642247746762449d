"""One run, start to finish: checks → data → model → eval before → train → save → eval after → report.

Every method goes through here; the method-specific part is the loop in
`methods/`. Only the main process writes the run folder.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .config import dump_config
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
    from .checks import check_config
    from .data import load_splits, pack
    from .eval.report import print_before_after, write_report
    from .methods.causal_lm import LoopSettings, train_loop
    from .models.adapters import add_lora
    from .models.load import count_parameters, load_causal_lm, load_tokenizer, resolve_dtype
    from .training.checkpoint import is_sharded, latest_checkpoint, load_checkpoint
    from .training.engine import make_accelerator, peak_memory_mb, total_steps
    from .training.optim import build_optimizer, build_scheduler
    from .training.step import CausalLMLoss

    t_start = time.perf_counter()
    tcfg = config.training
    if tcfg.num_threads:
        torch.set_num_threads(tcfg.num_threads)
    # Every process checks the folder before any writes: the accelerator's process-group
    # rendezvous below cannot complete until all of them got past this line.
    run_dir = run_dir or resolve_run_dir(config, config_path, resume=resume)
    accelerator = make_accelerator(mixed_precision=tcfg.mixed_precision, trackers=tcfg.trackers,
                                   project_dir=run_dir,
                                   gradient_accumulation_steps=tcfg.gradient_accumulation_steps)
    main = accelerator.is_main_process

    tokenizer = load_tokenizer(config.model.name, trust_remote_code=config.model.trust_remote_code,
                               revision=config.model.revision)
    report = check_config(config, tokenizer=tokenizer)
    report.raise_if_errors()
    splits = load_splits(config.data, tokenizer)
    rows = pack(splits.train, config.data.max_length, config.data.packing)
    eval_rows = pack(splits.eval, config.data.max_length, config.data.packing)
    eval_samples = splits.eval_samples
    if config.eval and config.eval.num_samples:
        eval_samples = eval_samples[: config.eval.num_samples]

    # The run folder appears only once config, data and template passed their checks,
    # so a rejected config never leaves a folder that blocks the corrected rerun.
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run keeps the config it started with; what it resumed with goes beside it.
        _save_text(run_dir / ("config.resumed.yaml" if resume else "config.yaml"), dump_config(config))
    accelerator.wait_for_everyone()

    from accelerate.utils import set_seed

    set_seed(tcfg.seed)
    dtype = resolve_dtype(config.model.dtype, accelerator.device)
    model = load_causal_lm(config.model.name, dtype=dtype, trust_remote_code=config.model.trust_remote_code,
                           revision=config.model.revision, attn_implementation=config.model.attn_implementation)
    model.to(accelerator.device)
    pad_id = tokenizer.pad_token_id

    before = _load_json(run_dir / "before.json") if resume else None
    if before is None:
        before = evaluate(model, tokenizer, config, eval_rows, eval_samples, pad_id, accelerator, "before")
        if main:
            _save_json(run_dir / "before.json", before)

    adapter_model = None
    if config.adapter is not None:
        a = config.adapter
        model = add_lora(model, r=a.r, alpha=a.alpha, dropout=a.dropout, target_modules=a.target_modules,
                         use_rslora=a.use_rslora, use_dora=a.use_dora)
        adapter_model = model
    if tcfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = count_parameters(model)

    loss_model = CausalLMLoss(model)
    optimizer = build_optimizer(loss_model, learning_rate=tcfg.learning_rate, weight_decay=tcfg.weight_decay,
                                betas=tuple(tcfg.adam_betas), eps=tcfg.adam_epsilon)
    world = accelerator.num_processes
    global_batch = tcfg.batch_size * tcfg.gradient_accumulation_steps * world
    steps = total_steps(len(rows), global_batch, tcfg.epochs, tcfg.max_steps)
    warmup = tcfg.warmup_steps if tcfg.warmup_steps is not None else int(tcfg.warmup_ratio * steps)
    scheduler = build_scheduler(optimizer, kind=tcfg.scheduler, warmup_steps=warmup, total_steps=steps)
    loss_model, optimizer = accelerator.prepare(loss_model, optimizer)

    start_state: dict = {}
    if resume:
        ckpt = latest_checkpoint(run_dir)
        sharded_state = is_sharded(accelerator) and (ckpt / "accelerate_state").exists()
        if sharded_state:
            accelerator.load_state(str(ckpt / "accelerate_state"))
        start_state = load_checkpoint(ckpt, model=accelerator.unwrap_model(loss_model), optimizer=optimizer,
                                      scheduler=scheduler, restore_weights=not sharded_state)
        console.print(f"Resuming from {ckpt} (step {start_state['step']}/{steps})")
        if main:  # after a crash the log may run past the checkpoint: those steps are redone
            _truncate_metrics(run_dir / "metrics.jsonl", start_state["step"])
    if tcfg.trackers:
        accelerator.init_trackers(run_dir.name, config=config.model_dump(mode="json"))

    def periodic_eval():
        return _heldout(loss_model, eval_rows, pad_id, tcfg.batch_size, accelerator)

    settings = LoopSettings(
        batch_size=tcfg.batch_size, gradient_accumulation_steps=tcfg.gradient_accumulation_steps,
        total_steps=steps, seed=tcfg.seed, max_grad_norm=tcfg.max_grad_norm, save_every=tcfg.save_every,
        keep_checkpoints=tcfg.keep_checkpoints, log_every=tcfg.log_every, eval_every=tcfg.eval_every,
    )
    console.print(
        f"[bold]{config.method}[/] on {len(rows)} rows ({sum(len(r.input_ids) for r in rows)} tokens), "
        f"{steps} steps of {global_batch} rows; trainable {trainable:,} / {total:,} parameters"
    )
    result = train_loop(loss_model=loss_model, optimizer=optimizer, scheduler=scheduler, accelerator=accelerator,
                        rows=rows, pad_id=pad_id, settings=settings, run_dir=run_dir, start_state=start_state,
                        adapter_model=adapter_model, eval_fn=periodic_eval if eval_rows else None)

    accelerator.wait_for_everyone()
    trained = accelerator.unwrap_model(loss_model).model
    output_dir = run_dir / ("adapter" if adapter_model is not None else "model")
    full_state = None
    if is_sharded(accelerator):  # gather the sharded weights (collective) into one standard folder
        full_state = {k.removeprefix("model."): v for k, v in accelerator.get_state_dict(loss_model).items()}
    if main:
        trained.save_pretrained(output_dir, safe_serialization=True, state_dict=full_state)
        tokenizer.save_pretrained(output_dir)
    if is_sharded(accelerator):
        # The trained model is sharded across processes: the held-out loss runs on the sharded
        # module everywhere, generation on main with the saved (standard, unsharded) output.
        accelerator.wait_for_everyone()
        generator = _load_output(config, output_dir, dtype).to(accelerator.device) if main else None
        after = evaluate(generator, tokenizer, config, eval_rows, eval_samples, pad_id, accelerator, "after",
                         loss_module=loss_model)
    else:
        after = evaluate(trained, tokenizer, config, eval_rows, eval_samples, pad_id, accelerator, "after")
    if tcfg.trackers:
        accelerator.end_training()

    summary = {
        "before": before["metrics"],
        "after": after["metrics"],
        "train": {
            "tokens_per_second": round(result.tokens / max(result.wall_seconds, 1e-9), 2),
            "tokens": result.tokens,
            "loss_tokens": result.loss_tokens,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "trainable_parameters": trainable,
            "total_parameters": total,
            "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
            "wall_seconds": round(result.wall_seconds, 2),
            "run_wall_seconds": round(time.perf_counter() - t_start, 2),
            "processes": world,
            "device": str(accelerator.device),
        },
        "run": {
            "name": run_dir.name, "method": config.method, "model": config.model.name,
            "adapter": config.adapter.type if config.adapter else None, "output": str(output_dir),
        },
    }
    field_errors = {k: v["field_errors"] for k, v in (("before", before), ("after", after)) if v.get("field_errors")}
    if field_errors:
        summary["field_errors"] = field_errors
    if main:
        _save_json(run_dir / "summary.json", summary)
        samples = _paired_samples(before, after, config.eval.samples_in_report if config.eval else 0)
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
        report_path = write_report(run_dir, summary=summary, metrics=metrics, samples=samples,
                                   config_text=dump_config(config))
        print_before_after(console, summary)
        console.print(f"Output: {output_dir}\nReport: {report_path}")
    return RunResult(run_dir=run_dir, output_dir=output_dir, summary=summary, model=trained)


def evaluate(model, tokenizer, config, eval_rows, eval_samples, pad_id, accelerator, label: str,
             loss_module=None) -> dict:
    """Held-out loss / perplexity and generation scores, same prompts and decoding before and after.

    ``loss_module`` (default: a loss wrapper around ``model``) computes the held-out loss on
    every process; ``model`` generates on the main process only.
    """
    from .eval.generation import evaluate_generation
    from .training.step import CausalLMLoss

    out: dict = {"metrics": {}, "samples": []}
    if config.eval is None:
        return out
    if eval_rows:
        loss_module = loss_module if loss_module is not None else CausalLMLoss(model)
        out["metrics"].update(_heldout(loss_module, eval_rows, pad_id, config.training.batch_size, accelerator))
    # Generation runs on the main process only: it writes the report, and decoding
    # needs no collective, so the other processes simply wait at the next barrier.
    if eval_samples and config.eval.scorers and accelerator.is_main_process:
        console.print(f"Generating for {len(eval_samples)} held-out prompts ({label})…")
        result = evaluate_generation(model, tokenizer, eval_samples, config.eval.scorers,
                                     max_new_tokens=config.eval.max_new_tokens, batch_size=config.eval.batch_size)
        out["metrics"].update(result.scores)
        out["samples"] = [asdict(sample) for sample in result.samples]
        if result.field_errors:
            out["field_errors"] = result.field_errors
    return out


@torch.no_grad()
def _heldout(loss_model, rows, pad_id, batch_size, accelerator) -> dict:
    import math

    from .data.types import IGNORE_INDEX, PackedRow
    from .methods.causal_lm import collate_rows

    from .training.checkpoint import is_sharded

    # No gradients here, so a DDP wrapper is not needed, and skipping it avoids its per-forward
    # collectives (buffer broadcast) when processes hold different numbers of eval batches.
    if not is_sharded(accelerator):
        loss_model = accelerator.unwrap_model(loss_model)
    was_training = loss_model.training
    loss_model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    mine = rows[accelerator.process_index::accelerator.num_processes]
    # Sorting by length keeps padding small: rows of similar length share a batch.
    mine = sorted(mine, key=lambda r: len(r.input_ids))
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    if is_sharded(accelerator):
        # Sharded forwards gather parameters collectively: every process must run as many
        # batches. Extra batches carry no loss token (all labels ignored), so they add nothing.
        count = torch.tensor([len(batches)], device=accelerator.device)
        most = int(accelerator.reduce(count, reduction="max").item())
        filler = PackedRow(input_ids=[pad_id, pad_id], labels=[IGNORE_INDEX, IGNORE_INDEX], position_ids=[0, 1])
        batches += [[filler]] * (most - len(batches))
    for rows_of_batch in batches:
        batch = collate_rows(rows_of_batch, pad_id)
        loss_sum, n = loss_model(batch["input_ids"].to(accelerator.device), batch["labels"].to(accelerator.device),
                                 batch["position_ids"].to(accelerator.device))
        total += torch.stack([loss_sum.double(), n.double()])
    if accelerator.num_processes > 1:
        total = accelerator.reduce(total, reduction="sum")
    loss_model.train(was_training)
    loss = float(total[0] / total[1].clamp(min=1))
    return {"eval_loss": round(loss, 6), "eval_perplexity": round(math.exp(min(loss, 50)), 4)}


def _load_output(config, output_dir: Path, dtype):
    """The run's saved output as an ordinary model: base + adapter, or the full model folder."""
    from .models.load import load_causal_lm

    if config.adapter is None:
        return load_causal_lm(str(output_dir), dtype=dtype)
    from peft import PeftModel

    base = load_causal_lm(config.model.name, dtype=dtype, trust_remote_code=config.model.trust_remote_code,
                          revision=config.model.revision)
    return PeftModel.from_pretrained(base, str(output_dir))


def _paired_samples(before: dict, after: dict, limit: int) -> list[dict]:
    out = []
    for b, a in zip(before.get("samples", [])[:limit], after.get("samples", [])[:limit]):
        out.append({"prompt": a["prompt"], "reference": a["reference"], "before": b["prediction"],
                    "after": a["prediction"], "scores": {"before": b["scores"], "after": a["scores"]}})
    if not out:
        out = [{"prompt": a["prompt"], "reference": a["reference"], "before": "", "after": a["prediction"],
                "scores": {"before": {}, "after": a["scores"]}} for a in after.get("samples", [])[:limit]]
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
