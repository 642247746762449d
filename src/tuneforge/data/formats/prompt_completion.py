"""Prompt/completion pairs, and the alpaca shape (``instruction``/``input``/``output``).

The shape is detected per record: ``prompt``/``completion`` when a ``prompt``
field is present, else alpaca when ``instruction`` is present (Taori et al.
2023, Stanford Alpaca; ``input`` optional and may be empty).

Rendering (shared with natural_instructions through :func:`render`):

- chat: ``[system?] + user(prompt) + assistant(completion)`` through the
  tokenizer's chat template (``data/templates.py``), loss on the assistant span
  (content + end-of-turn token).
- plain: ``[BOS?] + prompt + completion + EOS``, each part tokenized on its own
  so the generation prompt is exactly the training prefix; loss on completion
  + EOS. Raw ``prompt``/``completion`` are joined verbatim (you own the
  separator, as in TRL's prompt-completion format). Prompts tuneforge builds
  itself (alpaca, natural instructions) end with a label such as ``Output:``
  and the completion follows after one space, so the answer starts with the
  usual space-prefixed BPE token; the reference answer has no such space.

With ``completion_only_loss=False`` every token is a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tuneforge.data.formats import RenderSettings, bos_prefix, eos_id
from tuneforge.data.templates import render_conversation, render_prompt
from tuneforge.data.types import IGNORE_INDEX, Example, GenerationSample, Record

VERSION = 1
FIELDS = ("prompt", "completion", "instruction", "input", "output")


@dataclass
class PromptCompletion:
    """One SFT pair, before tokenization."""

    prompt: str  # the user message (chat) / the prompt text (plain)
    completion: str
    where: str
    plain_prompt: str | None = None  # plain-mode prompt when it differs from ``prompt``
    plain_space: bool = False  # plain mode: completion follows the prompt after one space
    display: str = ""  # human-readable prompt for reports (default: prompt)
    references: list[str] = field(default_factory=list)  # all acceptable answers (default: [completion])


def _string(record: Record, name: str, problems: list[str], *, required: bool, non_empty: bool = False) -> str | None:
    value = record.data.get(name)
    if value is None:
        if required:
            present = ", ".join(record.data) or "none"
            problems.append(f"{record.where}: {name}: missing (fields present: {present})")
        return None
    if not isinstance(value, str):
        problems.append(f"{record.where}: {name}: must be a string (got {type(value).__name__})")
        return None
    if non_empty and not value.strip():
        problems.append(f"{record.where}: {name}: must not be empty")
        return None
    return value


def parse(record: Record, problems: list[str]) -> PromptCompletion | None:
    """Validate one record; append ``where: field: problem`` lines and return None if bad."""
    before = len(problems)
    if "prompt" in record.data or "instruction" not in record.data:
        prompt = _string(record, "prompt", problems, required=True)
        completion = _string(record, "completion", problems, required=True, non_empty=True)
        if len(problems) > before:
            return None
        return PromptCompletion(prompt, completion, record.where)
    instruction = _string(record, "instruction", problems, required=True, non_empty=True)
    extra = _string(record, "input", problems, required=False) or ""
    output = _string(record, "output", problems, required=True, non_empty=True)
    if len(problems) > before:
        return None
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    plain = f"{instruction}\n\nInput: {extra}\n\nOutput:" if extra.strip() else f"{instruction}\n\nOutput:"
    return PromptCompletion(user, output, record.where, plain_prompt=plain, plain_space=True)


def _messages(pair: PromptCompletion, settings: RenderSettings) -> list[dict]:
    system = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
    return system + [{"role": "user", "content": pair.prompt}]


def _plain_parts(tokenizer, pair: PromptCompletion, settings: RenderSettings) -> tuple[list[int], list[int]]:
    prompt = pair.plain_prompt if pair.plain_prompt is not None else pair.prompt
    if settings.system_prompt:
        prompt = f"{settings.system_prompt}\n\n{prompt}"
    completion = (" " if pair.plain_space else "") + pair.completion
    prompt_ids = bos_prefix(tokenizer) + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [eos_id(tokenizer)]
    return prompt_ids, completion_ids


def render(tokenizer, pair: PromptCompletion, settings: RenderSettings) -> Example:
    """Training ids and labels of one pair."""
    if settings.chat:
        messages = _messages(pair, settings) + [{"role": "assistant", "content": pair.completion}]
        ids, labels = render_conversation(tokenizer, messages, settings.completion_only_loss)
        return Example(ids, labels, pair.where)
    prompt_ids, completion_ids = _plain_parts(tokenizer, pair, settings)
    ids = prompt_ids + completion_ids
    if settings.completion_only_loss:
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    else:
        labels = list(ids)
    return Example(ids, labels, pair.where)


def sample(tokenizer, pair: PromptCompletion, settings: RenderSettings) -> GenerationSample:
    """The generation prompt (exact prefix of :func:`render`'s ids) and reference answer(s)."""
    if settings.chat:
        prompt_ids = render_prompt(tokenizer, _messages(pair, settings))
    else:
        prompt_ids, _ = _plain_parts(tokenizer, pair, settings)
    return GenerationSample(
        prompt_ids=prompt_ids,
        prompt=pair.display or pair.prompt,
        reference=pair.completion,
        where=pair.where,
        references=pair.references or [pair.completion],
    )


def conversation(pair: PromptCompletion, settings: RenderSettings) -> list[dict]:
    """The chat messages a pair renders as (for template checks)."""
    return _messages(pair, settings) + [{"role": "assistant", "content": pair.completion}]
