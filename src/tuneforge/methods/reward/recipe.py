"""`method: reward`: a Bradley–Terry reward model from human feedback, full fine-tuning or an adapter.

The reward model of RLHF (Christiano et al. 2017, arXiv 1706.03741; InstructGPT,
Ouyang et al. 2022, arXiv 2203.02155): a causal LM with a scalar head read at the
last non-pad token, trained so that the preferred response of each comparison
scores higher, ``−log σ(r_w − r_l)``. A K-way ranking is one batch element whose
loss is the mean over its C(K,2) pairs (losses.py). Departures: optional per-pair
margins (Llama 2) and a centring term (TRL's ``center_rewards_coefficient``);
InstructGPT also normalises the trained model's scores with a bias so that
reference demonstrations average 0, which we leave to the consumer (PPO whitens
its advantages anyway).

Evaluated before and after on held-out comparisons: strict pairwise accuracy
(ties count as wrong, so a model that scores everything alike gets 0), the mean
margin r_w − r_l, the loss, and the mean score. Output: see model.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ...interface import CAUSAL_LM, Batch, EvalContext, Method, MethodData
from ..heldout import evaluates_here, length_sorted_batches
from .config import RewardConfig


@dataclass(frozen=True)
class Reward(Method):
    name: str = "reward"
    config_class: type = RewardConfig
    model_kinds: tuple[str, ...] = (CAUSAL_LM,)
    peft_task_type: str = "SEQ_CLS"  # peft trains and saves the new head (modules_to_save)
    count_name: str = "comparisons"  # a pair or a whole ranking; the loss is a mean per comparison
    num_labels: int = 1  # the head's outputs, for validate's parameter count (one scalar score)

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        from ...data.types import DataError

        errors: list[str] = []
        try:
            data = self.load_data(config, tokenizer)
        except DataError as exc:
            return list(exc.problems), [], {}
        if not data.eval and config.eval is not None:
            errors.append("eval: needs held-out data; set data.eval to a file or data.eval_fraction (e.g. 0.1)")
        facts = dict(data.facts)
        facts["examples"] = facts["comparisons"]
        facts["sources"] = data.extra["sources"]
        facts["data"] = (
            f"{facts['comparisons']} training / {facts['eval_comparisons']} held-out comparisons "
            f"({facts['pairs']} / {facts['eval_pairs']} pairs), {facts['tokens']} tokens; "
            + "; ".join(data.extra["sources"])
        )
        return errors, list(data.extra["warnings"]), facts

    def load_data(self, config, tokenizer) -> MethodData:
        from .data import load_feedback

        splits = load_feedback(config.data, tokenizer)
        return MethodData(
            train=splits.train,
            eval=splits.eval,
            extra={
                "chat": splits.chat,
                "prompts": splits.prompts,
                "sources": splits.sources,
                "warnings": splits.warnings,
                "pad_token_id": tokenizer.pad_token_id,
            },
            facts={
                "comparisons": len(splits.train),
                "pairs": sum(c.pairs for c in splits.train),
                "eval_comparisons": len(splits.eval),
                "eval_pairs": sum(c.pairs for c in splits.eval),
                "tokens": splits.tokens,
                "truncated": splits.truncated,
            },
        )

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        from .model import build_reward_model

        return build_reward_model(config.model, pad_token_id=data.extra["pad_token_id"], dtype=dtype)

    def loss_module(self, config, model: torch.nn.Module, data: MethodData) -> torch.nn.Module:
        from .losses import RewardLoss

        return RewardLoss(model, use_margin=config.loss.margin, center_coef=config.loss.center_coef)

    def collate(self, rows: list, tokenizer) -> Batch:
        from .data import collate_comparisons

        inputs = collate_comparisons(rows, tokenizer.pad_token_id)
        return Batch(inputs=inputs, count=len(rows), tokens=int(inputs["attention_mask"].sum()))

    def plan_profile(self, config):
        from ...planning.profile import PlanProfile

        return PlanProfile(sequences_per_item=2, head_outputs=1)  # chosen and rejected; one scalar score

    def chance_loss(self, config, model, data: MethodData) -> float | None:
        # Equal scores give ln 2 per comparison; with margins −log σ(−m) instead: no fixed level.
        margins = config.loss.margin and any(c.margin for c in data.train)
        return None if margins else math.log(2)

    def periodic_metrics(self, loss: float) -> dict:
        return {"eval_loss": round(loss, 6)}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model, ctx: EvalContext) -> dict:
        """Held-out metrics on the main process (the set is small; no collective needed)."""
        out: dict = {"metrics": {}, "samples": []}
        config = ctx.config
        if not evaluates_here(ctx, model):
            return out
        from .losses import comparison_losses

        rows = ctx.data.eval
        grid, mask = self._scores(model, ctx)  # (C, K) each
        margin = torch.tensor([r.margin or 0.0 for r in rows]) if config.loss.margin else None
        result = comparison_losses(grid, mask, margin=margin, center_coef=config.loss.center_coef)
        out["metrics"] = {
            "eval_loss": round(float(result.losses.mean()), 6),
            "accuracy": round(float(result.correct.mean()), 6),
            "margin": round(float(result.margins.mean()), 6),
            "mean_score": round(float(grid[mask].mean()), 6),
        }
        n = min(len(rows), config.eval.samples_in_report)
        out["samples"] = [self._sample(rows[i], grid[i][mask[i]].tolist(), ctx) for i in range(n)]
        return out

    @torch.no_grad()
    def _scores(self, model, ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(C, K) scores of every held-out comparison, best → worst, and the (C, K) mask of real ones."""
        from ...eval.generation import eval_mode
        from ..preference.data import group_scores
        from .losses import sequence_scores

        rows = ctx.data.eval
        device = next(model.parameters()).device
        k = max(len(r.responses) for r in rows)
        grid, mask = torch.zeros(len(rows), k), torch.zeros(len(rows), k, dtype=torch.bool)
        with eval_mode(model):
            for chunk in length_sorted_batches(rows, ctx.config.eval.batch_size):
                inputs = self.collate([rows[i] for i in chunk], ctx.tokenizer).inputs
                scores = sequence_scores(model, inputs["input_ids"].to(device), inputs["attention_mask"].to(device))
                part, real = group_scores(scores.cpu(), inputs["group"], inputs["rank"])  # (b, k_chunk)
                grid[chunk, : part.shape[1]], mask[chunk, : part.shape[1]] = part, real
        return grid, mask

    def _sample(self, row, scores: list[float], ctx: EvalContext) -> dict:
        prompt = ctx.data.extra["prompts"].get(row.where, "")
        if not isinstance(prompt, str):
            prompt = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
        texts = [
            ctx.tokenizer.decode(seq.input_ids[len(row.prompt_ids) :], skip_special_tokens=True).strip()
            for seq in row.responses
        ]
        pairs = [(i, j) for i in range(len(scores)) for j in range(i + 1, len(scores))]
        right = sum(scores[i] > scores[j] for i, j in pairs) / len(pairs)
        if len(texts) == 2:
            reference = f"chosen: {texts[0]}\nrejected: {texts[1]}"
            prediction = f"r(chosen) = {scores[0]:.3f}, r(rejected) = {scores[1]:.3f}"
        else:
            reference = "\n".join(f"{i + 1}. {t}" for i, t in enumerate(texts))
            prediction = "r in rank order: " + ", ".join(f"{s:.3f}" for s in scores)
        return {
            "prompt": prompt,
            "reference": reference,
            "prediction": prediction,
            "scores": {
                "accuracy": round(right, 6),
                "margin": round(sum(scores[i] - scores[j] for i, j in pairs) / len(pairs), 6),
            },
        }

    # ------------------------------------------------------------------ output

    def save(self, config, model, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        from ...data.templates import use_chat_template
        from .model import save_reward_model

        save_reward_model(
            config,
            model,
            output_dir,
            tokenizer,
            state_dict=state_dict,
            chat=use_chat_template(tokenizer, config.data.template),
        )

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        from .model import load_reward_model

        return load_reward_model(output_dir, dtype=dtype, trust_remote_code=config.model.trust_remote_code)[0]


METHOD = Reward()
