"""Feedback records → token ids for preference training, and their collators.

Rendering uses the SFT formats' one path, so a prompt here is token-for-token
the prompt SFT trained on and generation starts from:

- chat (the tokenizer's chat template, or a prompt given as messages with
  ``chat=False``, which renders with ``PLAIN_CHAT_TEMPLATE`` as the chat format
  does): prompt ids = ``render_prompt(messages)``; each response is the
  assistant turn of ``render_conversation(messages + [response])`` (content and
  end-of-turn token). The template is checked with ``check_template`` on up to
  8 real samples first, exactly as SFT does, and a failure is a DataError.
- plain (a text prompt with ``chat=False``): ``prompt_completion``'s rendering,
  ``[BOS?] + prompt + response + EOS``, joined verbatim.

Every sequence is ``prompt ids + response ids``: labels are IGNORE_INDEX on
exactly the prompt and equal the ids on the response. Whatever the template
writes after the end-of-turn token (ChatML's ``"\\n"``) is not kept, so a
sequence ends at its last loss token (where a reward model reads its score).
Earlier assistant turns inside a chat prompt carry no loss: only the judged
response is scored.

Truncation (one ``max_length`` per sequence, prompt included) keeps the
prompt's *end* and each response's *start*: when prompt + longest response is
too long, the prompt keeps its last ``min(P, max(max_length − R, max_length // 2))``
tokens (at most half the budget when responses need the rest) and every
response its first ``max_length − kept prompt`` tokens. All responses of one
record share the same cut prompt, so it stays a common prefix. A pair whose
chosen and rejected become identical after the cut is dropped (counted in the
report's warnings); a ranked response identical to a better-ranked one after
the cut leaves its ranking (and the ranking goes when fewer than 2 remain).

Batches (right-padded, ``attention_mask`` 1 on real tokens, labels
IGNORE_INDEX on padding; pad == eos is harmless since masks come from
positions):

- pairs: chosen rows first, then rejected rows, in ONE (2B, T) tensor, so the
  policy (and the reference) run one forward for both; or, with
  :func:`collate_pairs_shared`, one row per pair holding the prompt once and
  both responses after it (a segment mask keeps them apart);
- rankings: the K responses of each prompt contiguous, best first, with
  ``group`` (which ranking) and ``rank`` (0 = best); :func:`group_scores`
  turns per-row scores into the (B, K) layout ``losses.ranking_loss`` takes
  (InstructGPT, Ouyang et al. 2022, arXiv 2203.02155);
- thumbs: one row per response and a ``desirable`` bool (B,) for KTO
  (Ethayarajh et al. 2024, arXiv 2402.01306); :func:`mismatched` builds the
  in-batch (prompt i, response i+1) rows KTO estimates its reference point on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...data.formats import RenderSettings, loss_tokens
from ...data.formats import prompt_completion as pc
from ...data.templates import (
    PLAIN_CHAT_TEMPLATE,
    TemplateError,
    boundary_warnings,
    check_template,
    render_conversation,
    render_prompt,
)
from ...data.types import IGNORE_INDEX, DataError, DataReport, Example
from .feedback import FeedbackRecord, PreferencePair, Prompt, Ranking, Unpaired

TEMPLATE_SAMPLES = 8


@dataclass
class PairExample:
    """prompt_ids (P,); chosen / rejected: prompt + response ids, labels IGNORE_INDEX on the prompt."""

    prompt_ids: list[int]
    chosen: Example
    rejected: Example
    margin: float | None = None
    where: str = ""


@dataclass
class RankingExample:
    """One ranking's K sequences, best → worst, sharing ``prompt_ids`` (InstructGPT, arXiv 2203.02155)."""

    prompt_ids: list[int]
    responses: list[Example]
    where: str = ""


@dataclass
class UnpairedExample:
    """One judged response for KTO (arXiv 2402.01306)."""

    prompt_ids: list[int]
    response: Example
    desirable: bool
    where: str = ""


PreferenceExample = PairExample | RankingExample | UnpairedExample


# ----------------------------------------------------------------------------- rendering


def _messages(prompt: Prompt, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}] + messages
    return messages


def _uses_template(prompt: Prompt, chat: bool) -> bool:
    return chat or not isinstance(prompt, str)


def _template(chat: bool) -> str | None:
    return None if chat else PLAIN_CHAT_TEMPLATE


def render_responses(
    tokenizer, prompt: Prompt, responses: Sequence[str], *, chat: bool, system_prompt: str | None = None
) -> tuple[list[int], list[list[int]]]:
    """Untruncated (prompt ids, [response ids]): each response's tokens through its end-of-turn / EOS."""
    if not _uses_template(prompt, chat):
        settings = RenderSettings(False, True, system_prompt)
        prompt_ids = pc.sample(tokenizer, pc.PromptCompletion(prompt, responses[0], ""), settings).prompt_ids
        full = [pc.render(tokenizer, pc.PromptCompletion(prompt, r, ""), settings).input_ids for r in responses]
        return prompt_ids, [ids[len(prompt_ids) :] for ids in full]
    messages, template = _messages(prompt, system_prompt), _template(chat)
    prompt_ids = render_prompt(tokenizer, messages, chat_template=template)
    out = []
    for response in responses:
        ids, labels = render_conversation(
            tokenizer, messages + [{"role": "assistant", "content": response}], chat_template=template
        )
        if ids[: len(prompt_ids)] != prompt_ids:
            raise TemplateError("chat template: the generation prompt is not a prefix of the rendered response")
        span = [i for i in range(len(prompt_ids), len(ids)) if labels[i] != IGNORE_INDEX]
        if not span:
            raise TemplateError("chat template: the response has no tokens in its assistant span")
        out.append(ids[len(prompt_ids) : span[-1] + 1])
    return prompt_ids, out


def truncate(
    prompt_ids: list[int], responses: list[list[int]], max_length: int
) -> tuple[list[int], list[list[int]], bool]:
    """Keep the prompt's end and each response's start (see the module docstring); → (prompt, responses, cut)."""
    longest = max(len(r) for r in responses)
    if len(prompt_ids) + longest <= max_length:
        return prompt_ids, responses, False
    keep = min(len(prompt_ids), max(max_length - longest, max_length // 2))
    room = max_length - keep
    return prompt_ids[len(prompt_ids) - keep :], [r[:room] for r in responses], True


def _sequence(prompt_ids: list[int], response_ids: list[int], where: str) -> Example:
    return Example(prompt_ids + response_ids, [IGNORE_INDEX] * len(prompt_ids) + response_ids, where)


def _distinct(responses: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for ids in responses:
        if ids not in out:
            out.append(ids)
    return out


def encode_record(
    tokenizer, record: FeedbackRecord, *, chat: bool, max_length: int, system_prompt: str | None = None
) -> tuple[PreferenceExample | None, bool]:
    """One record → its example (None when truncation left nothing to compare) and whether it was cut."""
    if isinstance(record, PreferencePair):
        texts = [record.chosen, record.rejected]
    elif isinstance(record, Ranking):
        texts = record.responses
    else:
        texts = [record.response]
    try:
        prompt_ids, responses = render_responses(
            tokenizer, record.prompt, texts, chat=chat, system_prompt=system_prompt
        )
    except TemplateError as err:
        raise DataError([f"{record.where}: {p}" for p in err.problems]) from err
    prompt_ids, responses, cut = truncate(prompt_ids, responses, max_length)
    where = record.where
    if isinstance(record, Unpaired):
        return UnpairedExample(prompt_ids, _sequence(prompt_ids, responses[0], where), record.desirable, where), cut
    if isinstance(record, PreferencePair):
        if responses[0] == responses[1]:
            return None, cut
        chosen, rejected = (_sequence(prompt_ids, r, where) for r in responses)
        return PairExample(prompt_ids, chosen, rejected, record.margin, where), cut
    responses = _distinct(responses)
    if len(responses) < 2:
        return None, cut
    return RankingExample(prompt_ids, [_sequence(prompt_ids, r, where) for r in responses], where), cut


def _sample_conversations(records: Sequence[FeedbackRecord], chat: bool, system_prompt: str | None) -> list[list[dict]]:
    out = []
    for record in records:
        if _uses_template(record.prompt, chat):
            response = (
                record.chosen
                if isinstance(record, PreferencePair)
                else record.responses[0]
                if isinstance(record, Ranking)
                else record.response
            )
            out.append(_messages(record.prompt, system_prompt) + [{"role": "assistant", "content": response}])
        if len(out) == TEMPLATE_SAMPLES:
            break
    return out


def encode_feedback(
    tokenizer, records: Sequence[FeedbackRecord], *, chat: bool, max_length: int, system_prompt: str | None = None
) -> tuple[list[PreferenceExample], DataReport]:
    """Check the chat template, then encode every record; the report counts sequences, tokens and cuts.

    ``chat`` is ``templates.use_chat_template(tokenizer, template)``. Raises DataError when the
    template fails ``check_template`` on the data's own samples, as SFT does.
    """
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (a prompt token and a response token), got {max_length}")
    conversations = _sample_conversations(records, chat, system_prompt)
    report = DataReport(rows=len(records))
    if conversations:
        problems = check_template(tokenizer, conversations, chat_template=_template(chat))
        if problems:
            raise DataError(
                problems, hint="The chat template cannot mark responses; use template: plain or fix the template."
            )
        report.warnings.extend(boundary_warnings(tokenizer, conversations, chat_template=_template(chat)))
    examples: list[PreferenceExample] = []
    identical: list[str] = []
    for record in records:
        example, cut = encode_record(tokenizer, record, chat=chat, max_length=max_length, system_prompt=system_prompt)
        report.truncated += cut
        if example is None:
            identical.append(record.where)
            continue
        examples.append(example)
        for seq in _sequences(example):
            report.tokens += len(seq.input_ids)
            report.loss_tokens += loss_tokens(seq.labels)
    report.examples = len(examples)
    if report.truncated:
        report.warnings.append(
            f"{report.truncated} record(s) were longer than max_length={max_length} and were "
            "cut (prompt from the left, responses from the right)"
        )
    if identical:
        report.warnings.append(
            f"{len(identical)} record(s) had identical responses after truncation to "
            f"max_length={max_length} and were dropped (first at {', '.join(identical[:3])}); "
            "raise max_length"
        )
    return examples, report


def _sequences(example: PreferenceExample) -> list[Example]:
    if isinstance(example, PairExample):
        return [example.chosen, example.rejected]
    if isinstance(example, RankingExample):
        return example.responses
    return [example.response]


# ----------------------------------------------------------------------------- batches


def pad(rows: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids``, ``labels``, ``attention_mask``: each (N, T) long, right-padded to the longest row."""
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, T)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)  # (N, T)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, T)
    for b, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[b, :n] = torch.tensor(row.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(row.labels, dtype=torch.long)
        attention_mask[b, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


def collate_pairs(batch: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Rows 0..B-1 are the chosen sequences, rows B..2B-1 the rejected ones, in the same order:
    ``input_ids`` / ``labels`` / ``attention_mask`` (2B, T); ``margin`` (B,) float, 0 where none."""
    out = pad([p.chosen for p in batch] + [p.rejected for p in batch], pad_id)
    out["margin"] = torch.tensor([p.margin or 0.0 for p in batch], dtype=torch.float32)  # (B,)
    return out


def collate_pairs_shared(batch: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One row per pair, ``prompt + chosen response + rejected response``, so the shared prompt goes through
    the network once (a third to a half of a pair's tokens in chat data with a system prompt).

    - ``input_ids`` (B, T) right-padded; ``position_ids`` (B, T): the rejected response's positions
      restart where the prompt ends, exactly the positions it has in its own sequence;
    - ``segment_ids`` (B, T): 0 prompt, 1 chosen, 2 rejected, -1 padding. A token attends to earlier
      tokens of its own segment and to the prompt (``logps.shared_prompt_mask``), so the rejected
      response never sees the chosen one, and every hidden state equals the separate layout's;
      ``pair_lengths`` (B, 3): each row's prompt, chosen and rejected lengths (``dpo.attention``);
    - ``score_index`` (K,) flat index into the (B·T) positions whose hidden state predicts
      ``score_targets`` (K,), with ``score_counts`` (2B,) tokens per sequence, chosen sequences first
      (``collate_pairs``' order). The first token of the rejected response is predicted from the last
      prompt position, not from the chosen response's last token.

    A response token at sequence position 0 (an empty prompt) has nothing before it and is not a target,
    as in the separate layout.
    """
    rows, positions, segments = [], [], []
    chosen_idx, chosen_tgt, rejected_idx, rejected_tgt = [], [], [], []
    chosen_counts, rejected_counts = [], []
    width = max(len(p.chosen.input_ids) + len(p.rejected.input_ids) - len(p.prompt_ids) for p in batch)
    for b, pair in enumerate(batch):
        n = len(pair.prompt_ids)
        chosen, rejected = pair.chosen.input_ids[n:], pair.rejected.input_ids[n:]
        rows.append(pair.prompt_ids + chosen + rejected)
        positions.append(list(range(n + len(chosen))) + list(range(n, n + len(rejected))))
        segments.append([0] * n + [1] * len(chosen) + [2] * len(rejected))
        start = b * width
        c_src = [start + n + k - 1 for k in range(len(chosen)) if n + k >= 1]
        chosen_idx += c_src
        chosen_tgt += chosen[len(chosen) - len(c_src) :]
        r_src = [start + (n - 1 if k == 0 else n + len(chosen) + k - 1) for k in range(len(rejected)) if n + k >= 1]
        rejected_idx += r_src
        rejected_tgt += rejected[len(rejected) - len(r_src) :]
        chosen_counts.append(len(c_src))
        rejected_counts.append(len(r_src))
    out = {
        "input_ids": torch.full((len(batch), width), pad_id, dtype=torch.long),  # (B, T)
        "position_ids": torch.zeros((len(batch), width), dtype=torch.long),  # (B, T)
        "segment_ids": torch.full((len(batch), width), -1, dtype=torch.long),
    }  # (B, T)
    for b, (ids, pos, seg) in enumerate(zip(rows, positions, segments)):
        out["input_ids"][b, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        out["position_ids"][b, : len(ids)] = torch.tensor(pos, dtype=torch.long)
        out["segment_ids"][b, : len(ids)] = torch.tensor(seg, dtype=torch.long)
    out["score_index"] = torch.tensor(chosen_idx + rejected_idx, dtype=torch.long)  # (K,)
    out["score_targets"] = torch.tensor(chosen_tgt + rejected_tgt, dtype=torch.long)  # (K,)
    out["score_counts"] = torch.tensor(chosen_counts + rejected_counts, dtype=torch.long)  # (2B,)
    out["pair_lengths"] = torch.tensor(
        [
            [
                len(p.prompt_ids),
                len(p.chosen.input_ids) - len(p.prompt_ids),
                len(p.rejected.input_ids) - len(p.prompt_ids),
            ]
            for p in batch
        ],
        dtype=torch.long,
    )  # (B, 3): prompt, chosen, rejected
    return out


def collate_rankings(batch: Sequence[RankingExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Each ranking's K responses contiguous, best first: ``input_ids`` etc. (N, T) with N = Σ K_b;
    ``group`` (N,) the ranking's index in the batch, ``rank`` (N,) 0 = best."""
    rows = [seq for r in batch for seq in r.responses]
    out = pad(rows, pad_id)
    out["group"] = torch.tensor([b for b, r in enumerate(batch) for _ in r.responses], dtype=torch.long)
    out["rank"] = torch.tensor([k for r in batch for k in range(len(r.responses))], dtype=torch.long)
    return out


def group_scores(scores: torch.Tensor, group: torch.Tensor, rank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scores (N,) → (B, K) scores best → worst and a (B, K) mask of real responses
    (shorter rankings padded at the end), the layout ``losses.ranking_loss`` takes."""
    b, k = int(group.max()) + 1, int(rank.max()) + 1
    grid = scores.new_zeros(b, k).index_put((group, rank), scores)  # (B, K), differentiable
    mask = torch.zeros(b, k, dtype=torch.bool, device=scores.device)
    mask[group, rank] = True
    return grid, mask


def collate_unpaired(batch: Sequence[UnpairedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``labels`` / ``attention_mask`` (B, T) and ``desirable`` (B,) bool."""
    out = pad([u.response for u in batch], pad_id)
    out["desirable"] = torch.tensor([u.desirable for u in batch], dtype=torch.bool)  # (B,)
    return out


def mismatched(batch: Sequence[UnpairedExample], max_length: int) -> list[UnpairedExample]:
    """KTO's reference-point rows: prompt i with the response of example (i+1) mod B, cut by the
    same policy (a batch of one pairs with itself). Collate them with :func:`collate_unpaired`."""
    out = []
    for i, item in enumerate(batch):
        other = batch[(i + 1) % len(batch)]
        response = other.response.input_ids[len(other.prompt_ids) :]
        prompt_ids, (response,), _ = truncate(item.prompt_ids, [response], max_length)
        out.append(UnpairedExample(prompt_ids, _sequence(prompt_ids, response, item.where), item.desirable, item.where))
    return out
