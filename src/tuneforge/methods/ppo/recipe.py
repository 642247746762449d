"""`method: ppo`: RLHF with PPO — policy (full or adapter), reference, value head, reward sources.

The objective is InstructGPT's ``E[r(x, y)] − β·KL(π_θ ‖ π_ref)`` (Ouyang et al.
2022, arXiv 2203.02155; Ziegler et al. 2019, arXiv 1909.08593), optimised with
PPO's clipped surrogate (Schulman et al. 2017, arXiv 1707.06347) as detailed
by Huang et al. 2024, "The N Implementation Details of RLHF with PPO"; or with
group-relative advantages and no value model (GRPO, Shao et al. 2024, arXiv
2402.03300; RLOO, Ahmadian et al. 2024, arXiv 2402.14740). Formulas and
defaults: METHODS.md, "RLHF with PPO".

One training step is one rollout (``trainer.py``); this method brings its own
loop through the runner's optional ``total_steps`` / ``run_training`` hooks and
everything else through the shared interface. Pieces:

- the policy: the causal LM (``causal_lm.CausalLM`` builds, saves and loads it:
  a standard folder or peft adapter), dropout switched off (Huang et al.: the
  ratio must compare two identical forward passes);
- the reference: the policy with its adapters disabled, or a frozen copy for
  full / selective fine-tuning (``rollout.Reference``);
- the value head (``value_head.py``) for ``advantage: gae``, saved as
  ``value_head.safetensors`` in the output folder;
- the reward sources (``rewards.py``), loaded on first use.
"""

from __future__ import annotations

import copy
import math
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ...interface import CAUSAL_LM, Batch, EvalContext, Method, MethodData
from ..causal_lm import CausalLM
from .config import PpoConfig

_CAUSAL = CausalLM(name="ppo", config_class=PpoConfig)
# policy → its value head, for ``save`` (which the runner hands the policy alone)
_VALUE_HEADS: weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module] = weakref.WeakKeyDictionary()


@dataclass
class PpoState:
    """Shared by evaluation and training (``MethodData.extra["ppo"]``): the rewards, and the frozen
    reference once ``loss_module`` made one (None: the reference is the policy with adapters disabled)."""

    rewards: object
    frozen_reference: torch.nn.Module | None = None
    facts: dict = field(default_factory=dict)


def disable_dropout_in_place(model: torch.nn.Module) -> None:
    """Every dropout probability of ``model`` set to 0 (PPO's old and new log-probs must agree)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _eval_settings(config):
    from .evaluation import EvalSettings

    g = config.generation
    return EvalSettings(
        seed=config.eval.seed,
        batch_size=config.eval.batch_size,
        max_new_tokens=g.max_new_tokens,
        temperature=g.temperature,
        top_k=g.top_k,
        top_p=g.top_p,
    )


@dataclass(frozen=True)
class Ppo(Method):
    name: str = "ppo"
    config_class: type = PpoConfig
    model_kinds: tuple[str, ...] = (CAUSAL_LM,)
    peft_task_type: str = "CAUSAL_LM"
    count_name: str = "response_tokens"

    # ------------------------------------------------------------------ checks and data

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        from ...data.types import DataError
        from .rewards import check_sources

        errors, warnings = check_sources(config.reward.sources), []
        errors += _option_problems(config)
        try:
            data = self.load_data(config, tokenizer)
        except DataError as exc:
            return list(exc.problems) + errors, warnings, {}
        facts = data.facts
        if config.eval is not None and not data.eval:
            errors.append(
                "eval: needs held-out prompts; set data.eval to a file or data.eval_fraction (e.g. 0.1), or eval: null"
            )
        if facts["truncated"]:
            warnings.append(
                f"{facts['truncated']} prompt(s) were longer than data.max_prompt_length="
                f"{config.data.max_prompt_length} tokens and keep their last tokens"
            )
        lr, full = config.training.learning_rate, config.adapter is None
        if lr > (1e-5 if full else 1e-4):
            warnings.append(
                f"training.learning_rate {lr:g} is high for PPO (usual: 1e-6 … 1e-5 full, 1e-5 … 1e-4 with an adapter)"
            )
        p = config.ppo
        facts["data"] = (
            f"{facts['prompts']} training / {facts['eval_prompts']} held-out prompts; "
            f"{self.total_steps(config, data, 1)} rollouts of {p.rollout_batch_size} prompts × "
            f"{p.group_size} response(s), {p.advantage} advantages; reward: "
            + " + ".join(f"{s.weight:g}·{s.kind} {s.spec}" for s in config.reward.sources)
        )
        return errors, warnings, facts

    def load_data(self, config, tokenizer) -> MethodData:
        from .data import load_prompts
        from .rewards import Rewards

        splits = load_prompts(config.data, tokenizer)
        held = splits.eval[: config.eval.num_prompts] if config.eval and config.eval.num_prompts else splits.eval
        batch = config.eval.batch_size if config.eval else config.training.batch_size
        state = PpoState(
            Rewards(config.reward.sources, tokenizer=tokenizer, dtype=config.model.dtype, batch_size=batch)
        )
        facts = {
            "prompts": len(splits.train),
            "eval_prompts": len(held),
            "truncated": splits.truncated,
            "tokens": sum(len(r.input_ids) for r in splits.train),
            "chat_template": splits.chat,
        }
        return MethodData(train=splits.train, eval=held, extra={"ppo": state}, facts=facts)

    def total_steps(self, config, data: MethodData, processes: int) -> int:
        """Rollouts: ``training.max_steps``, else ``training.epochs`` passes over the prompts (one process)."""
        if config.training.max_steps is not None:
            return config.training.max_steps
        return max(1, math.ceil(config.training.epochs * len(data.train) / config.ppo.rollout_batch_size))

    def describe_step(self, config, processes: int) -> str:
        return ""  # a step is a rollout, which `validate`'s data line already describes

    # ------------------------------------------------------------------ model and loss

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        return _CAUSAL.build_model(config, data, dtype=dtype)

    def loss_module(self, config, model: torch.nn.Module, data: MethodData) -> torch.nn.Module:
        from ...adapters.config import SELECTIVE
        from .update import PpoLoss
        from .value_head import ValueHead, hidden_size_of

        disable_dropout_in_place(model)
        state: PpoState = data.extra["ppo"]
        if config.adapter is None or config.adapter.type in SELECTIVE:
            # Training changes the base weights themselves: keep the untrained ones as the reference.
            frozen = copy.deepcopy(model).eval()
            frozen.requires_grad_(False)
            state.frozen_reference = frozen
        head = None
        if config.ppo.advantage == "gae":
            head = ValueHead(hidden_size_of(model)).to(next(model.parameters()).device)
            _VALUE_HEADS[model] = head
        p = config.ppo
        return PpoLoss(
            model,
            head,
            clip=p.clip,
            value_clip=p.value_clip,
            vf_coef=p.vf_coef,
            entropy_coef=p.entropy_coef,
            temperature=config.generation.temperature,
        )

    def collate(self, rows: list, tokenizer) -> Batch:
        """Prompt rows → a left-padded batch (generation's layout)."""
        width = max(len(r.input_ids) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, width - len(row.input_ids) :] = torch.tensor(row.input_ids)
            mask[b, width - len(row.input_ids) :] = 1
        return Batch(inputs={"input_ids": ids, "attention_mask": mask}, count=len(rows), tokens=int(mask.sum()))

    # ------------------------------------------------------------------ planning

    def plan_profile(self, config):
        from ...planning.profile import PlanProfile

        return PlanProfile(lm_head=True)  # the policy's log-probs at every response token

    def plan_step(self, config, data, facts, processes):
        from .plan import ppo_step

        return ppo_step(config, data, facts, processes)

    def plan_extras(self, config, inputs):
        from .plan import ppo_extras

        return ppo_extras(config, inputs)

    def chance_loss(self, config, model, data) -> float | None:
        return None  # PPO's loss has no chance level (it is not a likelihood)

    # ------------------------------------------------------------------ training

    def run_training(self, *, config, data: MethodData, tokenizer, **loop):
        """The rollout → update loop (``trainer.run_ppo``), called by the runner instead of the shared loop.

        Of the shared loop's arguments (``loop``) it uses the prepared modules, the run folder, the resume
        state and the step count; rows, collate and the divergence watch are the shared loop's own."""
        loss_model, optimizer, accelerator = loop["loss_model"], loop["optimizer"], loop["accelerator"]
        from .rollout import Reference
        from .trainer import Parts, PpoSettings, run_ppo
        from .update import UpdateSettings

        state: PpoState = data.extra["ppo"]
        p, g, t = config.ppo, config.generation, config.training
        policy = accelerator.unwrap_model(loss_model).model
        reference = Reference(policy, state.frozen_reference)
        from .evaluation import evaluate_policy

        def held_out() -> dict:  # every training.eval_every steps
            result = evaluate_policy(policy, reference, state.rewards, tokenizer, data.eval, _eval_settings(config))
            return {f"eval_{k}": v for k, v in result["metrics"].items()}

        update = UpdateSettings(
            ppo_epochs=p.ppo_epochs,
            minibatch_size=p.minibatch_size,
            micro_batch_size=t.batch_size,
            group_size=p.group_size,
            kl_estimator=p.kl_estimator,
            gamma=p.gamma,
            lam=p.lam,
            whiten_advantages=p.whiten_advantages,
            advantage=p.advantage,
            temperature=g.temperature,
            max_grad_norm=t.max_grad_norm,
        )
        ppo_settings = PpoSettings(
            total_steps=loop["settings"].total_steps,
            rollout_batch_size=p.rollout_batch_size,
            seed=t.seed,
            update=update,
            max_new_tokens=g.max_new_tokens,
            top_k=g.top_k,
            top_p=g.top_p,
            kl_coef=p.kl_coef,
            adaptive_target=p.adaptive_kl.target if p.adaptive_kl else None,
            adaptive_horizon=p.adaptive_kl.horizon if p.adaptive_kl else 10000,
            missing_eos_penalty=config.reward.missing_eos_penalty,
            save_every=t.save_every,
            keep_checkpoints=t.keep_checkpoints,
            log_every=t.log_every,
            eval_every=t.eval_every,
        )
        parts = Parts(
            rewards=state.rewards,
            reference=reference,
            prompts=data.train,
            tokenizer=tokenizer,
            evaluate=held_out if config.eval is not None and data.eval else None,
        )
        return run_ppo(
            loss_model=loss_model,
            optimizer=optimizer,
            scheduler=loop["scheduler"],
            accelerator=accelerator,
            parts=parts,
            settings=ppo_settings,
            run_dir=loop["run_dir"],
            start_state=loop["start_state"],
            adapter_model=loop.get("adapter_model"),
            after_step=loop.get("after_step"),
            on_eval=loop.get("on_eval"),
        )

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model, ctx: EvalContext) -> dict:
        """Mean reward (per source too), KL to the reference, response length on held-out prompts."""
        from .evaluation import evaluate_policy
        from .rollout import Reference

        config = ctx.config
        if config.eval is None or not ctx.data.eval or model is None or not ctx.accelerator.is_main_process:
            return {"metrics": {}, "samples": []}
        state: PpoState = ctx.data.extra["ppo"]
        # Before training the policy IS the reference (KL exactly 0); after, the frozen copy or the base.
        frozen = state.frozen_reference if ctx.label == "after" else None
        return evaluate_policy(
            model, Reference(model, frozen), state.rewards, ctx.tokenizer, ctx.data.eval, _eval_settings(config)
        )

    def periodic_metrics(self, loss: float) -> dict:
        return {}  # held-out reward and KL are logged by the PPO loop itself (training.eval_every)

    # ------------------------------------------------------------------ output

    def save(self, config, model, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        from .value_head import save_value_head

        _CAUSAL.save(config, model, output_dir, tokenizer, state_dict=state_dict)
        head = _VALUE_HEADS.get(model)
        if head is not None:
            save_value_head(head, output_dir)

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        return _CAUSAL.load_output(config, output_dir, dtype=dtype)


def _option_problems(config) -> list[str]:
    """What PPO cannot run with, each as one line naming the key."""
    from ...adapters.config import SOFT_PROMPTS

    problems = []
    adapter = config.adapter
    if adapter is not None and adapter.type in SOFT_PROMPTS:
        problems.append(
            f"adapter.type: {adapter.type} (virtual tokens) is not supported by PPO, whose log-probs and "
            "values come from the decoder's own forward; use lora, ia3 or bottleneck"
        )
    if adapter is not None and adapter.type == "adalora":
        problems.append(
            "adapter.type: adalora's rank schedule counts optimizer steps, which PPO takes several "
            "of per rollout; use lora"
        )
    if adapter is not None and adapter.type == "lora" and adapter.init in ("pissa", "olora"):
        problems.append(
            f"adapter.init: {adapter.init} moves part of each base weight into the adapter, so the base "
            "with adapters disabled is no longer the reference model; use init: default"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        problems.append(
            "method ppo runs in one process for now (rollouts are not yet split across processes); "
            "launch it without --num-processes or an accelerate config"
        )
    if config.training.gradient_accumulation_steps != 1:
        problems.append(
            "training.gradient_accumulation_steps: PPO accumulates micro-batches of training.batch_size "
            "up to ppo.minibatch_size itself; leave it at 1"
        )
    limit = _context_limit(config)
    needed = config.data.max_prompt_length + config.generation.max_new_tokens
    if limit and needed > limit:
        problems.append(
            f"data.max_prompt_length + generation.max_new_tokens = {needed} exceeds the model's context "
            f"of {limit} tokens; lower one of them"
        )
    return problems


def _context_limit(config) -> int | None:
    from transformers import AutoConfig

    from ...models.load import resolve_model

    try:
        model_config = AutoConfig.from_pretrained(
            resolve_model(config.model.name), trust_remote_code=config.model.trust_remote_code
        )
    except (OSError, ValueError):
        return None  # the shared checks report an unreadable model
    return getattr(model_config, "max_position_embeddings", None)


METHOD = Ppo()
