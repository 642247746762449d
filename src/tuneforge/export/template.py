"""The run's prompt format as an artifact carries it: a Jinja chat template, stop tokens, an Ollama TEMPLATE.

Everything here is *derived by rendering* the template the run trained with, never written per
model family (the classic export bug is a hand-written template or stop list that differs from
training: Unsloth #416, Ollama #1977, llama.cpp #6747).

- :func:`run_chat_template`: the Jinja template a chat runtime renders (llama.cpp, llama-cpp-python,
  transformers' ``apply_chat_template``). It is the run's template (the tokenizer's, or
  :data:`~tuneforge.data.templates.PLAIN_CHAT_TEMPLATE` under ``data.template: plain``) with the run's
  ``data.system_prompt`` prepended when a conversation has no system message: exactly what
  ``formats.chat.with_system`` does in training, so a bare ``[{"role": "user", ...}]`` renders to the
  training prompt.
- :func:`turn_end`: what the template writes after an assistant answer, rendered with a sentinel
  answer. Its first token is what training put the loss on right after the content (see
  ``data/templates.py``: the loss span is content + end-of-turn), so it is the token the model
  learned to stop with.
- :func:`ollama_template`: Ollama's legacy TEMPLATE (Go ``text/template`` over ``.System``,
  ``.Prompt``, ``.Response``; https://github.com/ollama/ollama/blob/main/docs/modelfile.md) made by
  rendering the Jinja template with sentinel strings and putting the Go actions where the
  sentinels land. :func:`render_go_template` renders that subset back, as Ollama does for the last
  turn (output cut at ``{{ .Response }}``), so verify-export can use the Modelfile's own text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..data.templates import PLAIN_CHAT_TEMPLATE, PromptRendering, end_of_turn_ids, use_chat_template
from . import ExportRefused

# Plain words, so templates that trim or capitalise message content leave them intact.
SYSTEM_MARK, PROMPT_MARK, ANSWER_MARK = "TFSYSTEMq7Zx", "TFPROMPTq7Zx", "TFANSWERq7Zx"


def base_chat_template(tokenizer, rendering: PromptRendering) -> str:
    """The Jinja template the run rendered conversations with (without its system prompt)."""
    if use_chat_template(tokenizer, rendering.template):
        template = tokenizer.chat_template
        if isinstance(template, dict):  # named templates: the default one renders conversations
            template = template.get("default") or next(iter(template.values()))
        return template
    if rendering.text_prompts:
        raise ExportRefused(
            "data.template: plain with a text-prompt format: the run was trained on raw text prompts, not "
            "chat turns, so no chat template reproduces its prompts in a chat runtime; export --format merged "
            "and prompt it with raw text, or train with data.format: chat"
        )
    return PLAIN_CHAT_TEMPLATE


def with_default_system(template: str, system_prompt: str | None) -> str:
    """``template`` that first prepends ``system_prompt`` to a conversation without a system message.

    The string goes in as a JSON literal, which Jinja reads as the same string (its escapes are a
    subset of Python's); a test renders it back.
    """
    if not system_prompt:
        return template
    literal = json.dumps(system_prompt, ensure_ascii=False)
    prefix = (
        "{%- if messages and messages[0]['role'] != 'system' -%}"
        f"{{%- set messages = [{{'role': 'system', 'content': {literal}}}] + messages -%}}"
        "{%- endif -%}"
    )
    return prefix + template


def run_chat_template(tokenizer, rendering: PromptRendering) -> str:
    """The Jinja template that renders a conversation the way the run trained on it, system prompt included."""
    return with_default_system(base_chat_template(tokenizer, rendering), rendering.system_prompt)


def render_chat(
    template: str, messages: list[dict], *, bos_token: str = "", eos_token: str = "", add_generation_prompt=True
) -> str:
    """Render a chat template as llama-cpp-python's ``Jinja2ChatFormatter`` and transformers do.

    Both use a sandboxed Jinja environment with ``trim_blocks`` and ``lstrip_blocks`` and pass
    ``bos_token`` / ``eos_token``; this is what the GGUF runtime path uses when llama-cpp-python
    is not installed.
    """
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ExportRefused(f"chat template: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda value, indent=None: json.dumps(value, indent=indent, ensure_ascii=False)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=add_generation_prompt
    )


def _apply(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template
    )


@dataclass(frozen=True)
class TurnEnd:
    """What the template writes after an assistant answer, and the stop it implies."""

    text: str  # e.g. "<|im_end|>\n" for ChatML, eos + "\n\n" for the plain template
    stop_text: str  # the part a runtime stops on: the end-of-turn token's text (else the text itself)
    stop_id: int | None  # that token's id when it is one special token, else None


def turn_end(tokenizer, template: str) -> TurnEnd:
    """Render ``template`` with a sentinel answer and read what follows it (see the module docstring)."""
    user = [{"role": "user", "content": PROMPT_MARK}]
    before = _apply(tokenizer, template, user, True)
    through = _apply(tokenizer, template, user + [{"role": "assistant", "content": ANSWER_MARK}], False)
    at = through.find(ANSWER_MARK, len(before))
    if not through.startswith(before) or at < 0:
        raise ExportRefused(
            "chat template: rendering a user turn with a generation prompt is not a prefix of the same "
            "conversation with an answer, so the answer's end cannot be located; use data.template: plain"
        )
    text = through[at + len(ANSWER_MARK) :]
    trained = text.rstrip()  # the loss span ends here (data/templates.py): this is what the model emits
    if not trained:
        raise ExportRefused(
            "chat template: it writes nothing after an assistant answer, so no token tells a runtime where an "
            "answer ends; use a template with an end-of-turn token (or data.template: plain, which ends with eos)"
        )
    ids = tokenizer(trained, add_special_tokens=False)["input_ids"]
    first = ids[0] if ids else None
    if first is not None and first in end_of_turn_ids(tokenizer):
        return TurnEnd(text=text, stop_text=tokenizer.convert_ids_to_tokens(first), stop_id=int(first))
    return TurnEnd(text=text, stop_text=trained, stop_id=None)


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """Ids that end an answer: the template's end-of-turn token, then the tokenizer's eos."""
    end = turn_end(tokenizer, template).stop_id
    ids = [end] if end is not None else []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def stop_strings(tokenizer, template: str) -> list[str]:
    """Texts a string-matching runtime (Ollama's ``PARAMETER stop``) stops on: end of turn, then eos."""
    out = [turn_end(tokenizer, template).stop_text]
    if tokenizer.eos_token:
        out.append(tokenizer.eos_token)
    return list(dict.fromkeys(s for s in out if s))


# ---------------------------------------------------------------------------- Ollama


def _go_literal(text: str, where: str) -> str:
    if "{{" in text or "}}" in text:
        raise ExportRefused(
            f"chat template: its {where} contains '{{{{' or '}}}}', which an Ollama TEMPLATE cannot hold as text; "
            "export --format gguf and give the runtime the GGUF's own chat template"
        )
    return text


def ollama_template(tokenizer, template: str) -> str:
    """The Ollama TEMPLATE equal to ``template`` (the run's, without the system wrap) for one turn.

    ``{{ if .System }}<render with system>{{ else }}<render without>{{ end }}{{ .Response }}<turn end>``,
    each part rendered from the Jinja template with sentinels in place of the values. Ollama runs a
    legacy template once per (system, prompt, response) turn and cuts the last at ``.Response``.
    """
    system = {"role": "system", "content": SYSTEM_MARK}
    user = {"role": "user", "content": PROMPT_MARK}
    with_system = _apply(tokenizer, template, [system, user], True)
    without = _apply(tokenizer, template, [user], True)
    for text, needs_system in ((with_system, True), (without, False)):
        if PROMPT_MARK not in text or (needs_system and SYSTEM_MARK not in text):
            raise ExportRefused(
                "chat template: rendering it with a placeholder system prompt and user message lost one of them "
                "(the template rewrites message content), so no Ollama TEMPLATE can be derived from it"
            )
    end = turn_end(tokenizer, template).text

    def actions(text: str) -> str:
        text = _go_literal(text, "rendered prompt")
        return text.replace(SYSTEM_MARK, "{{ .System }}").replace(PROMPT_MARK, "{{ .Prompt }}")

    return (
        "{{ if .System }}"
        + actions(with_system)
        + "{{ else }}"
        + actions(without)
        + "{{ end }}{{ .Response }}"
        + _go_literal(end, "end of turn")
    )


_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_go_template(template: str, *, system: str | None, prompt: str) -> str:
    """Render an Ollama legacy TEMPLATE for the last turn: the text up to ``{{ .Response }}``.

    Handles the subset :func:`ollama_template` writes and most legacy Modelfiles use:
    ``.System``, ``.Prompt``, ``.Response``, ``if .X`` / ``else`` / ``end`` and ``{{-``/``-}}`` trims.
    Anything else (``range .Messages``, functions) is refused with its text.
    """
    values = {".System": system or "", ".Prompt": prompt}
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # (this block emits, the enclosing one emits)
    emitting = True
    pos = 0
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if match.group(1):
            text = text.rstrip()
        if emitting:
            out.append(text)
        pos = match.end()
        action = match.group(2)
        if action == ".Response":
            if emitting:
                return "".join(out)
            continue
        if action in values:
            if emitting:
                out.append(values[action])
        elif action.startswith("if "):
            name = action[3:].strip()
            if name not in values:
                raise ExportRefused(f"Modelfile TEMPLATE: '{{{{ {action} }}}}' is not supported by verify-export")
            stack.append((emitting and bool(values[name]), emitting))
            emitting = stack[-1][0]
        elif action == "else":
            if not stack:
                raise ExportRefused("Modelfile TEMPLATE: '{{ else }}' without '{{ if }}'")
            taken, outer = stack[-1]
            stack[-1] = (outer and not taken, outer)
            emitting = stack[-1][0]
        elif action == "end":
            if not stack:
                raise ExportRefused("Modelfile TEMPLATE: '{{ end }}' without '{{ if }}'")
            emitting = stack.pop()[1]
        else:
            raise ExportRefused(
                f"Modelfile TEMPLATE: '{{{{ {action} }}}}' is not supported by verify-export (it renders the legacy "
                ".System / .Prompt / .Response form that tuneforge export writes)"
            )
        if match.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    raise ExportRefused("Modelfile TEMPLATE: no '{{ .Response }}': Ollama would not know where the answer goes")
