"""The stage-by-stage work of a continual run (``runner.run_continual`` sets it up): the strategy hook
around the run skeleton's training steps (``run.training``), which every stage calls as a one-stage run does.

State kept in ``continual_state.json`` after each step that costs minutes, so an interrupted run
loses at most the step it was in:

- ``trained``: stages whose training finished and whose output (and EWC Fisher) is saved;
- ``completed``: stages also scored on every task (their row of R) and swept (WiSE-FT);
- ``rows``: each row's scores, general perplexity and per-task metrics ("base" = row 0).
"""

from __future__ import annotations

import json
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from ..interface import EvalContext
from ..run.folder import save_json
from ..run.setup import RunContext, attach, build_model
from ..run.training import prepare_training, restore_checkpoint, train
from ..training.engine import console
from . import penalties
from .checks import ContinualRefused
from .evaluation import general_perplexity, pick_score
from .replay import ReservoirBuffer, mix_replay
from .stage_adapters import StageAdapters
from .wise_ft import lora_a_names, sweep

STATE_FILE = "continual_state.json"


class ContinualRun:
    def __init__(self, run: RunContext, settings, tasks, state: dict, metric: str):
        from ..models.load import enable_activation_checkpointing

        self.run, self.config, self.settings, self.method = run, run.config, settings, run.method
        self.tokenizer, self.accelerator, self.tasks = run.tokenizer, run.accelerator, tasks
        self.run_dir, self.state, self.metric = run.run_dir, state, metric
        self.strategy = settings.strategy
        model = build_model(run, tasks.data[0], config=tasks.configs[0])
        self.stage_adapters: StageAdapters | None = None
        self.peft_single = False
        if self.strategy == "adapter":
            self.stage_adapters = StageAdapters(
                model, run.config.adapter, task_type=run.method.peft_task_type, inference=settings.adapter.inference
            )
            if run.config.training.gradient_checkpointing:
                enable_activation_checkpointing(model)
        else:
            model, adapted = attach(run, model, None)
            if adapted is not None and (not adapted.saves_adapter or adapted.saver is not adapted.model):
                raise ContinualRefused(
                    f"adapter.type {run.config.adapter.type}: continual runs support full "
                    f"fine-tuning and peft adapters (lora, loha, lokr, vera, oft, ia3)"
                )
            self.peft_single = adapted is not None
        self.model = model
        self.buffers: dict[str, ReservoirBuffer] = {}
        self.fisher: dict[str, torch.Tensor] | None = None
        self.pending_restore: int | None = None  # a finished stage whose weights a resumed run still loads
        self.session_started = time.perf_counter()
        self.earlier_seconds = float(state.get("elapsed_seconds", 0.0))  # spent before a resume

    # ------------------------------------------------------------------ the sequence

    def go(self) -> None:
        if "base" not in self.state["rows"]:
            self.state["rows"]["base"] = self.score_row("base")
            self.save_state()
        if self.strategy == "joint":
            return self.joint()
        for k, name in enumerate(self.tasks.names):
            if name in self.state["trained"]:
                self.bookkeep(k)
                if name in self.state["completed"]:
                    continue
                self.restore()
                self.finish_stage(k, start=None)
                continue
            self.restore()
            self.stage(k)

    def stage(self, k: int) -> None:
        from accelerate.utils import set_seed

        name, cfg, data = self.tasks.names[k], self.tasks.configs[k], self.tasks.data[k]
        # Each stage's randomness (a new adapter's init, dropout) depends on its index only, so a run resumed
        # between stages draws what an uninterrupted one would.
        set_seed(cfg.training.seed + k)
        if self.stage_adapters is not None:
            self.model = self.stage_adapters.begin(name)
        rows, facts = data.train, {}
        if self.strategy == "replay":
            replay = self.settings.replay
            mix = mix_replay(
                data.train, self.buffers, fraction=replay.fraction, by=replay.by, seed=cfg.training.seed + k
            )
            rows = mix.rows
            facts = {
                "replayed_rows": mix.replayed,
                "replayed_fraction": round(mix.fraction, 4),
                "replayed_token_fraction": round(mix.token_fraction, 4),
                "replayed_from": mix.per_stage,
            }
        params = penalties.trainable_parameters(self.model)
        start = penalties.snapshot(self.model) if self._needs_start(k) else None
        penalty = self._penalty(k, params, start)
        result = self.train(name, k, cfg, data, rows, penalty)
        self.save_output(k)
        self.bookkeep(k, fresh=True)
        self.state["trained"].append(name)
        self.state["stage_results"].append(
            {"stage": name, **result, **facts, "output": str(self.stage_dir(k) / "output")}
        )
        self.save_state()
        self.drop_checkpoints(k)
        self.finish_stage(k, start=start)

    def finish_stage(self, k: int, start: dict | None) -> None:
        name = self.tasks.names[k]
        self.state["rows"][name] = self.score_row(name)
        if self._sweeps(k):
            if start is None:
                console.print(
                    f"[yellow]! WiSE-FT after {name} skipped: the run resumed after the stage's "
                    f"training, and its start weights were not kept[/]"
                )
            else:
                self.state["wise_ft"] = self.wise_ft(k, start)
        self.state["completed"].append(name)
        self.save_state()

    def joint(self) -> None:
        """The reference: one training on the union of every stage's rows, with the top-level settings."""
        name = "joint"
        if name not in self.state["completed"]:
            rows = [row for data in self.tasks.data for row in data.train]
            cfg = self.tasks.configs[0].model_copy(update={"training": self.config.training})
            if name not in self.state["trained"]:
                result = self.train(name, 0, cfg, self.tasks.data[0], rows, None)
                self.save_output(0)
                self.state["trained"].append(name)
                self.state["stage_results"].append(
                    {"stage": name, **result, "output": str(self.stage_dir(0) / "output")}
                )
                self.save_state()
                self.drop_checkpoints(0)
            else:
                self.pending_restore = 0
                self.restore()
            self.state["rows"][name] = self.score_row(name)
            self.state["completed"].append(name)
            self.save_state()

    # ------------------------------------------------------------------ one stage's training

    def stage_dir(self, k: int) -> Path:
        label = "joint" if self.strategy == "joint" else self.tasks.names[k]
        return self.run_dir / "stages" / f"{k + 1}-{label}"

    def train(self, name: str, k: int, cfg, data, rows: list, penalty) -> dict:
        """One stage's training: the run skeleton's training steps on ``rows``, the penalty added to the loss."""
        stage_dir = self.stage_dir(k)
        stage_dir.mkdir(parents=True, exist_ok=True)
        steps = self.method.total_steps(cfg, replace(data, train=rows), self.accelerator.num_processes)
        parts = prepare_training(
            self.run,
            self.model,
            data,
            steps,
            config=cfg,
            seed=cfg.training.seed + k,
            wrap=(lambda inner: penalties.PenalisedLoss(inner, penalty)) if penalty is not None else None,
            fresh=True,
        )
        # A stage restarted without a checkpoint begins its log again; after one, the steps past it are redone.
        start_state = restore_checkpoint(self.run, parts, stage_dir, label=f" stage {name}")
        where = (
            "every stage's rows at once"
            if self.strategy == "joint"
            else f"stage {k + 1}/{len(self.tasks.names)}: {name}"
        )
        console.print(
            f"[bold]{where}[/] ({self.strategy}) — {len(rows)} rows, "
            f"{steps} steps, lr {cfg.training.learning_rate:g}, {parts.trainable:,} trainable parameters"
        )
        result = train(self.run, parts, data, start_state, folder=stage_dir, rows=rows, config=cfg)
        return {
            "steps": result.steps,
            "rows": len(rows),
            "tokens": result.tokens,
            "wall_seconds": round(result.wall_seconds, 2),
            "final_loss": result.final_loss,
        }

    def _needs_start(self, k: int) -> bool:
        return (self.strategy in ("l2", "ewc") and k > 0) or self._sweeps(k)

    def _sweeps(self, k: int) -> bool:
        wise = self.settings.wise_ft
        return bool(wise.alphas) and (wise.stages == "all" or k == len(self.tasks.names) - 1)

    def _penalty(self, k: int, params: dict, start: dict | None):
        """What stage k adds to its loss; None for the first stage (nothing to protect yet) and naive / replay."""
        if k == 0:
            return None
        if self.strategy == "l2":
            weight = self.settings.l2.weight
            return lambda: penalties.l2_penalty(params, start, weight)
        if self.strategy == "ewc":
            fisher, weight = self.fisher, self.settings.ewc.weight
            anchor = {n: start[n] for n in fisher}
            return lambda: penalties.ewc_penalty(params, anchor, fisher, weight)
        if self.strategy == "adapter" and self.settings.adapter.inference == "sum":
            sa, opts = self.stage_adapters, self.settings.adapter
            new, old = sa.current, sa.frozen_names()
            return lambda: penalties.olora_penalty(sa.model, new, old, orthogonality=opts.orthogonality, l2=opts.l2)
        return None

    # ------------------------------------------------------------------ outputs and resume

    def save_output(self, k: int) -> None:
        output = self.stage_dir(k) / "output"
        if output.exists():  # a run resumed inside this stage's saving: write it again whole
            shutil.rmtree(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        if self.stage_adapters is not None:
            self.stage_adapters.save(self.stage_adapters.current, output)
        else:
            self.method.save(self.tasks.configs[k], self.model, output, self.tokenizer)

    def drop_checkpoints(self, k: int) -> None:
        # Once the stage's output is saved and recorded, resuming starts from that output: the mid-stage
        # checkpoints (weights + optimizer state, ~3× the model for full fine-tuning) are dead weight.
        shutil.rmtree(self.stage_dir(k) / "checkpoints", ignore_errors=True)

    def bookkeep(self, k: int, fresh: bool = False) -> None:
        """What a finished stage leaves for the later ones: its replay buffer, its Fisher, its adapter."""
        name, data = self.tasks.names[k], self.tasks.data[k]
        if self.strategy == "replay":
            buffer = ReservoirBuffer(self.settings.replay.buffer_size, seed=self.config.training.seed + 1000 + k)
            buffer.extend(data.train)
            self.buffers[name] = buffer
        if self.strategy == "ewc" and k < len(self.tasks.names) - 1:
            path = self.stage_dir(k) / "fisher.safetensors"
            if fresh or not path.exists():
                self.fisher = self._estimate_fisher(k)
                from safetensors.torch import save_file

                save_file({n: f.contiguous() for n, f in self.fisher.items()}, str(path))
            else:
                from safetensors.torch import load_file

                self.fisher = load_file(str(path))
        if not fresh:
            if self.stage_adapters is not None:
                self.model = self.stage_adapters.begin(name)
                self.stage_adapters.load_weights(name, self.stage_dir(k) / "output")
            else:
                self.pending_restore = k

    def _estimate_fisher(self, k: int) -> dict[str, torch.Tensor]:
        opts, data = self.settings.ewc, self.tasks.data[k]
        rng = random.Random(self.config.training.seed + 2000 + k)
        rows = rng.sample(data.train, min(opts.fisher_batches, len(data.train)))
        inner = self.method.loss_module(self.tasks.configs[k], self.model, data)
        started = time.perf_counter()
        fisher = penalties.diagonal_fisher(
            inner,
            rows,
            partial(self.method.collate, tokenizer=self.tokenizer),
            device=self.accelerator.device,
            params=penalties.trainable_parameters(self.model),
        )
        raw_mean = float(sum(f.double().sum() for f in fisher.values()) / sum(f.numel() for f in fisher.values()))
        if opts.normalize:
            fisher = penalties.normalized(fisher)
        if opts.accumulate and self.fisher is not None:
            fisher = {n: f + self.fisher[n] for n, f in fisher.items()}
        console.print(
            f"EWC: diagonal Fisher of {self.tasks.names[k]} over {len(rows)} rows "
            f"({time.perf_counter() - started:.0f} s, raw mean {raw_mean:.3g})"
        )
        self.state.setdefault("fisher", {})[self.tasks.names[k]] = {"rows": len(rows), "raw_mean": raw_mean}
        return fisher

    def restore(self) -> None:
        """Load the weights a resumed run's next stage starts from (the last finished stage's output)."""
        if self.pending_restore is None:
            return
        output = self.stage_dir(self.pending_restore) / "output"
        from safetensors.torch import load_file

        if self.peft_single:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(self.model, load_file(str(output / "adapter_model.safetensors")))
        else:
            state = {}
            for shard in sorted(output.glob("*.safetensors")):
                state.update(load_file(str(shard)))
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            tied = {n for n in missing if n.endswith("lm_head.weight")}
            if set(missing) - tied or unexpected:
                raise RuntimeError(
                    f"{output}: does not match the model (missing {sorted(missing)[:3]}, "
                    f"unexpected {sorted(unexpected)[:3]})"
                )
        console.print(f"Resumed from the end of stage {self.pending_restore + 1}: {output}")
        self.pending_restore = None

    def elapsed(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.session_started

    def save_state(self) -> None:
        self.state["elapsed_seconds"] = round(self.elapsed(), 2)
        save_json(self.run_dir / STATE_FILE, self.state)

    # ------------------------------------------------------------------ scoring

    def score_row(self, label: str) -> dict:
        """Every task's score (and metrics) with the model as it is now, plus general perplexity."""
        metrics = {name: self._task_metrics(j, label) for j, name in enumerate(self.tasks.names)}
        scores = [pick_score(metrics[name], self.metric, name) for name in self.tasks.names]
        ppl = None
        if self.tasks.general:
            ppl = general_perplexity(
                self.method, self.tasks.configs[0], self.model, self.tasks.general, self.tokenizer, self.accelerator
            )
        shown = ", ".join(f"{n} {s:.3f}" for n, s in zip(self.tasks.names, scores))
        console.print(f"after {label}: {self.metric} {shown}" + (f"; general perplexity {ppl:.2f}" if ppl else ""))
        return {"scores": scores, "metrics": metrics, "general_perplexity": ppl}

    def _task_metrics(self, j: int, label: str, routed: bool = True) -> dict:
        """Task j's held-out metrics by the method's own evaluation on that stage's config.

        ``routed``: with ``adapter.inference: route``, answer with task j's own adapter (else: as set now)."""
        cfg, data = self.tasks.configs[j], self.tasks.data[j]
        use = self.stage_adapters.for_task(j) if routed and self.stage_adapters is not None else nullcontext()
        with use:
            ctx = EvalContext(cfg, self.tokenizer, data, self.accelerator, f"{label}: task {self.tasks.names[j]}")
            return self.method.evaluate(self.model, ctx)["metrics"]

    def _task_score(self, j: int, label: str, routed: bool = True) -> float:
        return pick_score(self._task_metrics(j, label, routed), self.metric, self.tasks.names[j])

    def wise_ft(self, k: int, start: dict) -> dict:
        params = penalties.trainable_parameters(self.model)
        keep = lora_a_names(params, start)

        def score():
            new = self._task_score(k, "wise-ft")
            old = [self._task_score(j, "wise-ft") for j in range(k)]
            return new, (sum(old) / len(old) if old else None)

        console.print(f"WiSE-FT after {self.tasks.names[k]}: α ∈ {self.settings.wise_ft.alphas}")
        return {"stage": self.tasks.names[k], **sweep(params, start, self.settings.wise_ft.alphas, score, keep)}

    def merged_rows(self) -> dict:
        """After the last stage: each requested merge of the stage adapters, scored on every task."""
        sa, opts = self.stage_adapters, self.settings.adapter
        rows, outputs = {}, {}
        if sa is None or not opts.merge or len(sa.names) < 2:
            return rows
        for how in opts.merge:
            merged = f"merged_{how}"
            kwargs = {"density": opts.density} if how in ("ties", "dare_linear", "dare_ties") else {}
            sa.model.add_weighted_adapter(
                adapters=list(sa.names),
                weights=[1.0] * len(sa.names),
                adapter_name=merged,
                combination_type=how,
                **kwargs,
            )
            sa.model.base_model.set_adapter(merged)
            rows[f"merged ({how})"] = [self._task_score(j, merged, routed=False) for j in range(len(sa.names))]
            folder = self.run_dir / "output" / merged
            folder.parent.mkdir(parents=True, exist_ok=True)
            sa.save(merged, folder)
            outputs[how] = str(folder)
            sa._activate(sa.names if sa.inference == "sum" else [sa.current])
            sa.model.delete_adapter(merged)
        self.state["merged_outputs"] = outputs
        return rows

    # ------------------------------------------------------------------ the end

    def finish(self):
        """summary.json, matrix.csv, report.html and the R table (``continual/summary.py``)."""
        from .summary import finish

        return finish(self)


def load_state(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / STATE_FILE).read_text())
