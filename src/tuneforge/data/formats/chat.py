"""OpenAI-style conversations: ``{"messages": [{"role": ..., "content": ...}, ...]}``.

Multi-turn, with optional system messages. Loss goes on every assistant turn
(content + its end-of-turn token) and nowhere else by default; see
``data/templates.py`` for how spans are found. A configured ``system_prompt``
is prepended to conversations that have no system message of their own.

When the tokenizer has no chat template (or the config says ``template:
plain``), conversations render with :data:`templates.PLAIN_CHAT_TEMPLATE`
("User:\\n…\\n\\nAssistant:\\n…<eos>") through the same code path.

The generation sample of a conversation is everything before its *last*
assistant turn (as the prompt) and that turn's content (as the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data.formats import RenderSettings
from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE, ROLES, render_conversation, render_prompt
from tuneforge.data.types import Example, GenerationSample, Record

VERSION = 1
FIELDS = ("messages",)


@dataclass
class Conversation:
    messages: list[dict]
    where: str


def parse(record: Record, problems: list[str]) -> Conversation | None:
    """Validate one record's ``messages``; append ``where: field: problem`` lines if bad."""
    where = record.where
    messages = record.data.get("messages")
    if messages is None:
        present = ", ".join(record.data) or "none"
        problems.append(f"{where}: messages: missing (fields present: {present})")
        return None
    clean = clean_messages(messages, "messages", where, problems)
    if clean is None:
        return None
    roles = [m["role"] for m in clean]
    if "assistant" not in roles:
        problems.append(f"{where}: messages: needs at least one assistant turn (nothing to learn otherwise)")
        return None
    first = next(i for i, r in enumerate(roles) if r != "system")
    if roles[first] != "user":
        problems.append(
            f"{where}: messages[{first}].role: the first non-system message must be from the user (got 'assistant')"
        )
        return None
    return Conversation(clean, where)


def clean_messages(value: object, name: str, where: str, problems: list[str]) -> list[dict] | None:
    """``value`` as a non-empty list of ``{role, content}`` (known roles, string contents), else None.

    Each problem is appended as ``where: name[i].field: problem``. Other keys (name, tool calls…)
    are dropped: the templates we support ignore them.
    """
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: {name}: must be a non-empty list of {{role, content}} objects")
        return None
    before = len(problems)
    clean = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            problems.append(f"{where}: {name}[{i}]: must be an object with role and content")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(f"{where}: {name}[{i}].role: must be one of {', '.join(ROLES)} (got {role!r})")
        if not isinstance(content, str):
            problems.append(f"{where}: {name}[{i}].content: must be a string (got {type(content).__name__})")
        clean.append({"role": role, "content": content})
    return clean if len(problems) == before else None


def check_prompt_turns(messages: list[dict], name: str, where: str, problems: list[str]) -> bool:
    """A chat prompt (what a model answers next) starts, after any system message, and ends with a user turn."""
    roles = [m["role"] for m in messages]
    first = next((i for i, r in enumerate(roles) if r != "system"), None)
    if first is None or roles[first] != "user" or roles[-1] != "user":
        problems.append(
            f"{where}: {name}: a chat prompt must start (after any system message) and end with a "
            f"user turn; the model writes the next assistant turn (roles: {', '.join(roles)})"
        )
        return False
    return True


def _chat_template(settings: RenderSettings) -> str | None:
    return None if settings.chat else PLAIN_CHAT_TEMPLATE


def with_system(conversation: Conversation, settings: RenderSettings) -> list[dict]:
    messages = conversation.messages
    if settings.system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": settings.system_prompt}] + messages
    return messages


def render(tokenizer, conversation: Conversation, settings: RenderSettings) -> Example:
    ids, labels = render_conversation(
        tokenizer,
        with_system(conversation, settings),
        settings.completion_only_loss,
        chat_template=_chat_template(settings),
    )
    return Example(ids, labels, conversation.where)


def sample(tokenizer, conversation: Conversation, settings: RenderSettings) -> GenerationSample:
    messages = with_system(conversation, settings)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    context = messages[:last]
    turns = [m for m in context if m["role"] != "system"]
    if len(turns) == 1:
        shown = turns[0]["content"]
    else:
        shown = "\n".join(f"{m['role']}: {m['content']}" for m in turns)
    return GenerationSample(
        prompt_ids=render_prompt(tokenizer, context, chat_template=_chat_template(settings)),
        prompt=shown,
        reference=messages[last]["content"],
        where=conversation.where,
        references=[messages[last]["content"]],
    )
