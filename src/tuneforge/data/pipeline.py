"""From a data config and a tokenizer to tokenised train / eval splits.

records (sources.py) → rename columns → parse + validate per format →
split → render (templates.py / formats) → truncate → report, cached on disk.

Decisions the config leaves open:

- Splitting without an ``eval`` source holds out ``eval_fraction`` of the
  *records* (documents for ``text``; blocks when there are too few documents,
  e.g. one ``.txt`` file), seeded with ``seed``; Natural Instructions follows
  ``natural_instructions.split_by`` instead.
- Examples longer than ``max_length`` are cut from the right (the prompt is
  kept whole so generation prompts stay exact prefixes); those left with no
  loss tokens are dropped with a warning. Both count in ``report.truncated``.
- ``max_examples`` caps the training examples (blocks for ``text``) after the
  split; rendering stops once the cap is reached.
- Report counts (examples, tokens, loss tokens) are over the training split;
  ``rows`` counts records read from all sources (instances for Natural
  Instructions). Loss tokens are counted after the shift (``labels[1:]``).
- The chat template is checked (``templates.check_template``) on up to 8 real
  rendered training samples on every load, not only in ``validate``: a masked
  end-of-turn token must stop a run before training.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tuneforge.data import cache
from tuneforge.data.formats import (
    RenderSettings,
    chat,
    loss_tokens,
    natural_instructions,
    prompt_completion,
    split_indices,
    text,
)
from tuneforge.data.formats.natural_instructions import PromptOptions
from tuneforge.data.sources import fingerprint_sources, read_records, with_columns
from tuneforge.data.templates import (
    PLAIN_CHAT_TEMPLATE,
    TemplateError,
    boundary_warnings,
    check_template,
    use_chat_template,
)
from tuneforge.data.templates import VERSION as TEMPLATES_VERSION
from tuneforge.data.types import DataError, DataReport, Example, GenerationSample, Record, Splits

PIPELINE_VERSION = 1
FORMATS = {
    "text": text,
    "prompt_completion": prompt_completion,
    "chat": chat,
    "natural_instructions": natural_instructions,
}
TEMPLATE_SAMPLES = 8


def _rename(records: list[Record], columns: dict[str, str]) -> list[Record]:
    """Map user column names onto the format's field names (``columns: {field: column}``)."""
    if not columns:
        return records
    return [Record(with_columns(record, columns), record.where) for record in records]


def _check_columns(fmt: str, columns: dict[str, str], problems: list[str], warnings: list[str]) -> None:
    if fmt == "natural_instructions":
        if columns:
            warnings.append("columns is ignored for natural_instructions (task files have a fixed schema)")
        return
    fields = FORMATS[fmt].FIELDS
    for field in columns:
        if field not in fields:
            problems.append(f"columns.{field}: not a field of format '{fmt}' (its fields: {', '.join(fields)})")


def _read(source, columns, problems: list[str]) -> list[Record]:
    return _rename(list(read_records(source, problems=problems)), columns)


def _render_all(
    items: list, render: Callable[[object], Example], max_length: int, cap: int | None, report: DataReport
) -> list[Example]:
    """Render, truncate (counted) and drop examples left without loss tokens."""
    out: list[Example] = []
    dropped = 0
    for item in items:
        if cap is not None and len(out) >= cap:
            break
        try:
            example = render(item)
        except TemplateError as err:
            raise DataError([f"{item.where}: {p}" for p in err.problems]) from err
        if len(example.input_ids) > max_length:
            report.truncated += 1
            example = Example(example.input_ids[:max_length], example.labels[:max_length], example.where)
        if loss_tokens(example.labels) == 0:
            dropped += 1
            continue
        out.append(example)
    if dropped:
        report.warnings.append(
            f"{dropped} example(s) had no loss tokens (left) after truncation to max_length={max_length} "
            "and were dropped; raise max_length or shorten prompts"
        )
    return out


def _sft_items(cfg, train_records, eval_records, problems, report) -> tuple[list, list]:
    """Parsed (train, eval) items for prompt_completion / chat / natural_instructions."""
    fmt = cfg.format
    if fmt != "natural_instructions":
        module = FORMATS[fmt]
        train = [x for x in (module.parse(r, problems) for r in train_records) if x is not None]
        if eval_records is not None:
            held = [x for x in (module.parse(r, problems) for r in eval_records) if x is not None]
            return train, held
        train_idx, eval_idx = split_indices(len(train), cfg.eval_fraction, cfg.seed)
        return [train[i] for i in train_idx], [train[i] for i in eval_idx]
    ni = cfg.natural_instructions
    options = PromptOptions(ni.num_positive, ni.num_negative, ni.include_explanations, ni.include_avoid_and_emphasis)
    parse = natural_instructions.parse_task
    tasks = [t for t in (parse(r, problems) for r in train_records) if t is not None]
    cap = ni.max_instances_per_task
    if eval_records is not None:
        held_tasks = [t for t in (parse(r, problems) for r in eval_records) if t is not None]
        train_sel = [(t, natural_instructions.capped(t, cap, cfg.seed)) for t in tasks]
        eval_sel = [(t, natural_instructions.capped(t, cap, cfg.seed)) for t in held_tasks]
    else:
        if ni.split_by == "task" and cfg.eval_fraction > 0 and len(tasks) < 2:
            problems.append(
                f"natural_instructions.split_by: 'task' holds out whole tasks, but only {len(tasks)} task file(s) "
                "were given; give more tasks, an eval source, or use split_by: instance"
            )
        train_sel, eval_sel = natural_instructions.split_tasks(
            tasks, split_by=ni.split_by, eval_fraction=cfg.eval_fraction, seed=cfg.seed, cap=cap
        )
    report.rows = sum(len(instances) for _, instances in train_sel + eval_sel)
    to_pairs = natural_instructions.task_pairs
    train = [p for task, instances in train_sel for p in to_pairs(task, options, instances)]
    held = [p for task, instances in eval_sel for p in to_pairs(task, options, instances)]
    return train, held


def build(cfg, tokenizer) -> tuple[Splits, list[str]]:
    """Read, validate, split and render; return the splits and every data problem found.

    Raises DataError only for what stops reading altogether (a missing source, an
    unusable chat template); row-level problems are returned.
    """
    problems: list[str] = []
    report = DataReport()
    _check_columns(cfg.format, cfg.columns, problems, report.warnings)
    train_records = _read(cfg.train, cfg.columns, problems)
    eval_records = _read(cfg.eval, cfg.columns, problems) if cfg.eval is not None else None
    report.rows = len(train_records) + len(eval_records or [])

    if cfg.format == "text":
        docs = text.documents(train_records, problems)
        if eval_records is not None:
            held_docs = text.documents(eval_records, problems)
        else:
            train_idx, eval_idx = split_indices(len(docs), cfg.eval_fraction, cfg.seed)
            docs, held_docs = [docs[i] for i in train_idx], [docs[i] for i in eval_idx]
        train = text.build_blocks(docs, tokenizer, cfg.max_length, None if held_docs else cfg.max_examples)
        held = text.build_blocks(held_docs, tokenizer, cfg.max_length)
        if eval_records is None and not held and len(train) > 1:
            # Too few documents to hold one out (e.g. a single .txt): hold out blocks instead.
            train_idx, eval_idx = split_indices(len(train), cfg.eval_fraction, cfg.seed)
            train, held = [train[i] for i in train_idx], [train[i] for i in eval_idx]
        train = train[: cfg.max_examples] if cfg.max_examples else train
        samples: list[GenerationSample] = []
        conversations: list[list[dict]] = []
        conversation_tools: list | None = None
        chat_template = None
    else:
        settings = RenderSettings(
            use_chat_template(tokenizer, cfg.template), cfg.completion_only_loss, cfg.system_prompt
        )
        module = chat if cfg.format == "chat" else prompt_completion
        train_items, held_items = _sft_items(cfg, train_records, eval_records, problems, report)
        render = lambda item: module.render(tokenizer, item, settings)  # noqa: E731
        train = _render_all(train_items, render, cfg.max_length, cfg.max_examples, report)
        held = _render_all(held_items, render, cfg.max_length, None, DataReport())
        samples = [module.sample(tokenizer, item, settings) for item in held_items]
        conversation_tools = None
        if cfg.format == "chat":
            views = [chat.template_view(tokenizer, c, settings) for c in train_items[:TEMPLATE_SAMPLES]]
            conversations = [messages for messages, _ in views]
            conversation_tools = [tools for _, tools in views]
            chat_template = None if settings.chat else PLAIN_CHAT_TEMPLATE
        else:
            conversations = [prompt_completion.conversation(p, settings) for p in train_items[:TEMPLATE_SAMPLES]]
            conversations = conversations if settings.chat else []
            chat_template = None

    if conversations:
        problems.extend(check_template(tokenizer, conversations, chat_template=chat_template, tools=conversation_tools))
        report.warnings.extend(
            boundary_warnings(tokenizer, conversations, chat_template=chat_template, tools=conversation_tools)
        )
    report.examples = len(train)
    report.tokens = sum(len(e.input_ids) for e in train)
    report.loss_tokens = sum(loss_tokens(e.labels) for e in train)
    if not problems and report.loss_tokens == 0:
        problems.append(
            "train: no loss tokens at all (no training examples, or every label is masked); "
            "check the source, completion_only_loss and max_length"
        )
    if cfg.eval is None and cfg.eval_fraction > 0 and not held:
        report.warnings.append(f"eval_fraction={cfg.eval_fraction} held out nothing (too few rows or tasks)")
    if report.truncated:
        report.warnings.append(
            f"{report.truncated} training example(s) were longer than max_length={cfg.max_length} and were cut"
        )
    return Splits(train, held, samples, report), problems


def _key(cfg, tokenizer) -> str:
    parts = {
        "config": cfg.model_dump(mode="json"),
        "train": fingerprint_sources(cfg.train),
        "eval": fingerprint_sources(cfg.eval),
        "tokenizer": cache.tokenizer_fingerprint(tokenizer),
        "versions": {
            "pipeline": PIPELINE_VERSION,
            "templates": TEMPLATES_VERSION,
            **{name: module.VERSION for name, module in FORMATS.items()},
        },
    }
    return cache.cache_key(parts)


def load_splits(cfg, tokenizer, *, cache_dir: str | Path | None = None, use_cache: bool = True) -> Splits:
    """Tokenised train / eval examples, eval generation samples and the report.

    ``cfg`` is the config's ``DataConfig`` section. Raises DataError listing the
    bad rows (``file:line: field: problem``) when any row is bad. Results are
    cached under ``cache_dir`` (default ``cache_root()/"tokenized"``).
    """
    key = _key(cfg, tokenizer) if use_cache else ""
    if use_cache:
        hit = cache.load(key, Path(cache_dir) if cache_dir is not None else None)
        if hit is not None:
            return hit
    splits, problems = build(cfg, tokenizer)
    if problems:
        raise DataError(problems, hint="Fix these rows (or run `tuneforge validate` to see a full report).")
    if use_cache:
        cache.save(splits, key, Path(cache_dir) if cache_dir is not None else None)
    return splits


def validate_data(cfg, tokenizer, *, max_problems: int = 20) -> DataReport:
    """Read every row, render everything and check the template; never raises for bad data.

    The report's ``problems`` hold at most ``max_problems`` lines (plus a count of the rest).
    """
    try:
        splits, problems = build(cfg, tokenizer)
        report = splits.report
    except DataError as err:
        report, problems = DataReport(), list(err.problems)
    if len(problems) > max_problems:
        problems = problems[:max_problems] + [f"… and {len(problems) - max_problems} more problem(s)"]
    report.problems = problems
    return report
