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

Rows may carry ``tools`` (function schemas), assistant ``tool_calls`` and
``tool`` results: see ``data/tools.py`` for the checks and for how they render
with a template that reads ``tools`` and with one that does not (the fallback).
A call turn's reference is its calls in the fallback format
(``<tool_call>{"name": ..., "arguments": ...}</tool_call>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneforge.data import tools as tool_calls
from tuneforge.data.formats import RenderSettings
from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE, ROLES, render_conversation, render_prompt
from tuneforge.data.types import Example, GenerationSample, Record

VERSION = 2  # 2: tools, tool calls and tool results render (were dropped)
FIELDS = ("messages", "tools")


@dataclass
class Conversation:
    messages: list[dict]
    where: str
    tools: list[dict] | None = None  # the row's functions ({"name", "description", "parameters"}), if any


def parse(record: Record, problems: list[str]) -> Conversation | None:
    """Validate one record's ``messages``; append ``where: field: problem`` lines if bad."""
    where = record.where
    messages = record.data.get("messages")
    if messages is None:
        present = ", ".join(record.data) or "none"
        problems.append(f"{where}: messages: missing (fields present: {present})")
        return None
    functions = None
    if record.data.get("tools") is not None:
        functions = tool_calls.check_tools(record.data["tools"], "tools", where, problems)
        if functions is None:
            return None
    clean = clean_messages(messages, "messages", where, problems, tools=True)
    if clean is None:
        return None
    clean = tool_calls.check_tool_turns(clean, functions, where, problems)
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
    return Conversation(clean, where, functions)


def clean_messages(
    value: object, name: str, where: str, problems: list[str], *, tools: bool = False
) -> list[dict] | None:
    """``value`` as a non-empty list of ``{role, content}`` (known roles, string contents), else None.

    Each problem is appended as ``where: name[i].field: problem``. Other keys (name…) are dropped.
    With ``tools`` (SFT chat rows), ``tool`` messages pass too, and an assistant turn keeps its
    ``tool_calls`` (unchecked: ``data.tools.check_tool_turns`` does that) and may then have no content.
    """
    roles = (*ROLES, "tool") if tools else ROLES
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
        calls = message.get("tool_calls") if tools and role == "assistant" else None
        if calls is not None and content is None:
            content = ""  # a turn that only calls tools
        if role not in roles:
            problems.append(f"{where}: {name}[{i}].role: must be one of {', '.join(roles)} (got {role!r})")
        if not isinstance(content, str):
            problems.append(f"{where}: {name}[{i}].content: must be a string (got {type(content).__name__})")
        clean.append({"role": role, "content": content} | ({"tool_calls": calls} if calls is not None else {}))
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


def template_view(
    tokenizer, conversation: Conversation, settings: RenderSettings
) -> tuple[list[dict], list[dict] | None]:
    """``(messages, tools)`` as the chat template gets them (``tools`` None: not passed).

    Without tools: the messages with the system prompt. With tools: the template's own
    tool rendering when it reads ``tools``, else the fallback turns of ``data/tools.py``.
    """
    messages = with_system(conversation, settings)
    if conversation.tools is None:
        return messages, None
    if tool_calls.native_tools(tokenizer, settings.chat):
        return tool_calls.template_messages(messages), tool_calls.openai_tools(conversation.tools)
    return tool_calls.fallback_messages(messages, conversation.tools), None


def render(tokenizer, conversation: Conversation, settings: RenderSettings) -> Example:
    messages, tools = template_view(tokenizer, conversation, settings)
    ids, labels = render_conversation(
        tokenizer, messages, settings.completion_only_loss, chat_template=_chat_template(settings), tools=tools
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
        shown = "\n".join(f"{m['role']}: {tool_calls.assistant_text(m)}" for m in turns)
    prompt_messages, tools = template_view(tokenizer, Conversation(context, "", conversation.tools), settings)
    reference = tool_calls.assistant_text(messages[last])
    return GenerationSample(
        prompt_ids=render_prompt(tokenizer, prompt_messages, chat_template=_chat_template(settings), tools=tools),
        prompt=shown,
        reference=reference,
        where=conversation.where,
        references=[reference],
    )
