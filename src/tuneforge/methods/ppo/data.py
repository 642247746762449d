"""Prompt files → prompt ids for rollouts.

A row is ``{"prompt": str}`` or ``{"messages": [...]}`` whose turns start (after
any system message) and end with a user turn. Rendering goes through the SFT
formats' one path, so a PPO prompt is token-for-token the prompt SFT trained on:

- chat (the tokenizer's chat template, ``data.template`` auto / chat):
  ``templates.render_prompt([system?] + user turns)``, ending where the
  assistant's answer starts;
- plain: a string prompt is continued as it is (``[BOS?] + prompt``, the
  prompt_completion format's plain prompt: the DPO paper's review prefixes),
  messages use ``PLAIN_CHAT_TEMPLATE``.

Prompts longer than ``max_prompt_length`` keep their *last* tokens (the end is
where generation continues). Every bad row is one ``file:line: field: problem``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...data.formats import RenderSettings, split_indices
from ...data.formats import prompt_completion as pc
from ...data.formats.chat import check_prompt_turns, clean_messages
from ...data.sources import read_records
from ...data.templates import PLAIN_CHAT_TEMPLATE, TemplateError, render_prompt, use_chat_template
from ...data.types import DataError, Record


@dataclass
class PromptRow:
    input_ids: list[int]  # the rendered prompt; the response is sampled after it
    text: str  # what reward functions / classifiers read as the prompt: the string, or the last user turn
    display: str  # for the report
    messages: list[dict] | None  # chat prompts (system prompt included), to re-render for a reward model
    where: str = ""


@dataclass
class PromptSplits:
    train: list[PromptRow]
    eval: list[PromptRow]
    truncated: int
    chat: bool


def parse_prompt(record: Record, problems: list[str]) -> str | list[dict] | None:
    """A record's prompt (a string or clean messages), or None with the problem appended."""
    data, where = record.data, record.where
    if "prompt" in data:
        value = data["prompt"]
        if isinstance(value, str):
            if not value.strip():
                problems.append(f"{where}: prompt: must not be empty")
                return None
            return value
        name = "prompt"
    elif "messages" in data:
        value, name = data["messages"], "messages"
    else:
        present = ", ".join(map(str, data)) or "none"
        problems.append(
            f'{where}: prompt: missing (fields present: {present}); write {{"prompt": "..."}} or '
            '{"messages": [...]} ending with a user turn'
        )
        return None
    messages = clean_messages(value, name, where, problems) if isinstance(value, list) else None
    if messages is None:
        if not isinstance(value, list):
            problems.append(f"{where}: {name}: must be a string or a list of {{role, content}} messages")
        return None
    return messages if check_prompt_turns(messages, name, where, problems) else None


def render(
    tokenizer,
    prompt: str | list[dict],
    *,
    chat: bool,
    system_prompt: str | None,
    max_prompt_length: int,
    where: str = "",
) -> tuple[PromptRow, bool]:
    """One prompt → (row, whether it was cut to its last ``max_prompt_length`` tokens)."""
    if isinstance(prompt, str) and not chat:
        settings = RenderSettings(chat=False, system_prompt=system_prompt)
        ids = pc.sample(tokenizer, pc.PromptCompletion(prompt, "", where), settings).prompt_ids
        text, display, messages = prompt, prompt, None
    else:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        if system_prompt and messages[0]["role"] != "system":
            messages = [{"role": "system", "content": system_prompt}] + messages
        try:
            ids = render_prompt(tokenizer, messages, chat_template=None if chat else PLAIN_CHAT_TEMPLATE)
        except TemplateError as err:
            raise DataError([f"{where}: {p}" for p in err.problems]) from None
        turns = [m for m in messages if m["role"] != "system"]
        text = turns[-1]["content"]
        display = text if len(turns) == 1 else "\n".join(f"{m['role']}: {m['content']}" for m in turns)
    cut = len(ids) > max_prompt_length
    return PromptRow(ids[len(ids) - max_prompt_length :] if cut else ids, text, display, messages, where), cut


def _read(source, tokenizer, cfg, chat: bool, problems: list[str]) -> tuple[list[PromptRow], int]:
    rows, truncated = [], 0
    for record in read_records(source, problems=problems):
        prompt = parse_prompt(record, problems)
        if prompt is None:
            continue
        row, cut = render(
            tokenizer,
            prompt,
            chat=chat,
            system_prompt=cfg.system_prompt,
            max_prompt_length=cfg.max_prompt_length,
            where=record.where,
        )
        rows.append(row)
        truncated += cut
    return rows, truncated


def load_prompts(cfg, tokenizer) -> PromptSplits:
    """Read, validate and render ``data.train`` / ``data.eval`` (or hold out ``eval_fraction``)."""
    try:
        chat = use_chat_template(tokenizer, cfg.template)
    except TemplateError as err:
        raise DataError([f"data.template: {p}" for p in err.problems]) from None
    problems: list[str] = []
    train, truncated = _read(cfg.train, tokenizer, cfg, chat, problems)
    held: list[PromptRow] = []
    if cfg.eval is not None:
        held, cut = _read(cfg.eval, tokenizer, cfg, chat, problems)
        truncated += cut
    if problems:
        raise DataError(problems)
    if not train:
        raise DataError([f"data.train: no prompts in {cfg.train}"])
    if cfg.eval is None and cfg.eval_fraction > 0:
        keep, out = split_indices(len(train), cfg.eval_fraction, cfg.seed)
        train, held = [train[i] for i in keep], [train[i] for i in out]
    if cfg.max_examples is not None:
        train = train[: cfg.max_examples]
    return PromptSplits(train, held, truncated, chat)
