"""`method: dpo`: preference optimisation of a causal LM against a frozen reference.

DPO (Rafailov et al. 2023, arXiv 2305.18290) trains the policy directly on
preference pairs, ``−log σ(β[(logp_θ − logp_ref)(y_w) − (logp_θ − logp_ref)(y_l)])``,
with no reward model and no sampling; ``loss.type`` picks a variant instead
(cdpo, robust, ipo, hinge, simpo, orpo, kto; each function cites its paper in
``methods/preference/losses.py``). Full fine-tuning or any adapter.

- Data (``data.py``): every feedback form of ``methods/preference``; pairs for
  the paired losses, judged responses for kto.
- Reference (``reference.py``): the base with adapters switched off when there
  is an adapter; log-probs precomputed once for full fine-tuning; or a frozen copy.
- Loss (``loss.py``): chosen and rejected in one forward, by default one row
  per pair with the prompt computed once (``pair_forward``); rewards,
  accuracies and log-probs logged every step beside the loss.
- Evaluation (``evaluate.py``): held-out implicit-reward accuracy and margin
  before and after (exactly 0 before, when policy = reference), and greedy
  answers to a few held-out prompts for the report.
- Output: as sft writes it (``methods/causal_lm/``): an adapter folder plain
  peft loads, or a full model folder plain transformers loads.

``count_name`` is ``examples``: a pair for the paired losses, a judged response
for kto (one static name for both; "pairs" would be wrong for kto).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ...interface import CAUSAL_LM, Batch, EvalContext, Method, MethodData
from ..causal_lm import CausalLM
from .config import DpoConfig, reference_kind, shares_prompt

_LM = CausalLM(name="dpo", config_class=DpoConfig)  # model loading and output, shared with sft / cpt
KTO_BALANCE = (1.0, 4 / 3)  # the KTO paper (arXiv 2402.01306) recommends λ_D·n_D / (λ_U·n_U) in [1, 4/3]


@dataclass(frozen=True)
class Dpo(Method):
    name: str = "dpo"
    config_class: type = DpoConfig
    model_kinds: tuple[str, ...] = (CAUSAL_LM,)
    peft_task_type: str = "CAUSAL_LM"
    count_name: str = "examples"

    # ------------------------------------------------------------------ checks and data

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        from ...data.types import DataError
        from .data import load_preferences

        try:
            splits = load_preferences(config, tokenizer)
        except DataError as exc:
            return list(exc.problems), [], {}
        errors: list[str] = []
        if config.eval is not None and not splits.eval:
            errors.append(
                "eval: needs held-out data; set data.eval to a file or data.eval_fraction (e.g. 0.1), or "
                "turn evaluation off with eval: null"
            )
        warnings = list(splits.warnings)
        if config.loss.type == "kto":
            good = config.loss.desirable_weight * splits.facts["desirable"]
            bad = config.loss.undesirable_weight * splits.facts["undesirable"]
            if bad == 0 or good == 0:
                warnings.append(
                    f"loss.type kto: the training data has only {'desirable' if bad == 0 else 'undesirable'} examples"
                )
            elif not KTO_BALANCE[0] <= good / bad <= KTO_BALANCE[1]:
                warnings.append(
                    f"loss.type kto: desirable_weight·n_desirable / undesirable_weight·n_undesirable = "
                    f"{good / bad:.2f}; the KTO paper recommends 1 to 4/3 (adjust the weights)"
                )
        return errors, warnings, splits.facts

    def load_data(self, config, tokenizer) -> MethodData:
        from .data import load_preferences

        splits = load_preferences(config, tokenizer)
        return MethodData(
            train=splits.train,
            eval=splits.eval,
            facts=splits.facts,
            extra={"samples": splits.samples, "reference": None, "pad_token_id": tokenizer.pad_token_id},
        )

    # ------------------------------------------------------------------ model and loss

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        from .data import PairRow

        model = _LM.build_model(config, data, dtype=dtype)
        shared = shares_prompt(config, model.config)  # decided here, before any batch (the "before" scores)
        for row in data.train + data.eval:
            if isinstance(row, PairRow):
                row.shared_prompt = shared
        return model

    def loss_module(self, config, model: torch.nn.Module, data: MethodData) -> torch.nn.Module:
        from .loss import PreferenceLoss
        from .reference import build_reference

        # Built before the first step (and, on --resume, before the checkpoint's weights are loaded),
        # so the model here is the policy at initialisation.
        reference = build_reference(
            reference_kind(config),
            model,
            data.train + data.eval,
            pad_id=data.extra["pad_token_id"],
            batch_size=config.training.batch_size,
        )
        data.extra["reference"] = reference  # the "after" evaluation uses the same frozen copy
        return PreferenceLoss(
            model,
            loss=config.loss.type,
            options=config.loss.options(),
            sft_weight=config.loss.sft_weight,
            reference=reference,
        )

    def collate(self, rows: list, tokenizer) -> Batch:
        from .data import collate_rows

        return collate_rows(rows, tokenizer.pad_token_id)

    # ------------------------------------------------------------------ planning

    def plan_profile(self, config):
        from .plan import dpo_profile

        return dpo_profile(config)

    def plan_extras(self, config, inputs):
        from .plan import dpo_extras

        return dpo_extras(config, inputs)

    def chance_loss(self, config, model, data) -> float | None:
        # dpo / cdpo / robust start at ln 2 (every Δ = 0); the others have no level of a "uniform guess".
        fixed = config.loss.type in ("dpo", "cdpo", "robust") and not config.loss.sft_weight
        return math.log(2) if fixed else None

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model, ctx: EvalContext) -> dict:
        """Held-out metrics and samples on the main process (no collective needed)."""
        from .evaluate import generated_samples, heldout_metrics
        from .logps import base_logps

        out: dict = {"metrics": {}, "samples": []}
        config = ctx.config
        if config.eval is None or model is None or not ctx.accelerator.is_main_process:
            return out
        kind = reference_kind(config)
        # With adapters off, the reference is whichever model is scored (after a sharded run, the reloaded one).
        reference = (
            (lambda sequences: base_logps(model, sequences))
            if kind == "adapter_disabled"
            else ctx.data.extra.get("reference")
        )
        if ctx.data.eval:
            out["metrics"] = heldout_metrics(
                model,
                ctx.data.eval,
                loss=config.loss.type,
                options=config.loss.options(),
                sft_weight=config.loss.sft_weight,
                pad_id=ctx.tokenizer.pad_token_id,
                batch_size=config.eval.batch_size,
                reference_fn=reference,
                before=ctx.label == "before",
            )
        out["samples"] = generated_samples(
            model,
            ctx.tokenizer,
            ctx.data.extra.get("samples") or [],
            max_new_tokens=config.eval.max_new_tokens,
            batch_size=config.eval.batch_size,
        )
        return out

    def periodic_metrics(self, loss: float) -> dict:
        return {"eval_loss": round(loss, 6)}

    # ------------------------------------------------------------------ output

    def save(self, config, model, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        _LM.save(config, model, output_dir, tokenizer, state_dict=state_dict)

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        return _LM.load_output(config, output_dir, dtype=dtype)


METHOD = Dpo()
