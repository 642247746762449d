"""Data formats: each module turns raw records into tokenised examples.

- ``text``: raw documents for continued pretraining (loss on every token).
- ``prompt_completion``: prompt/completion pairs, including the alpaca shape.
- ``chat``: OpenAI-style ``messages`` conversations.
- ``natural_instructions``: Natural Instructions v1 / Super-NaturalInstructions task files.

The SFT formats share :class:`RenderSettings` and go through one rendering path
(``data/templates.py`` for chat templates, :func:`prompt_completion.render` for
plain text), so training and generation see identical prompts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderSettings:
    """How SFT examples are rendered; flat values taken from the data config."""

    chat: bool  # True: the tokenizer's chat template; False: plain text
    completion_only_loss: bool = True
    system_prompt: str | None = None


def bos_prefix(tokenizer) -> list[int]:
    """The BOS id when this tokenizer adds one by default to plain text, else [].

    Chat templates write their own BOS; plain-text rendering follows the
    tokenizer's convention (Llama-style tokenizers add BOS, GPT-2/SmolLM2 do not).
    """
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    with_special = tokenizer("a")["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return [bos] if len(with_special) > len(without) and with_special[0] == bos else []


def eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token; plain-text rendering needs one to end each answer")
    return tokenizer.eos_token_id


def loss_tokens(labels: list[int]) -> int:
    """Tokens that carry loss once the engine shifts labels (labels[0] is never a target)."""
    return sum(1 for label in labels[1:] if label != -100)


def split_indices(n: int, fraction: float, seed: int | str) -> tuple[list[int], list[int]]:
    """Deterministic held-out split of ``range(n)``: ``(train, eval)``, each in original order.

    ``round(n * fraction)`` items are held out, at least one when ``fraction > 0``
    and never all of them (a split of fewer than 2 items holds nothing out).
    String seeds are hashed by ``random`` with SHA-512, so they are stable across runs.
    """
    import random

    if fraction <= 0 or n < 2:
        return list(range(n)), []
    n_eval = min(max(1, round(n * fraction)), n - 1)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])
