"""The one rendering path for conversations: training ids, loss masks and generation prompts.

Training, evaluation and generation all go through :func:`conversation_pieces`,
so the prompt the model sees at inference is token-for-token the prefix it was
trained on (mismatched train/inference templates are a classic silent bug:
Axolotl #2014, LLaMA-Factory #2509).

How assistant spans are found. Most chat templates (SmolLM2's included) have
no ``{% generation %}`` markers, so ``return_assistant_tokens_mask`` gives an
all-zero mask. Instead we render message prefixes as *text*:

- ``before_k`` = render(messages[:k], add_generation_prompt=True) ends exactly
  where the k-th (assistant) message's content starts;
- ``through_k`` = render(messages[:k+1]) ends after that turn, including its
  end-of-turn marker (``<|im_end|>`` for ChatML).

The loss span of turn k is ``[len(before_k), len(through_k.rstrip()))``: the
assistant content **and its end-of-turn token** (so the model learns to stop:
Unsloth #416, TRL #734), but not the whitespace the template puts after that
token (ChatML's trailing ``"\\n"``), which the model never has to produce
because generation stops at the end-of-turn token.

The rendered text is cut into pieces at those span boundaries and each piece is
tokenized on its own (``add_special_tokens=False``). Masks therefore come from
*positions*, never from token ids: with SmolLM2, pad == eos == ``<|im_end|>``,
and masking by id would also mask every end-of-turn token. Tokenizing piece by
piece also guarantees that :func:`render_prompt` is an exact prefix of the
training ids. For ChatML-like templates, where pieces meet at special tokens
or newlines, this equals tokenizing the whole text at once;
:func:`boundary_warnings` says when a tokenizer merges across a boundary.

This relies on one property of the template: rendering a conversation prefix
gives a prefix of the full rendering. Templates that rewrite earlier turns
(e.g. dropping past reasoning) break it; we then stop with a clear error rather
than guess.

A trained run's prompts at inference. The data config decides how prompts
render (``data.template``, ``data.system_prompt``), so every place that asks a
trained run something (``serve``, ``generate``, ``chat``) renders through
:func:`tuneforge.data.run_prompt.render_run_prompt` with the run's :class:`PromptRendering`, read from
the run folder's saved config (``adapters.inference.run_rendering``). Rendering
with the tokenizer's template alone would drop the system prompt and ignore
``template: plain`` (issue #20).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tuneforge.data.types import IGNORE_INDEX, DataError

VERSION = 1  # bump when the rendering of any input changes (part of the cache key)

ROLES = ("system", "user", "assistant")

# Used for conversations when the tokenizer has no chat template or the config
# says template: plain. Written with '\n' inside expressions because
# transformers renders templates with trim_blocks (newlines after tags vanish).
PLAIN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% else %}{{ (message['role'] | capitalize) + ':\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token or '' }}{% endif %}{{ '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:\n' }}{% endif %}"
)


class TemplateError(DataError):
    """The chat template cannot be used to locate assistant spans."""

    def __init__(self, message: str):
        super().__init__([message])


def use_chat_template(tokenizer, template: str) -> bool:
    """Resolve the config's ``template`` ("auto" | "chat" | "plain") for this tokenizer."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has:
        raise TemplateError(
            "template: 'chat' needs a tokenizer with a chat template, and this one has none; "
            "use template: plain (or auto), or a model whose tokenizer ships a chat template"
        )
    return has if template == "auto" else template == "chat"


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool, chat_template: str | None, tools=None) -> str:
    # tokenize=False: in transformers 5 tokenize=True returns a BatchEncoding, and we
    # want the text anyway to cut it at span boundaries. tools: only for templates that
    # read them (data/tools.py); the others get tool turns rewritten as plain turns.
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=chat_template, **extra
    )


def conversation_pieces(
    tokenizer,
    messages: list[dict],
    *,
    add_generation_prompt: bool = False,
    chat_template: str | None = None,
    tools: list[dict] | None = None,
) -> list[tuple[str, bool]]:
    """Cut the rendered conversation into ``(text, is_assistant_span)`` pieces.

    Raises TemplateError when the template does not render prefixes as prefixes.
    """
    full = _render(tokenizer, messages, add_generation_prompt, chat_template, tools)
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:k], True, chat_template, tools)
        through = _render(tokenizer, messages[: k + 1], False, chat_template, tools)
        if not (through.startswith(before) and full.startswith(through)):
            raise TemplateError(
                f"chat template: rendering messages[:{k}] with a generation prompt is not a prefix of "
                f"rendering messages[:{k + 1}] (the template rewrites earlier text), so the assistant "
                f"turn messages[{k}] cannot be located; use template: plain or fix the template"
            )
        start = len(before)
        end = max(start, len(through.rstrip()))
        if start < cursor:
            raise TemplateError(f"chat template: assistant turn messages[{k}] overlaps the previous one")
        pieces.append((full[cursor:start], False))
        pieces.append((full[start:end], True))
        cursor = end
    pieces.append((full[cursor:], False))
    # Empty assistant spans stay (one per assistant turn, so callers can zip them with turns).
    return [(text, is_loss) for text, is_loss in pieces if text or is_loss]


def _tokenize_pieces(tokenizer, pieces: list[tuple[str, bool]]) -> list[list[int]]:
    if not pieces:
        return []
    return tokenizer([text for text, _ in pieces], add_special_tokens=False)["input_ids"]


def render_conversation(
    tokenizer,
    messages: list[dict],
    completion_only_loss: bool = True,
    *,
    chat_template: str | None = None,
    tools: list[dict] | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids and labels of a whole conversation.

    With ``completion_only_loss`` the labels are IGNORE_INDEX everywhere except on
    assistant spans (content + end-of-turn token); otherwise every token is a target.
    ``chat_template`` overrides the tokenizer's (e.g. :data:`PLAIN_CHAT_TEMPLATE`).
    """
    pieces = conversation_pieces(tokenizer, messages, chat_template=chat_template, tools=tools)
    input_ids: list[int] = []
    labels: list[int] = []
    for (_, is_loss), ids in zip(pieces, _tokenize_pieces(tokenizer, pieces)):
        input_ids.extend(ids)
        labels.extend(ids if (is_loss or not completion_only_loss) else [IGNORE_INDEX] * len(ids))
    return input_ids, labels


def render_prompt(
    tokenizer, messages: list[dict], *, chat_template: str | None = None, tools: list[dict] | None = None
) -> list[int]:
    """Ids to generate the next assistant turn from (``add_generation_prompt=True``).

    Guaranteed to be a prefix of ``render_conversation(messages + [answer])``: the
    same pieces, cut at the same places, tokenized the same way.
    """
    pieces = conversation_pieces(
        tokenizer, messages, add_generation_prompt=True, chat_template=chat_template, tools=tools
    )
    return [i for ids in _tokenize_pieces(tokenizer, pieces) for i in ids]


@dataclass(frozen=True)
class PromptRendering:
    """How a run renders the prompt of the turn it answers: its data config's rendering settings.

    The default is what an untrained model gets: the tokenizer's chat template, no system prompt.
    """

    template: Literal["auto", "chat", "plain"] = "auto"  # data.template, resolved against the run's tokenizer
    system_prompt: str | None = None  # data.system_prompt: added when the request has no system message
    # Under the plain template, a lone user turn trained as raw text ``[BOS?] + prompt`` (prompt_completion,
    # natural_instructions, DPO / PPO string prompts), not as PLAIN_CHAT_TEMPLATE's "User:\n...".
    text_prompts: bool = False


def end_of_turn_ids(tokenizer) -> set[int]:
    """Token ids that can end an assistant turn: eos and special tokens other than bos/unk."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            ids.add(token_id)
    eos = tokenizer.eos_token_id
    ids -= {tokenizer.bos_token_id, tokenizer.unk_token_id} - {eos}
    if eos is not None:
        ids.add(eos)
    ids.discard(None)
    return ids


def check_template(
    tokenizer,
    sample_conversations: list[list[dict]],
    *,
    chat_template: str | None = None,
    tools: list[list[dict] | None] | None = None,
) -> list[str]:
    """Check the template on real conversations; return problems (empty = fine).

    ``tools``: each conversation's tools for the template (parallel to the conversations), if any.

    For each conversation: rendering ``messages[:k]`` is a text prefix of
    ``messages[:k+1]``; every assistant span has tokens, ends with an end-of-turn
    token and contains the assistant's content; the generation prompt is a prefix
    of the training ids; the conversation has at least one loss token.
    """
    problems: list[str] = []
    end_ids = end_of_turn_ids(tokenizer)
    for number, messages in enumerate(sample_conversations, start=1):
        label = f"chat template (sample {number})"
        row_tools = tools[number - 1] if tools else None
        texts = [_render(tokenizer, messages[: k + 1], False, chat_template, row_tools) for k in range(len(messages))]
        for k in range(len(messages) - 1):
            if not texts[k + 1].startswith(texts[k]):
                problems.append(
                    f"{label}: rendering messages[:{k + 1}] is not a prefix of messages[:{k + 2}] "
                    "(earlier turns are rewritten); assistant spans cannot be located"
                )
                break
        try:
            pieces = conversation_pieces(tokenizer, messages, chat_template=chat_template, tools=row_tools)
        except TemplateError as err:
            problems.extend(f"{label}: {p.removeprefix('chat template: ')}" for p in err.problems)
            continue
        ids_per_piece = _tokenize_pieces(tokenizer, pieces)
        turns = [m for m in messages if m["role"] == "assistant"]
        spans = [(text, ids) for (text, is_loss), ids in zip(pieces, ids_per_piece) if is_loss]
        if not spans or not any(ids for _, ids in spans):
            problems.append(f"{label}: no loss tokens (no assistant turn was found in the rendering)")
            continue
        for turn, (_, ids) in zip(turns, spans):
            shown = tokenizer.decode(ids[-1:]) if ids else ""
            if not ids or ids[-1] not in end_ids:
                problems.append(
                    f"{label}: the end-of-turn token of an assistant turn is not inside the loss mask "
                    f"(the span ends with {shown!r}); the model would never learn to stop"
                )
            decoded = tokenizer.decode(ids)
            if turn["content"].strip() and turn["content"].strip() not in decoded:
                problems.append(f"{label}: assistant content is not inside the loss mask (span is {decoded!r})")
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        train_ids = [i for ids in ids_per_piece for i in ids]
        prompt_ids = render_prompt(tokenizer, messages[:last], chat_template=chat_template, tools=row_tools)
        if train_ids[: len(prompt_ids)] != prompt_ids:
            problems.append(f"{label}: the generation prompt is not a prefix of the training rendering")
    return problems


def boundary_warnings(
    tokenizer,
    sample_conversations: list[list[dict]],
    *,
    chat_template: str | None = None,
    tools: list[list[dict] | None] | None = None,
) -> list[str]:
    """Say when piecewise tokenization differs from tokenizing the whole text at once.

    Not an error (training and our generation agree), but plain ``transformers``
    inference on the rendered text would see slightly different ids.
    """
    for number, messages in enumerate(sample_conversations):
        try:
            row_tools = tools[number] if tools else None
            pieces = conversation_pieces(tokenizer, messages, chat_template=chat_template, tools=row_tools)
        except TemplateError:
            continue
        joined = [i for ids in _tokenize_pieces(tokenizer, pieces) for i in ids]
        whole = tokenizer("".join(text for text, _ in pieces), add_special_tokens=False)["input_ids"]
        if joined != whole:
            return [
                "the tokenizer merges characters across assistant-span boundaries; training and tuneforge "
                "generation agree, but tokenizing the rendered text in one go gives slightly different ids"
            ]
    return []
