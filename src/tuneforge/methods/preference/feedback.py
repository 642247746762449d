"""Human feedback rows → normalised records: pairs, rankings and unpaired judgements.

Five forms, one per ``feedback_format`` (``"auto"`` reads the first row's keys):

- ``pairs``: ``{"prompt", "chosen", "rejected"}``, optional ``margin`` (a number,
  Llama 2's per-pair margin). ``prompt`` is a string or a list of messages ending
  with a user turn; ``chosen`` / ``rejected`` are strings or one assistant
  message. Without ``prompt``, ``chosen`` and ``rejected`` may be whole
  conversations that share every turn but their last assistant message (the
  Anthropic-HH shape): those shared turns are the prompt. Conversations that
  diverge earlier are refused (a response is one assistant turn).
- ``rankings``: ``{"prompt", "responses": [best, …, worst]}``, or with
  ``"ranks"`` (lower is better, 1 = best) to order them. One ranking is one
  :class:`Ranking` record, so its C(K,2) pairs stay in one batch element as in
  InstructGPT (Ouyang et al. 2022, arXiv 2203.02155). Tied ranks are refused: a
  ranking is a total order; give tied data as ratings, where equal scores
  simply make no pair.
- ``ratings``: rows ``{"prompt", "response", "score"}`` (several per prompt) or
  ``{"prompt", "responses", "scores"}``. A prompt's rated responses (merged over
  rows, in order of first appearance) become every pair whose score difference
  is at least ``min_gap``; equal scores never make a pair.
- ``thumbs``: ``{"prompt", "completion" | "response", "label"}`` with ``label``
  true/false, "up"/"down" or 1/0 → :class:`Unpaired` records for KTO
  (Ethayarajh et al. 2024, arXiv 2402.01306).
- ``corrections``: ``{"prompt", "response" | "original", "correction" |
  "corrected"}`` → a pair with the correction chosen over the original.

Every malformed row is one line ``file:line: field: problem``; all of a
source's lines are raised together as one DataError. What is dropped is not an
error but a note: a pair whose chosen equals its rejected (compared after
stripping surrounding whitespace; it teaches nothing and flattens the DPO loss
at ln 2) is dropped, counted per reason in the source's :class:`SourceReport`,
and said in ``report.warnings`` (returned notes, not ``warnings.warn``: they
join ``DataReport.warnings`` the way every other data warning does).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from ...data.formats.chat import check_prompt_turns, clean_messages
from ...data.sources import read_records, with_columns
from ...data.types import DataError, Record
from .losses import ranking_pairs
from .names import FEEDBACK_FORMATS, FORMS  # noqa: F401  (re-exported; config.py reads them from names.py)

NEEDS = {  # what each form's rows carry, for error messages
    "pairs": "prompt, chosen, rejected (optional margin); or chosen and rejected as whole conversations",
    "rankings": "prompt, responses (best → worst); or prompt, responses, ranks (1 = best)",
    "ratings": "prompt, response, score (several rows per prompt); or prompt, responses, scores",
    "thumbs": "prompt, completion (or response), label (true/false, up/down, 1/0)",
    "corrections": "prompt, response (or original), correction (or corrected)",
}
SAME = "chosen == rejected"
REPEATED = "repeated response in a ranking (the lower-ranked copy)"
TIED = "equal scores (no preference)"
BELOW_GAP = "score gap below min_gap"
ALONE = "prompt with a single rated response"
Prompt = str | list[dict]  # plain text, or messages ending with a user turn


@dataclass
class PreferencePair:
    """One preference: ``chosen`` ≻ ``rejected`` for ``prompt``."""

    prompt: Prompt
    chosen: str
    rejected: str
    where: str
    margin: float | None = None


@dataclass
class Ranking:
    """K ≥ 2 distinct responses to one prompt, best → worst (InstructGPT, arXiv 2203.02155).

    Kept whole: a reward model scores each response once and averages the
    Bradley–Terry losses of the C(K,2) pairs of :meth:`pairs` (``losses.ranking_loss``).
    """

    prompt: Prompt
    responses: list[str]
    where: str

    def pairs(self) -> list[tuple[int, int]]:
        """(better, worse) indices into ``responses``: C(K,2) of them."""
        return ranking_pairs(len(self.responses))


@dataclass
class Unpaired:
    """One response labelled desirable or not (thumbs up / down), for KTO (arXiv 2402.01306)."""

    prompt: Prompt
    response: str
    desirable: bool
    where: str


FeedbackRecord = PreferencePair | Ranking | Unpaired


@dataclass
class SourceReport:
    """What one source gave: rows read, records and pairs produced, and what was dropped, by reason."""

    source: str
    form: str
    rows: int = 0
    records: int = 0
    pairs: int = 0  # preference pairs the records hold (a K-way ranking holds C(K,2)); 0 for thumbs
    desirable: int = 0  # thumbs only
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason → where each dropped item was

    def drop(self, reason: str, where: str) -> None:
        self.dropped.setdefault(reason, []).append(where)

    @property
    def warnings(self) -> list[str]:
        return [
            f"{self.source}: {len(at)} dropped: {reason} (first at {', '.join(at[:3])})"
            for reason, at in self.dropped.items()
        ]

    def summary(self) -> str:
        made = (
            f"{self.records} unpaired ({self.desirable} desirable, {self.records - self.desirable} undesirable)"
            if self.form == "thumbs"
            else f"{self.records} records, {self.pairs} pairs"
        )
        lost = "; ".join(f"{len(at)} {reason}" for reason, at in self.dropped.items())
        return f"{self.source} ({self.form}): {self.rows} rows → {made}" + (f"; dropped {lost}" if lost else "")


@dataclass
class Feedback:
    """Records of every source, in order, and one report per source."""

    records: list[FeedbackRecord]
    reports: list[SourceReport]

    @property
    def warnings(self) -> list[str]:
        return [line for report in self.reports for line in report.warnings]


# ----------------------------------------------------------------------------- field checks


def _missing(data: dict, name: str, where: str, problems: list[str]) -> None:
    present = ", ".join(map(str, data)) or "none"
    problems.append(f"{where}: {name}: missing (fields present: {present})")


def _messages(value: object, name: str, where: str, problems: list[str]) -> list[dict] | None:
    """A non-empty list of ``{role, content}`` with known roles and string contents (other keys dropped)."""
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: {name}: must be a string or a non-empty list of {{role, content}} messages")
        return None
    return clean_messages(value, name, where, problems)


def _prompt(data: dict, where: str, problems: list[str]) -> Prompt | None:
    value = data.get("prompt")
    if value is None:
        _missing(data, "prompt", where, problems)
        return None
    if isinstance(value, str):  # may be empty: an unconditional preference
        return value
    messages = _messages(value, "prompt", where, problems)
    return messages if messages is not None and check_prompt_turns(messages, "prompt", where, problems) else None


def _response(value: object, name: str, where: str, problems: list[str]) -> str | None:
    """A non-empty string, or a list holding exactly one assistant message (its content)."""
    if isinstance(value, list):
        messages = _messages(value, name, where, problems)
        if messages is None:
            return None
        if len(messages) != 1 or messages[0]["role"] != "assistant":
            problems.append(
                f"{where}: {name}: a response given as messages must be exactly one assistant "
                f"message (got roles: {', '.join(m['role'] for m in messages)})"
            )
            return None
        value = messages[0]["content"]
    if not isinstance(value, str):
        problems.append(f"{where}: {name}: must be a string or one assistant message (got {type(value).__name__})")
        return None
    if not value.strip():
        problems.append(f"{where}: {name}: must not be empty")
        return None
    return value


def _field(data: dict, names: tuple[str, ...], where: str, problems: list[str]) -> tuple[str, object] | None:
    """(name, value) of the one alias present; a problem when none or several are."""
    present = [n for n in names if data.get(n) is not None]
    if len(present) == 1:
        return present[0], data[present[0]]
    if present:
        problems.append(f"{where}: {present[1]}: give one of {' or '.join(names)}, not both")
    else:
        _missing(data, " (or ".join(names) + ")" * (len(names) - 1), where, problems)
    return None


def _number(value: object, name: str, where: str, problems: list[str]) -> float | None:
    """A finite number; CSV cells (text) are parsed."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        problems.append(f"{where}: {name}: must be a finite number (got {value!r})")
        return None
    return float(value)


def _same(a: str, b: str) -> bool:
    return a.strip() == b.strip()


# ----------------------------------------------------------------------------- one row per form


def _split_conversations(data: dict, where: str, problems: list[str]) -> tuple[list[dict], str, str] | None:
    """Whole conversations → (shared prompt turns, chosen's last message, rejected's last message)."""
    chosen = _messages(data["chosen"], "chosen", where, problems)
    rejected = _messages(data["rejected"], "rejected", where, problems)
    if chosen is None or rejected is None:
        return None
    for name, conv in (("chosen", chosen), ("rejected", rejected)):
        if conv[-1]["role"] != "assistant":
            problems.append(
                f"{where}: {name}[{len(conv) - 1}].role: a conversation must end with the "
                f"assistant's response (got {conv[-1]['role']!r})"
            )
            return None
    prompt, other = chosen[:-1], rejected[:-1]
    if prompt != other:
        i = next((i for i, (a, b) in enumerate(zip(prompt, other)) if a != b), min(len(prompt), len(other)))
        problems.append(
            f"{where}: rejected[{i}]: differs from chosen[{i}]; without a prompt field, chosen and "
            "rejected must share every turn before their last (assistant) message: that is the prompt"
        )
        return None
    if not prompt:
        problems.append(f"{where}: chosen: a conversation needs the user's turn before the response")
        return None
    if not check_prompt_turns(prompt, "chosen", where, problems):
        return None
    c = _response(chosen[-1]["content"], f"chosen[{len(chosen) - 1}].content", where, problems)
    r = _response(rejected[-1]["content"], f"rejected[{len(rejected) - 1}].content", where, problems)
    return (prompt, c, r) if c is not None and r is not None else None


def parse_pair(data: dict, where: str, problems: list[str]) -> PreferencePair | None:
    before = len(problems)
    for name in ("chosen", "rejected"):
        if data.get(name) is None:
            _missing(data, name, where, problems)
    if len(problems) > before:
        return None
    margin = data.get("margin")
    margin = None if margin is None or margin == "" else _number(margin, "margin", where, problems)
    if data.get("prompt") is None and isinstance(data["chosen"], list) and isinstance(data["rejected"], list):
        split = _split_conversations(data, where, problems)
        if split is None or len(problems) > before:
            return None
        return PreferencePair(split[0], split[1], split[2], where, margin)
    prompt = _prompt(data, where, problems)
    chosen = _response(data["chosen"], "chosen", where, problems)
    rejected = _response(data["rejected"], "rejected", where, problems)
    if len(problems) > before:
        return None
    return PreferencePair(prompt, chosen, rejected, where, margin)


def _ordered_by_ranks(responses: list[str], ranks: object, where: str, problems: list[str]) -> list[str] | None:
    if not isinstance(ranks, list) or len(ranks) != len(responses):
        problems.append(f"{where}: ranks: must be a list of {len(responses)} numbers, one per response (1 = best)")
        return None
    numbers = [_number(r, f"ranks[{i}]", where, problems) for i, r in enumerate(ranks)]
    if any(n is None for n in numbers):
        return None
    seen: dict[float, int] = {}
    for i, n in enumerate(numbers):
        if n in seen:
            problems.append(
                f"{where}: ranks: responses[{seen[n]}] and responses[{i}] share rank {ranks[i]}; ties "
                "are refused (a ranking is a total order): break the tie, or give these rows as "
                "ratings (feedback_format: ratings), where equal scores make no pair"
            )
            return None
        seen[n] = i
    return [responses[i] for i in sorted(range(len(responses)), key=numbers.__getitem__)]


def _response_list(data: dict, where: str, problems: list[str]) -> list[str] | None:
    value = data.get("responses")
    if value is None:
        _missing(data, "responses", where, problems)
        return None
    if not isinstance(value, list) or not value:
        problems.append(f"{where}: responses: must be a non-empty list of responses")
        return None
    out = [_response(v, f"responses[{i}]", where, problems) for i, v in enumerate(value)]
    return None if any(r is None for r in out) else out


def parse_ranking(data: dict, where: str, problems: list[str], report: SourceReport) -> Ranking | None:
    """One ranking; a repeated response keeps its best-ranked copy (the others are dropped and counted)."""
    before = len(problems)
    prompt = _prompt(data, where, problems)
    responses = _response_list(data, where, problems)
    if responses is not None and len(responses) < 2:
        problems.append(f"{where}: responses: a ranking needs at least 2 responses (got 1)")
    if len(problems) > before:
        return None
    if data.get("ranks") is not None:
        responses = _ordered_by_ranks(responses, data["ranks"], where, problems)
        if responses is None:
            return None
    kept: list[str] = []
    for response in responses:
        if any(_same(response, k) for k in kept):
            report.drop(REPEATED, where)
        else:
            kept.append(response)
    if len(kept) < 2:
        report.drop(SAME, where)
        return None
    return Ranking(prompt, kept, where)


def _rated(data: dict, where: str, problems: list[str]) -> tuple[Prompt, list[tuple[str, float]]] | None:
    """(prompt, [(response, score)]) of one ratings row, in either of its two shapes."""
    before = len(problems)
    prompt = _prompt(data, where, problems)
    if data.get("responses") is not None or data.get("scores") is not None:
        responses = _response_list(data, where, problems)
        scores = data.get("scores")
        if not isinstance(scores, list) or (responses is not None and len(scores) != len(responses)):
            problems.append(f"{where}: scores: must be a list of numbers, one per response")
            return None
        numbers = [_number(s, f"scores[{i}]", where, problems) for i, s in enumerate(scores)]
        return None if len(problems) > before else (prompt, list(zip(responses, numbers)))
    for name in ("response", "score"):
        if data.get(name) is None:
            _missing(data, name, where, problems)
    if len(problems) > before:
        return None
    response = _response(data["response"], "response", where, problems)
    score = _number(data["score"], "score", where, problems)
    return None if len(problems) > before else (prompt, [(response, score)])


def _prompt_key(prompt: Prompt) -> str:
    return json.dumps(prompt, sort_keys=True)


def split_by_prompt(
    records: list[FeedbackRecord], fraction: float, seed: int
) -> tuple[list[FeedbackRecord], list[FeedbackRecord]]:
    """(train, held-out) records, ``fraction`` of the distinct prompts held out, in the original order.

    All records of one prompt stay on one side: ratings turn one prompt into several pairs that share
    responses, and a row split would put the same response on both sides.
    """
    from ...data.formats import split_indices

    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(_prompt_key(record.prompt), []).append(i)
    keys = list(groups)
    _, eval_idx = split_indices(len(keys), fraction, seed)
    held = {i for g in eval_idx for i in groups[keys[g]]}
    return [r for i, r in enumerate(records) if i not in held], [records[i] for i in sorted(held)]


def ratings_to_pairs(
    rated: list[tuple[Prompt, str, float, str]], min_gap: float, report: SourceReport
) -> list[PreferencePair]:
    """(prompt, response, score, where) items → every pair of one prompt's responses whose scores
    differ by at least ``min_gap`` (and by more than 0), higher score chosen."""
    groups: dict[str, list[tuple[Prompt, str, float, str]]] = {}
    for item in rated:
        groups.setdefault(_prompt_key(item[0]), []).append(item)
    pairs = []
    for items in groups.values():
        if len(items) == 1:
            report.drop(ALONE, items[0][3])
        ordered = sorted(items, key=lambda item: -item[2])  # stable: ties keep their order
        for i, (prompt, better, high, at_w) in enumerate(ordered):
            for _, worse, low, at_l in ordered[i + 1 :]:
                where = at_w if at_w == at_l else f"{at_w} ≻ {at_l}"
                if high == low:
                    report.drop(TIED, where)
                elif high - low < min_gap - 1e-9:  # 0.3 − 0.1 is 0.19999999999999998, and meets a 0.2 gap
                    report.drop(BELOW_GAP, where)
                elif _same(better, worse):
                    report.drop(SAME, where)
                else:
                    pairs.append(PreferencePair(prompt, better, worse, where))
    return pairs


def parse_unpaired(data: dict, where: str, problems: list[str]) -> Unpaired | None:
    before = len(problems)
    prompt = _prompt(data, where, problems)
    found = _field(data, ("completion", "response"), where, problems)
    response = _response(found[1], found[0], where, problems) if found else None
    desirable = _label(data, where, problems)
    return None if len(problems) > before else Unpaired(prompt, response, desirable, where)


_LABELS = {"up": True, "down": False, "true": True, "false": False, "1": True, "0": False}


def _label(data: dict, where: str, problems: list[str]) -> bool | None:
    value = data.get("label")
    if value is None:
        _missing(data, "label", where, problems)
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _LABELS:
        return _LABELS[value.strip().lower()]
    problems.append(f'{where}: label: must be true/false, "up"/"down" or 1/0 (got {value!r})')
    return None


def parse_correction(data: dict, where: str, problems: list[str]) -> PreferencePair | None:
    before = len(problems)
    prompt = _prompt(data, where, problems)
    original = _field(data, ("response", "original"), where, problems)
    corrected = _field(data, ("correction", "corrected"), where, problems)
    rejected = _response(original[1], original[0], where, problems) if original else None
    chosen = _response(corrected[1], corrected[0], where, problems) if corrected else None
    return None if len(problems) > before else PreferencePair(prompt, chosen, rejected, where)


# ----------------------------------------------------------------------------- detection and sources


def detect_form(data: dict, where: str) -> str:
    """The feedback form a row's keys announce; DataError listing each form's fields when none fits."""
    keys = {k for k, v in data.items() if v is not None}
    if {"chosen", "rejected"} <= keys:
        return "pairs"
    if keys & {"correction", "corrected"}:
        return "corrections"
    if keys & {"score", "scores"}:
        return "ratings"
    if "label" in keys:
        return "thumbs"
    if keys & {"responses", "ranks"}:
        return "rankings"
    needs = "\n".join(f"  {form}: {fields}" for form, fields in NEEDS.items())
    raise DataError(
        [f"{where}: cannot tell the feedback form from the fields {', '.join(sorted(keys)) or 'none'}"],
        hint=f"Each form needs these fields (or set feedback_format):\n{needs}",
    )


def parse_feedback(
    records: Iterable[Record],
    feedback_format: str = "auto",
    *,
    min_gap: float = 0.0,
    columns: dict[str, str] | None = None,
    source: str = "",
    problems: list[str],
) -> tuple[list[FeedbackRecord], SourceReport]:
    """Rows of one source → records and its report; bad rows become lines in ``problems``."""
    if feedback_format not in FEEDBACK_FORMATS:
        raise ValueError(f"unknown feedback_format {feedback_format!r}; write one of: {', '.join(FEEDBACK_FORMATS)}")
    if min_gap < 0:
        raise ValueError(f"min_gap must be >= 0, got {min_gap}")
    rows = [(with_columns(r, columns) if columns else r.data, r.where) for r in records]
    form = feedback_format
    if form == "auto":
        if not rows:
            problems.append(f"{source}: no rows")
            return [], SourceReport(source, form)
        form = detect_form(*rows[0])
    report = SourceReport(source, form, rows=len(rows))
    out: list[FeedbackRecord] = []
    rated: list[tuple[Prompt, str, float, str]] = []
    for data, where in rows:
        if form == "pairs":
            out.append(parse_pair(data, where, problems))
        elif form == "corrections":
            out.append(parse_correction(data, where, problems))
        elif form == "rankings":
            out.append(parse_ranking(data, where, problems, report))
        elif form == "thumbs":
            out.append(parse_unpaired(data, where, problems))
        else:
            one = _rated(data, where, problems)
            if one is not None:
                rated.extend((one[0], response, score, where) for response, score in one[1])
    if form == "ratings":
        out = list(ratings_to_pairs(rated, min_gap, report))
    out = [r for r in out if r is not None and not _drop_same(r, report)]
    report.records = len(out)
    report.pairs = sum(len(r.pairs()) if isinstance(r, Ranking) else 1 for r in out if not isinstance(r, Unpaired))
    report.desirable = sum(isinstance(r, Unpaired) and r.desirable for r in out)
    return out, report


def _drop_same(record: FeedbackRecord, report: SourceReport) -> bool:
    if isinstance(record, PreferencePair) and _same(record.chosen, record.rejected):
        report.drop(SAME, record.where)
        return True
    return False


def read_feedback(
    source: str | list[str],
    feedback_format: str = "auto",
    *,
    min_gap: float = 0.0,
    columns: dict[str, str] | None = None,
) -> Feedback:
    """Read every source (a file, folder, glob or hub dataset, as ``data.sources`` reads them).

    Each source is parsed on its own (``auto`` looks at its first row) and reported on
    its own. Raises one DataError listing every malformed row of every source.
    """
    problems: list[str] = []
    records: list[FeedbackRecord] = []
    reports: list[SourceReport] = []
    for one in [source] if isinstance(source, str) else list(source):
        got, report = parse_feedback(
            read_records(one, problems=problems),
            feedback_format,
            min_gap=min_gap,
            columns=columns,
            source=one,
            problems=problems,
        )
        records.extend(got)
        reports.append(report)
    if problems:
        raise DataError(
            problems,
            hint="Fix these rows; each form's fields:\n"
            + "\n".join(f"  {form}: {fields}" for form, fields in NEEDS.items()),
        )
    return Feedback(records, reports)
