"""Feedback files → rows for preference optimisation, and their batches.

Reading, validation and tokenisation are ``methods/preference`` (every feedback
form, ``file:line`` errors, the chat template checked on real samples, the one
rendering path SFT uses). What this module decides:

- Paired losses (dpo, cdpo, robust, ipo, hinge, simpo, orpo) train on pairs: a
  K-way ranking becomes its C(K,2) pairs, ratings and corrections are pairs
  already. Thumbs up / down carry no pair and are refused (use kto).
- KTO (Ethayarajh et al. 2024, arXiv 2402.01306) trains on judged responses:
  thumbs as they are; each pair split into its chosen response (desirable) and
  its rejected one (undesirable), as TRL's ``unpair_preference_dataset`` does.
  Rankings are refused: a middle response is better than some and worse than
  others, so it has no thumbs-up / down label.
- KTO's reference point needs mismatched completions (prompt i with another
  example's response). They are fixed once at load time, over a seeded shuffle
  of the split (TRL also fixes its KL pairs when preparing the data), so a
  precomputed reference can cover them too.
- The held-out split (``eval_fraction``) is made over prompts, not records:
  ratings and rankings turn one prompt into several pairs, and splitting those
  would put the same prompt and responses on both sides.

A row holds two sequences: (chosen, rejected) for a pair, (response, its
mismatched KL sequence) for KTO, and optionally their precomputed reference
log-probs. Batches put every row's first sequence before every row's second,
so chosen and rejected go through one forward (``preference.data.collate_pairs``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from ...data.templates import TemplateError, use_chat_template
from ...data.types import DataError, Example, GenerationSample
from ...interface import Batch
from ..preference.data import (
    PairExample,
    UnpairedExample,
    collate_pairs,
    collate_pairs_shared,
    collate_unpaired,
    encode_feedback,
    mismatched,
    pad,
)
from ..preference.feedback import FeedbackRecord, PreferencePair, Ranking, Unpaired, read_feedback, split_by_prompt


@dataclass
class PairRow:
    """One preference pair; ``ref``: the reference's summed log-probs (chosen, rejected) once precomputed;
    ``shared_prompt``: batched as one row with the prompt once (``recipe.pair_layout`` decides)."""

    pair: PairExample
    ref: tuple[float, float] | None = None
    shared_prompt: bool = False

    @property
    def sequences(self) -> tuple[Example, Example]:
        return self.pair.chosen, self.pair.rejected

    @property
    def input_ids(self) -> list[int]:  # for length-sorted evaluation batches and token counts
        return self.pair.chosen.input_ids + self.pair.rejected.input_ids


@dataclass
class UnpairedRow:
    """One judged response (KTO) and its mismatched sequence; ``ref``: (response, kl) once precomputed."""

    item: UnpairedExample
    kl: Example
    ref: tuple[float, float] | None = None

    @property
    def sequences(self) -> tuple[Example, Example]:
        return self.item.response, self.kl

    @property
    def input_ids(self) -> list[int]:
        return self.item.response.input_ids + self.kl.input_ids


Row = PairRow | UnpairedRow


@dataclass
class PreferenceSplits:
    train: list[Row]
    eval: list[Row]
    samples: list[GenerationSample]  # held-out prompts to answer greedily for the report
    facts: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _convert(records: list[FeedbackRecord], kto: bool, problems: list[str]) -> list[FeedbackRecord]:
    """Records in the shape the loss trains on: pairs, or judged responses for kto."""
    out: list[FeedbackRecord] = []
    for record in records:
        if isinstance(record, Ranking):
            if kto:
                problems.append(
                    f"{record.where}: a ranking has no thumbs-up / down label for its middle "
                    "responses; loss.type kto takes thumbs or pairs (use a paired loss for rankings)"
                )
                continue
            out.extend(
                PreferencePair(
                    record.prompt, record.responses[i], record.responses[j], f"{record.where} (#{i + 1} ≻ #{j + 1})"
                )
                for i, j in record.pairs()
            )
        elif isinstance(record, PreferencePair) and kto:
            out += [
                Unpaired(record.prompt, record.chosen, True, record.where),
                Unpaired(record.prompt, record.rejected, False, record.where),
            ]
        else:
            out.append(record)
    return out


def _read(source, cfg, kto: bool, problems: list[str], sources: list[str], warnings: list[str]) -> list[FeedbackRecord]:
    try:
        feedback = read_feedback(source, cfg.feedback_format, min_gap=cfg.min_gap, columns=cfg.columns or None)
    except DataError as err:
        problems.extend(err.problems)
        return []
    warnings.extend(feedback.warnings)  # what was dropped (chosen == rejected, ties, …), per source
    for report in feedback.reports:
        sources.append(report.summary())
        if report.form == "thumbs" and not kto:
            problems.append(
                f"{report.source}: thumbs up / down rate single responses and hold no pairs; train "
                "them with loss.type: kto, or give pairs, rankings, ratings or corrections"
            )
    return feedback.records


def _with_kl(examples: list[UnpairedExample], max_length: int, seed: int) -> list[UnpairedRow]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    partners = mismatched([examples[i] for i in order], max_length)  # prompt i with the next response
    kl = {i: partner.response for i, partner in zip(order, partners)}
    return [UnpairedRow(example, kl[i]) for i, example in enumerate(examples)]


def _samples(tokenizer, examples: list, limit: int) -> list[GenerationSample]:
    """One per distinct held-out prompt: prompt ids as trained, the chosen (desirable) response as reference."""
    out, seen = [], set()
    for example in examples:
        if len(out) == limit:
            break
        if tuple(example.prompt_ids) in seen or (isinstance(example, UnpairedExample) and not example.desirable):
            continue
        seen.add(tuple(example.prompt_ids))
        best = example.chosen if isinstance(example, PairExample) else example.response
        response = best.input_ids[len(example.prompt_ids) :]
        out.append(
            GenerationSample(
                example.prompt_ids,
                tokenizer.decode(example.prompt_ids, skip_special_tokens=True),
                tokenizer.decode(response, skip_special_tokens=True),
                example.where,
            )
        )
    return out


def load_preferences(config, tokenizer) -> PreferenceSplits:
    """Read, convert, split (by prompt) and tokenise; raise one DataError listing every problem."""
    cfg, kto = config.data, config.loss.type == "kto"
    problems: list[str] = []
    sources: list[str] = []
    warnings: list[str] = []
    train = _convert(_read(cfg.train, cfg, kto, problems, sources, warnings), kto, problems)
    if cfg.eval is not None:
        held = _convert(_read(cfg.eval, cfg, kto, problems, sources, warnings), kto, problems)
    else:
        train, held = split_by_prompt(train, cfg.eval_fraction, cfg.seed)
    if problems:
        raise DataError(problems)
    try:
        chat = use_chat_template(tokenizer, cfg.template)
    except TemplateError as err:
        raise DataError([f"data.template: {p}" for p in err.problems]) from err
    encoded, tokens, truncated = {}, 0, 0
    for name, records in (("train", train), ("eval", held)):
        examples, report = encode_feedback(
            tokenizer, records, chat=chat, max_length=cfg.max_length, system_prompt=cfg.system_prompt
        )
        encoded[name] = examples
        warnings.extend(f"data.{name}: {w}" for w in report.warnings)
        if name == "train":
            tokens, truncated = report.tokens, report.truncated
    if not encoded["train"]:
        raise DataError([f"data.train: nothing to train on ({'; '.join(sources)})"])
    rows = {
        name: [PairRow(e) for e in examples] if not kto else _with_kl(examples, cfg.max_length, cfg.seed)
        for name, examples in encoded.items()
    }
    unit = "examples" if kto else "pairs"
    facts = {
        "rows": len(train) + len(held),
        "examples": len(rows["train"]),
        "eval_examples": len(rows["eval"]),
        "tokens": tokens,
        "truncated": truncated,
        "data": f"{'; '.join(sources)} → {len(rows['train'])} training / {len(rows['eval'])} held-out "
        f"{unit}, {tokens} tokens" + (f", {truncated} truncated" if truncated else ""),
    }
    if kto:
        desirable = sum(r.item.desirable for r in rows["train"])
        facts.update(desirable=desirable, undesirable=len(rows["train"]) - desirable)
        facts["data"] += f" ({desirable} desirable, {len(rows['train']) - desirable} undesirable)"
    limit = config.eval.samples_in_report if config.eval is not None else 0
    return PreferenceSplits(rows["train"], rows["eval"], _samples(tokenizer, encoded["eval"], limit), facts, warnings)


def collate_rows(rows: list[Row], pad_id: int) -> Batch:
    """Rows → one batch; ``count`` = rows (pairs, or kto examples). Pairs: ``input_ids`` / ``labels`` (2B, T),
    chosen rows first, or the shared-prompt layout (``preference.data.collate_pairs_shared``) when the rows
    say so. KTO: ``input_ids`` / ``labels`` (B, T), ``desirable`` (B,), ``kl_input_ids`` / ``kl_labels``
    (B, T'). With precomputed references: ``ref_logps`` (2B,) or (B,) and ``kl_ref_logps`` (B,)."""
    if isinstance(rows[0], PairRow) and all(r.shared_prompt for r in rows):
        inputs = collate_pairs_shared([r.pair for r in rows], pad_id)
    elif isinstance(rows[0], PairRow):
        inputs = collate_pairs([r.pair for r in rows], pad_id)
        del (inputs["margin"], inputs["attention_mask"])  # no margins in DPO; right padding needs no mask
    else:
        inputs = collate_unpaired([r.item for r in rows], pad_id)
        kl = pad([r.kl for r in rows], pad_id)
        del inputs["attention_mask"]
        inputs.update(kl_input_ids=kl["input_ids"], kl_labels=kl["labels"])
    if all(r.ref is not None for r in rows):
        first, second = (torch.tensor(values, dtype=torch.float32) for values in zip(*(r.ref for r in rows)))
        if isinstance(rows[0], PairRow):
            inputs["ref_logps"] = torch.cat([first, second])  # (2B,), the layout of input_ids
        else:
            inputs.update(ref_logps=first, kl_ref_logps=second)
    return Batch(inputs=inputs, count=len(rows), tokens=sum(len(r.input_ids) for r in rows))


KL_KEYS = {"kl_input_ids": "input_ids", "kl_labels": "labels"}
_NOT_SEQUENCES = ("ref_logps", "kl_ref_logps", "desirable")


def split_sequences(inputs: dict, device) -> tuple[dict, dict | None]:
    """A collated batch → (its sequences, KTO's mismatched sequences or None), on ``device``: what
    ``logps.response_logps`` takes, without the reference log-probs and labels riding along."""
    sequences = {k: v.to(device) for k, v in inputs.items() if k not in KL_KEYS and k not in _NOT_SEQUENCES}
    kl = {KL_KEYS[k]: v.to(device) for k, v in inputs.items() if k in KL_KEYS} or None
    return sequences, kl
