"""Tool-calling (function-calling) conversations: schemas, calls, their checks and the fallback rendering.

A chat row may carry OpenAI-style tools and calls::

    {"tools": [{"type": "function", "function": {"name": "get_weather", "description": "...",
                "parameters": {"type": "object", "properties": {...}, "required": [...]}}}],
     "messages": [{"role": "user", "content": "Weather in Oslo?"},
                  {"role": "assistant", "tool_calls": [{"type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}]},
                  {"role": "tool", "content": "{\\"temp_c\\": 4}"},
                  {"role": "assistant", "content": "It is 4 °C in Oslo."}]}

``arguments`` may be an object or a JSON string (OpenAI's API sends strings); both
become an object here, and every call is checked against its function's schema
(:func:`schema_problems`: ``type``, ``properties``, ``required``, ``enum``,
``items``, ``additionalProperties``; other keywords are not checked).

Rendering. A chat template that reads ``tools`` (Qwen2.5, Llama 3.1, Mistral…)
gets the row's tools and calls as they are, through
``apply_chat_template(messages, tools=...)``. A template without tool support
(the embedded SmolLM2's ChatML, :data:`templates.PLAIN_CHAT_TEMPLATE`) gets the
conversation rewritten into plain ``{role, content}`` turns by
:func:`fallback_messages`, in the Hermes / Qwen2.5 style:

- the tools are listed in the system message (after the row's own system text,
  if any), one compact signature per line: ``get_weather(city: string, unit?:
  "celsius"|"fahrenheit") - Current weather in a city.``, followed by how to call;
- an assistant call is its content (if any) followed by one
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` line per call;
- tool results become one user turn, each result in
  ``<tool_response>...</tool_response>``.

So only assistant turns carry loss in either rendering: the call text and the
end-of-turn token, never the tools block or a tool result.

Parsing (:func:`parse_tool_calls`) reads ``<tool_call>`` blocks, or an answer
that is nothing but one JSON object with ``name`` and ``arguments`` (or
``parameters``, Llama 3.1's spelling): the serve side and the eval scorers use it.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass, field

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
CALL_INSTRUCTION = 'Call one with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "number": (int, float),
    "integer": int,
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}
_DECODER = json.JSONDecoder()


# --------------------------------------------------------------------------- checking


def check_tools(value: object, name: str, where: str, problems: list[str]) -> list[dict] | None:
    """``value`` as a list of ``{"type": "function", "function": {name, description?, parameters?}}``.

    Returns the functions (``{"name", "description", "parameters"}``, in order) or None after
    appending ``where: name[i]...: problem`` lines.
    """
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: {name}: must be a non-empty list of {{type: function, function: {{...}}}} objects")
        return None
    before = len(problems)
    functions: list[dict] = []
    for i, tool in enumerate(value):
        at = f"{where}: {name}[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            problems.append(f"{at}: must be an object with type 'function' and a function object")
            continue
        function = tool.get("function")
        if not isinstance(function, dict):
            problems.append(f"{at}.function: must be an object with name, description and parameters")
            continue
        fname, params = function.get("name"), function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(fname, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", fname):
            problems.append(f"{at}.function.name: must be 1-64 letters, digits, '_', '.' or '-' (got {fname!r})")
        elif any(f["name"] == fname for f in functions):
            problems.append(f"{at}.function.name: '{fname}' is listed twice")
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            problems.append(f"{at}.function.parameters: must be a JSON schema of type 'object'")
        description = function.get("description", "")
        if not isinstance(description, str):
            problems.append(f"{at}.function.description: must be a string")
        functions.append({"name": fname, "description": description, "parameters": params})
    return functions if len(problems) == before else None


def schema_problems(value: object, schema: dict, path: str) -> list[str]:
    """Where ``value`` breaks ``schema``: ``"path: problem"`` lines (empty = valid).

    The JSON-schema subset function parameters use: ``type`` (a name or a list),
    ``enum``, ``properties``, ``required``, ``additionalProperties`` (false or a schema),
    ``items``. ``integer`` accepts 3 and 3.0, ``number`` any number, neither a boolean.
    """
    if not isinstance(schema, dict):
        return []
    problems: list[str] = []
    types = schema.get("type")
    names = [types] if isinstance(types, str) else list(types or [])
    if names and not any(_is_type(value, t) for t in names):
        problems.append(f"{path}: must be {' or '.join(names)} (got {_json_type(value)} {_shown(value)})")
        return problems
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        options = ", ".join(json.dumps(o, ensure_ascii=False) for o in schema["enum"])
        problems.append(f"{path}: {_shown(value)} is not one of {options}")
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                problems.append(f"{path}: missing required key '{key}'")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                problems.extend(schema_problems(item, properties[key], f"{path}.{key}"))
            elif extra is False:
                known = ", ".join(properties) or "none"
                problems.append(f"{path}.{key}: not a parameter of this function (parameters: {known})")
            elif isinstance(extra, dict):
                problems.extend(schema_problems(item, extra, f"{path}.{key}"))
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems.extend(schema_problems(item, schema["items"], f"{path}[{i}]"))
    return problems


def _is_type(value: object, name: str) -> bool:
    if name not in _JSON_TYPES:
        return True  # an unknown type name is not ours to judge
    if isinstance(value, bool):
        return name == "boolean"
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, _JSON_TYPES[name])


def _json_type(value: object) -> str:
    for name in ("boolean", "integer", "number", "string", "object", "array", "null"):
        if _is_type(value, name) and (name != "integer" or not isinstance(value, float)):
            return name
    return type(value).__name__


def _same(a: object, b: object) -> bool:
    """JSON equality for ``enum``: 1 equals 1.0, but true is not 1 and "1" is not 1."""

    def numeric(x: object) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return a == b and ((numeric(a) and numeric(b)) or type(a) is type(b))


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def normalise_call(call: object, at: str, problems: list[str]) -> dict | None:
    """One entry of an assistant's ``tool_calls`` as ``{"name", "arguments": dict}`` (+ ``id`` if given)."""
    if not isinstance(call, dict):
        problems.append(f"{at}: must be an object {{type: function, function: {{name, arguments}}}}")
        return None
    function = call.get("function", call)  # {"name", "arguments"} alone is accepted too
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        problems.append(f"{at}.function.name: missing (each call names its function)")
        return None
    arguments = function.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            problems.append(f"{at}.function.arguments: not valid JSON ({err.msg} at char {err.pos})")
            return None
    if not isinstance(arguments, dict):
        problems.append(f"{at}.function.arguments: must be a JSON object (got {_json_type(arguments)})")
        return None
    out = {"name": function["name"], "arguments": arguments}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def check_call(call: dict, functions: list[dict], at: str) -> list[str]:
    """A normalised call against the row's functions: a known name, arguments valid for its schema."""
    by_name = {f["name"]: f for f in functions}
    function = by_name.get(call["name"])
    if function is None:
        close = difflib.get_close_matches(call["name"], by_name, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        return [f"{at}.function.name: unknown function '{call['name']}' (tools: {', '.join(by_name)}){hint}"]
    return schema_problems(call["arguments"], function["parameters"], f"{at}.function.arguments")


def check_tool_turns(
    messages: list[dict], functions: list[dict] | None, where: str, problems: list[str]
) -> list | None:
    """Normalise and check the tool parts of cleaned messages (see ``formats.chat.clean_messages``).

    Every assistant call names a function of the row's tools with valid arguments; a ``tool``
    message follows an assistant call or another tool message. Returns the messages with each
    call as ``{"name", "arguments"}`` (under ``tool_calls``), or None after appending problems.
    """
    before = len(problems)
    out: list[dict] = []
    for i, message in enumerate(messages):
        message = dict(message)
        calls = message.pop("tool_calls", None)
        if message["role"] == "tool":
            previous = out[-1] if out else None
            if previous is None or not (previous["role"] == "tool" or previous.get("tool_calls")):
                problems.append(
                    f"{where}: messages[{i}].role: a tool result must follow an assistant turn with tool_calls"
                )
            if functions is None:
                problems.append(
                    f"{where}: messages[{i}]: a tool result needs the row's tools (a list of function schemas)"
                )
        if calls is not None:
            if not isinstance(calls, list) or not calls:
                problems.append(f"{where}: messages[{i}].tool_calls: must be a non-empty list of calls")
            elif functions is None:
                problems.append(
                    f"{where}: messages[{i}].tool_calls: needs the row's tools (a list of function schemas) "
                    "to check each call against"
                )
            else:
                normalised = []
                for j, raw in enumerate(calls):
                    at = f"{where}: messages[{i}].tool_calls[{j}]"
                    call = normalise_call(raw, at, problems)
                    if call is not None:
                        problems.extend(check_call(call, functions, at))
                        normalised.append(call)
                message["tool_calls"] = normalised
        out.append(message)
    return out if len(problems) == before else None


# --------------------------------------------------------------------------- rendering


@functools.lru_cache(maxsize=32)
def template_reads_tools(template: str) -> bool:
    """Whether a Jinja chat template uses a ``tools`` variable (then it renders tools itself)."""
    try:
        import jinja2
        from jinja2 import meta

        env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
        return "tools" in meta.find_undeclared_variables(env.parse(template))
    except Exception:  # a template our plain Jinja cannot parse: look for the name
        return re.search(r"\btools\b", template) is not None


def native_tools(tokenizer, chat: bool) -> bool:
    """True when conversations with tools go to this tokenizer's own template with ``tools=``."""
    template = getattr(tokenizer, "chat_template", None) if chat else None
    if isinstance(template, dict):  # named templates: transformers picks "tool_use" when tools are given
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and template_reads_tools(template)


def openai_tools(functions: list[dict]) -> list[dict]:
    """The functions in the shape templates and the OpenAI API take."""
    return [{"type": "function", "function": dict(f)} for f in functions]


def template_messages(messages: list[dict]) -> list[dict]:
    """Normalised messages in the shape tool-aware templates read (calls under ``function``)."""
    out = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {"type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                | ({"id": c["id"]} if "id" in c else {})
                for c in message["tool_calls"]
            ]
        out.append(message)
    return out


def signature(function: dict) -> str:
    """``name(a: string, b?: "x"|"y") - description``: one line per tool in the fallback system message."""
    params = function.get("parameters") or {}
    required = set(params.get("required") or [])
    parts = []
    for key, spec in (params.get("properties") or {}).items():
        text = f"{key}{'' if key in required else '?'}: {_type_text(spec)}"
        if isinstance(spec, dict) and spec.get("description"):
            text += f" ({spec['description']})"
        parts.append(text)
    description = f" - {function['description']}" if function.get("description") else ""
    return f"{function['name']}({', '.join(parts)}){description}"


def _type_text(spec: object) -> str:
    if not isinstance(spec, dict):
        return "any"
    if "enum" in spec:
        return "|".join(json.dumps(o, ensure_ascii=False) for o in spec["enum"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"{_type_text(spec.get('items'))}[]"
    return "|".join(kind) if isinstance(kind, list) else str(kind)


def tools_text(functions: list[dict]) -> str:
    lines = "\n".join(signature(f) for f in functions)
    return f"You can call these tools:\n{lines}\n{CALL_INSTRUCTION}"


def call_text(call: dict) -> str:
    """One call in the fallback format (also the eval reference of a call turn)."""
    body = json.dumps({"name": call["name"], "arguments": call["arguments"]}, ensure_ascii=False)
    return f"{CALL_OPEN}{body}{CALL_CLOSE}"


def assistant_text(message: dict) -> str:
    """An assistant turn's text in the fallback format: its content, then one line per call."""
    lines = [message["content"]] if message.get("content") else []
    lines += [call_text(c) for c in message.get("tool_calls") or []]
    return "\n".join(lines)


def fallback_messages(messages: list[dict], functions: list[dict]) -> list[dict]:
    """Plain ``{role, content}`` turns for a template without tool support (module docstring)."""
    system = tools_text(functions)
    out: list[dict] = []
    rest = messages
    if messages and messages[0]["role"] == "system":
        system = f"{messages[0]['content']}\n\n{system}" if messages[0]["content"] else system
        rest = messages[1:]
    out.append({"role": "system", "content": system})
    for message in rest:
        if message["role"] == "tool":
            block = f"{RESPONSE_OPEN}\n{message['content']}\n{RESPONSE_CLOSE}"
            if out[-1]["role"] == "user" and out[-1]["content"].startswith(RESPONSE_OPEN):
                out[-1] = {"role": "user", "content": f"{out[-1]['content']}\n{block}"}
            else:
                out.append({"role": "user", "content": block})
        elif message["role"] == "assistant":
            out.append({"role": "assistant", "content": assistant_text(message)})
        else:
            out.append({"role": message["role"], "content": message["content"]})
    return out


# --------------------------------------------------------------------------- parsing


@dataclass
class ParsedCalls:
    """What a model's answer says: text outside calls, the calls, and whether a call block was broken."""

    content: str
    calls: list[dict] = field(default_factory=list)  # {"name", "arguments": dict}
    broken: bool = False  # a <tool_call> block that is not a JSON object with a name and object arguments


def parse_tool_calls(text: str) -> ParsedCalls:
    """Calls in ``text``: ``<tool_call>{json}</tool_call>`` blocks, else the whole text as one JSON call.

    A block without its closing tag at the very end (generation cut short) counts as broken.
    """
    if CALL_OPEN not in text:
        stripped = text.strip()
        if stripped.startswith("{"):
            call = _as_call(_whole_json(stripped))
            if call is not None:
                return ParsedCalls("", [call])
        return ParsedCalls(text.strip())
    parsed = ParsedCalls("")
    outside: list[str] = []
    cursor = 0
    while (start := text.find(CALL_OPEN, cursor)) >= 0:
        outside.append(text[cursor:start])
        end = text.find(CALL_CLOSE, start)
        body = text[start + len(CALL_OPEN) : end if end >= 0 else len(text)]
        call = _as_call(_whole_json(body.strip()))
        if call is None:
            parsed.broken = True
        else:
            parsed.calls.append(call)
        cursor = len(text) if end < 0 else end + len(CALL_CLOSE)
    outside.append(text[cursor:])
    parsed.content = "".join(outside).strip()
    return parsed


def _whole_json(text: str) -> object:
    try:
        value, end = _DECODER.raw_decode(text)
    except json.JSONDecodeError:
        return None
    return value if not text[end:].strip() else None


def _as_call(value: object) -> dict | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as the API does
        arguments = _whole_json(arguments)
    return {"name": value["name"], "arguments": arguments} if isinstance(arguments, dict) else None
