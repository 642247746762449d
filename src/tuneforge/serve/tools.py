"""Tools in chat requests: OpenAI's ``tools`` / ``tool_choice`` in, ``tool_calls`` out.

A request's ``tools`` are checked as training rows' are (``data.tools.check_tools``)
and rendered into the prompt the way the answering run's training rendered a row
with tools (``data.run_prompt.render_run_prompt``): the template's own tool
rendering when it reads ``tools``, else tuneforge's fallback format. Earlier
assistant ``tool_calls`` (arguments as the JSON strings OpenAI's API sends) and
``tool`` results in ``messages`` render the same way.

The answer is read with ``data.tools.parse_tool_calls``. When it holds calls that
all parse and all name one of the request's tools, the response message has
``tool_calls`` (ids ``call_…``, arguments as JSON strings), the text outside the
calls as ``content`` (null when there is none), and ``finish_reason``
``"tool_calls"``. Anything else — no call, a broken block, an unknown function,
an answer cut at ``max_tokens`` — is returned as plain text with the usual
finish reason, so the caller always sees what the model wrote.

``tool_choice``: ``"auto"`` (the default with tools) as above; ``"none"`` renders
no tools and reads no calls (the model answers in text). ``"required"`` and a
named function need constrained decoding, which this server does not do: they
are refused by name, as is ``stream`` together with tools (calls are read from
the whole answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data.tools import check_tools, normalise_call, parse_tool_calls
from .protocol import APIError, new_id


@dataclass(frozen=True)
class ToolUse:
    """What a chat request asks of tools: the functions to render (None: none) and whether to read calls."""

    functions: list[dict] | None = None
    read_calls: bool = False


def tool_use(parsed) -> ToolUse:
    """The request's ``tools`` / ``tool_choice``, checked; an :class:`APIError` 400 naming the field if bad."""
    extra = parsed.model_extra or {}
    tools, choice = extra.get("tools"), extra.get("tool_choice")
    if choice not in (None, "auto", "none"):
        raise APIError(
            400,
            f"tool_choice {json.dumps(choice)} is not supported by this server (it does not constrain "
            "decoding); use 'auto' or 'none'",
            param="tool_choice",
            code="unsupported_parameter",
        )
    if not tools or choice == "none":
        return ToolUse()
    problems: list[str] = []
    functions = check_tools(tools, "tools", "", problems)
    if functions is None:
        raise APIError(400, problems[0].removeprefix(": "), param="tools")
    if parsed.stream:
        raise APIError(
            400,
            "stream together with tools is not supported by this server (calls are read from the whole "
            "answer); leave stream out",
            param="stream",
            code="unsupported_parameter",
        )
    return ToolUse(functions, read_calls=True)


def request_messages(parsed) -> list[dict]:
    """The request's messages as the data layer renders them: tool calls normalised, tool results kept."""
    messages = []
    for i, message in enumerate(parsed.messages):
        plain = message.plain()
        calls = (message.model_extra or {}).get("tool_calls") if message.role == "assistant" else None
        if calls:
            if not isinstance(calls, list):
                raise APIError(400, f"messages[{i}].tool_calls: must be a list of calls", param="messages")
            problems: list[str] = []
            normalised = [normalise_call(c, f": messages[{i}].tool_calls[{j}]", problems) for j, c in enumerate(calls)]
            if problems:
                raise APIError(400, problems[0].removeprefix(": "), param="messages")
            plain["tool_calls"] = normalised
        messages.append(plain)
    return messages


def with_tool_calls(response: dict, use: ToolUse) -> dict:
    """``response`` (a chat completion) with its text read as tool calls when it holds valid ones (a new dict)."""
    choice = response["choices"][0]
    text = choice["message"]["content"]
    if not use.read_calls or use.functions is None:
        return response
    parsed = parse_tool_calls(text)
    names = {f["name"] for f in use.functions}
    if not parsed.calls or parsed.broken or any(c["name"] not in names for c in parsed.calls):
        return response
    calls = [
        {
            "id": new_id("call"),
            "type": "function",
            "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)},
        }
        for c in parsed.calls
    ]
    message = {"role": "assistant", "content": parsed.content or None, "tool_calls": calls}
    return {**response, "choices": [{**choice, "message": message, "finish_reason": "tool_calls"}]}
