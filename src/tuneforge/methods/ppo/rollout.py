"""Rollouts: sample responses with the KV cache, and the one forward pass PPO's log-probs come from.

Sampling goes through ``model.generate`` (KV cache; ``PeftModel.generate``
works unchanged) on LEFT-padded prompts, in eval mode and without gradients, so
every response starts in the same column P. The rollout keeps that layout —
``(N, P + R)``: padding, prompt, response, padding after the stop token — and
every later forward (old / new log-probs, values, the reference) slices rows of
it, so a token's position and context are the same in all of them.

The response mask runs up to AND including the first stop token (eos,
``<|im_end|>``, the model's configured eos ids): the policy is trained to stop
(Huang et al. 2024, "The N Implementation Details of RLHF with PPO"). Tokens
after it are padding and carry nothing.

Log-probs divide the logits by the sampling temperature (as Huang et al. point
out, forgetting it is a classic bug): PPO's ratio and the KL penalty then
compare the distribution the tokens were actually drawn from. top_k / top_p truncation is not reflected in them
(as in TRL); the defaults leave both off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...eval.generation import eval_mode, stop_token_ids_for
from ..causal_lm.loss import output_logits
from .data import PromptRow
from .math import entropy_from_logits


@dataclass
class Rollout:
    """N sampled responses: N = prompts × group_size, the responses to one prompt adjacent."""

    input_ids: torch.Tensor  # (N, P + R) long: left-padded prompt, then the response
    attention_mask: torch.Tensor  # (N, P + R) long: 1 on prompt tokens and on the response through its stop token
    response_mask: torch.Tensor  # (N, R) bool: the response's tokens through the stop token
    prompts: list[PromptRow]  # (N,) the prompt of each response
    responses: list[str]  # (N,) decoded, stop token and special tokens removed
    ended: torch.Tensor  # (N,) bool: a stop token was produced
    prompt_width: int  # P

    @property
    def response_ids(self) -> torch.Tensor:  # (N, R)
        return self.input_ids[:, self.prompt_width :]

    def sequence_ids(self, row: int) -> list[int]:
        """Prompt + response through the stop token, without padding (what a reward model reads)."""
        return self.input_ids[row][self.attention_mask[row].bool()].tolist()


@torch.no_grad()
def sample_rollout(
    model,
    tokenizer,
    prompts: list[PromptRow],
    *,
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
) -> Rollout:
    """Sample ``group_size`` responses to each prompt (one ``generate`` call, global torch RNG)."""
    device = next(model.parameters()).device
    stops = stop_token_ids_for(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    rows = [p for p in prompts for _ in range(group_size)]
    width = max(len(p.input_ids) for p in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, p in enumerate(rows):
        input_ids[i, width - len(p.input_ids) :] = torch.tensor(p.input_ids)
        prompt_mask[i, width - len(p.input_ids) :] = 1  # from lengths: pad == eos must not hide prompt tokens
    with eval_mode(model):
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=prompt_mask.to(device),
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            min_new_tokens=0,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            eos_token_id=stops,
            pad_token_id=pad_id,
        )  # (N, P + R)
    response = output[:, width:].cpu()  # (N, R)
    is_stop = torch.isin(response, torch.tensor(stops))
    # Through the first stop token: positions whose count of earlier stop tokens is 0.
    before_stop = (is_stop.long().cumsum(-1) - is_stop.long()) == 0  # (N, R)
    ended = is_stop.any(-1)
    texts = []
    for i in range(len(rows)):
        keep = response[i][before_stop[i] & ~is_stop[i]]
        texts.append(tokenizer.decode(keep.tolist(), skip_special_tokens=True))
    attention = torch.cat([prompt_mask, before_stop.long()], dim=1)
    full = output.cpu().masked_fill(attention == 0, pad_id)
    return Rollout(full.to(device), attention.to(device), before_stop.to(device), rows, texts, ended, width)


def micro_batch(rollout: Rollout, rows: list[int], per_token: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The forward inputs of ``rows``: columns that are padding in every one of them trimmed.

    ``per_token``: (N, R) tensors to cut the same way (old log-probs, advantages, …). Old and new
    log-probs of a row come from the same trimmed layout whenever they share a micro-batch.
    """
    index = torch.tensor(rows, device=rollout.input_ids.device)
    mask = rollout.attention_mask[index]
    response = rollout.response_mask[index]
    width = rollout.prompt_width
    first = int(mask[:, :width].any(0).nonzero()[0])  # first column where some prompt starts
    used = int(response.any(0).nonzero()[-1]) + 1  # response columns some row still uses
    mask = mask[:, first : width + used]
    out = {
        "input_ids": rollout.input_ids[index, first : width + used],
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        "response_mask": response[:, :used],
    }
    out.update({name: t[index, :used] for name, t in per_token.items()})
    return out


@dataclass
class PolicyOutput:
    logp: torch.Tensor  # (B, R) log π(token) at temperature
    values: torch.Tensor | None  # (B, R) float32, V before each response token
    entropy: torch.Tensor | None  # (B, R) nats


def forward_policy(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    response_width: int,
    *,
    temperature: float,
    value_head=None,
    entropy: bool = False,
) -> PolicyOutput:
    """Log-probs (and values, entropy) of the last ``response_width`` tokens of ``input_ids`` (B, T).

    Runs the decoder directly and projects only the response positions through the output layer
    (the prompt's vocabulary logits are never needed). Adapters injected into the decoder (LoRA,
    IA³, bottleneck…) act as in the model's own forward; soft prompts are refused by the checks.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(base, base.base_model_prefix)
    hidden = decoder(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
    ).last_hidden_state  # (B, T, H)
    hidden = hidden[:, -response_width - 1 : -1]  # (B, R, H): the state each response token is sampled from
    logits = output_logits(base.config, base.get_output_embeddings(), hidden) / temperature  # (B, R, V) float32
    targets = input_ids[:, -response_width:]  # (B, R)
    logp = torch.gather(F.log_softmax(logits, dim=-1), 2, targets.unsqueeze(-1)).squeeze(-1)
    values = value_head(hidden) if value_head is not None else None
    ent = entropy_from_logits(logits) if entropy else None  # with grad when the loss has an entropy bonus
    return PolicyOutput(logp, values, ent)


class Reference:
    """log π_ref of response tokens (METHODS.md: policy and reference share weights when the policy is
    an adapter). ``frozen`` None: the policy itself with its adapters disabled (``adapters_disabled``; no
    second copy of the weights); otherwise a frozen copy of the base taken before training (full and
    selective fine-tuning, whose training changes the base weights themselves)."""

    def __init__(self, policy, frozen=None):
        self.policy = policy
        self.frozen = frozen

    @torch.no_grad()
    def logp(self, inputs: dict[str, torch.Tensor], *, temperature: float) -> torch.Tensor:
        """inputs: ``micro_batch`` output → log π_ref (B, R)."""
        from ...adapters import adapters_disabled

        args = (inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], inputs["response_mask"].shape[1])
        if self.frozen is not None:
            return forward_policy(self.frozen, *args, temperature=temperature).logp
        with adapters_disabled(self.policy):
            return forward_policy(self.policy, *args, temperature=temperature).logp
