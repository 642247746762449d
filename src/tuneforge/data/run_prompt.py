"""A trained run's prompt for a chat request: the training formats' own rendering, with the run's settings.

Lives beside the formats (not in ``templates``, which the formats import) so imports point one way:
``run_prompt`` → ``formats`` → ``templates``.
"""

from __future__ import annotations

from tuneforge.data.formats import RenderSettings, chat
from tuneforge.data.formats import prompt_completion as pc
from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE, PromptRendering, render_prompt, use_chat_template


def render_run_prompt(
    tokenizer, messages: list[dict], rendering: PromptRendering, *, tools: list[dict] | None = None
) -> list[int]:
    """Ids a run answers ``messages`` from: token for token its training prompt for the same turn.

    ``tools``: the request's functions (``{"name", "description", "parameters"}``, as
    ``data.tools.check_tools`` returns them) and ``messages`` normalised by
    ``data.tools.check_tool_turns``: rendered as training renders a row with tools.

    The same code as training: the run's system prompt is prepended unless the
    conversation has its own (``formats.chat.with_system``); the chat template,
    else :data:`PLAIN_CHAT_TEMPLATE`, else, for runs trained on text prompts, the
    prompt_completion format's plain prompt (``system\\n\\nprompt``).
    """
    settings = RenderSettings(use_chat_template(tokenizer, rendering.template), system_prompt=rendering.system_prompt)
    if tools is not None:
        view, template_tools = chat.template_view(tokenizer, chat.Conversation(messages, "", tools), settings)
        template = None if settings.chat else PLAIN_CHAT_TEMPLATE
        return render_prompt(tokenizer, view, chat_template=template, tools=template_tools)
    messages = chat.with_system(chat.Conversation(messages, ""), settings) if messages else messages
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
    rest = messages[1:] if system is not None else messages
    if not settings.chat and rendering.text_prompts and [m["role"] for m in rest] == ["user"]:
        plain = RenderSettings(chat=False, system_prompt=system)
        return pc.sample(tokenizer, pc.PromptCompletion(rest[0]["content"], "", ""), plain).prompt_ids
    return render_prompt(tokenizer, messages, chat_template=None if settings.chat else PLAIN_CHAT_TEMPLATE)
