"""What `tuneforge plan` adds for PPO: a step is a rollout; reference, reward models, value head, KV cache."""

from __future__ import annotations

from pathlib import Path

from ...planning import memory as M
from ...planning.profile import PlanExtras, PlanInputs
from ...planning.steps import StepShape


def ppo_step(config, data, facts: dict | None, processes: int) -> StepShape:
    """A PPO step is a rollout; its training passes are minibatches of prompt + response sequences."""
    p, t = config.ppo, config.training
    responses = p.rollout_batch_size * p.group_size
    minibatch = p.minibatch_size or responses
    rows = len(data.train) if data is not None else int((facts or {}).get("prompts") or 0)
    prompt = (
        (sum(len(r.input_ids) for r in data.train) / max(rows, 1))
        if data is not None and rows
        else config.data.max_prompt_length
    )
    length = int(prompt + config.generation.max_new_tokens)
    max_length = config.data.max_prompt_length + config.generation.max_new_tokens
    steps = t.max_steps or max(1, -(-int(t.epochs * rows) // p.rollout_batch_size))
    updates = p.ppo_epochs * -(-responses // minibatch)
    how = "counted prompts" if data is not None else "max_prompt_length"
    return StepShape(
        steps=steps,
        micro_batches=updates,
        max_slots=minibatch * max_length,
        max_loss_positions=minibatch * config.generation.max_new_tokens,
        mean_slots=minibatch * length,
        mean_loss_positions=minibatch * config.generation.max_new_tokens,
        mean_tokens=minibatch * length,
        mean_seq_len=length,
        rows=rows,
        source=f"{how} ({rows:,} prompts) + max_new_tokens; {responses} responses per rollout, "
        f"{updates} minibatch updates",
    )


def ppo_extras(config, inputs: PlanInputs) -> PlanExtras:
    """Reference (a copy for full fine-tuning, the adapter off otherwise), each reward model, the value
    head, the rollout's KV cache; forwards: old log-probs, reference and each reward source per token."""
    params, p = inputs.params, config.ppo
    parts = []
    if config.adapter is None:
        parts.append(
            M.Part("reference model", params.frozen_bytes + params.trainable_bytes, "frozen copy of the policy")
        )
    else:
        parts.append(M.Part("reference model", 0, "the policy with adapters off: shared"))
    for source in config.reward.sources:
        if source.model or source.classifier:
            parts.append(_reward_model_part(source.model or source.classifier, params, inputs.notes))
    if p.advantage == "gae":
        parts.append(M.Part("value head", 4 * 4 * (inputs.arch.hidden + 1), "fp32 weights, gradients and AdamW state"))
    sequences = p.rollout_batch_size * p.group_size
    length = config.data.max_prompt_length + config.generation.max_new_tokens
    parts.append(
        M.Part(
            "generation cache",
            M.kv_cache_bytes(inputs.arch, sequences=sequences, length=length, compute_bytes=inputs.compute_bytes),
            "keys and values while sampling the rollout",
            phase="rollout",
        )
    )
    rollout_tokens = sequences * inputs.step.mean_seq_len
    return PlanExtras(
        parts=parts,
        forward_tokens=rollout_tokens * (2 + len(config.reward.sources)),
        generated_tokens=sequences * config.generation.max_new_tokens,
    )


def _reward_model_part(path: str, params, notes: list[str]) -> M.Part:
    """A reward / classifier model's weights from its config.json; the policy's size when unreadable."""
    from ...adapters.checks import meta_model
    from ...planning.plan import read_model_config

    for folder in (Path(path) / "model", Path(path)):
        if (folder / "config.json").exists():
            model = meta_model(read_model_config(str(folder)), "SEQ_CLS", 1)
            n = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
            return M.Part(f"reward model {Path(path).name}", 4 * n, f"{n:,} parameters, fp32")
    notes.append(f"reward model {path} not found: assumed the size of the policy's base")
    return M.Part(
        f"reward model {Path(path).name}",
        params.frozen_bytes + params.trainable_bytes,
        "assumed: same size as the policy",
    )
