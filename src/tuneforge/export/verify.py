"""``tuneforge verify-export DIR --run RUN``: does the exported artifact answer like the run that made it?

For each held-out prompt of the run (its ``data.eval``, or the ``eval_fraction`` split, as training
made it) the artifact's runtime (``runtimes.py``) renders the conversation through the artifact's own
template, decodes greedily for the run's ``eval.max_new_tokens`` and the answer is scored with the
run's ``eval.scorers`` against the same references. Beside the run's own answers to the same
prompts (its model as its evaluation loaded it, :func:`_run_answers`) it reports:

- prompt parity: the artifact's prompt ids equal the ids training rendered for that prompt
  (``data.run_prompt.render_run_prompt``): a wrong template, system prompt or tokenizer shows here
  first, independently of the weights;
- per metric: run, export, drop;
- agreement: answers identical to the run's (informative: quantization may change wording);
- stop rate: answers that ended on the artifact's own stop rule within the budget.

It fails (exit 1) when any prompt differs from training's, any answer never stops, or a metric drops
by more than the tolerance for the export's precision (:data:`TOLERANCES`; docs/EXPORT.md says why).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import EXPORT_RECORD, ExportRefused
from .runtimes import GGUFPrompting, Runtime, open_runtime
from .source import RunSource, resolve_source

# Largest allowed drop of any run metric (a score in [0, 1]), by the export's weight precision.
TOLERANCES = {"merged": 0.02, "f32": 0.02, "f16": 0.02, "bf16": 0.02, "q8_0": 0.05}
LOW_BIT_TOLERANCE = 0.10  # q5_* / q4_*: 4-5 bit weights of a 135M model move answers more
SHOWN_DIFFERENCES = 5


@dataclass
class HeldOut:
    messages: list[dict]  # the conversation up to the answer, without the run's system prompt
    references: list[str]
    prompt: str  # as the report shows it


@dataclass
class Verification:
    record: dict
    passed: bool
    failures: list[str] = field(default_factory=list)


def tolerance_for(quant: str | None, fmt: str) -> float:
    if fmt == "merged":
        return TOLERANCES["merged"]
    return TOLERANCES.get(quant or "", LOW_BIT_TOLERANCE)


def heldout_prompts(source: RunSource, data_path: str | None = None) -> list[HeldOut]:
    """The run's held-out prompts as conversations, in the order training scored them.

    The same reading and split as the data pipeline (``data.pipeline``): records renamed by
    ``data.columns``, parsed by the format, and ``split_indices(eval_fraction, seed)`` without ``data.eval``.
    """
    from ..config.loader import validate_dict
    from ..data import Record, read_records
    from ..data.formats import chat, split_indices
    from ..data.formats import prompt_completion as pc
    from ..data.sources import with_columns

    if not source.config:
        raise ExportRefused(f"--run {source.label}: no config.yaml; verify-export needs the run folder (runs/NAME)")
    config = validate_dict(source.config, str(source.run_dir / "config.yaml"))  # type: ignore[operator]
    cfg = config.data
    if cfg.format not in ("chat", "prompt_completion"):
        raise ExportRefused(
            f"--run: data.format {cfg.format} is not checked by verify-export (chat, prompt_completion)"
        )
    module = chat if cfg.format == "chat" else pc
    problems: list[str] = []
    held_source = data_path or cfg.eval
    try:
        records = list(read_records(held_source or cfg.train, problems=problems))
    except Exception as exc:
        raise ExportRefused(
            f"--run: cannot read the run's held-out data ({exc}); run from the folder training ran in, or pass "
            "--data the held-out JSONL"
        ) from None
    if cfg.columns:
        records = [Record(with_columns(r, cfg.columns), r.where) for r in records]
    items = [x for x in (module.parse(r, problems) for r in records) if x is not None]
    if held_source is None:
        items = [items[i] for i in split_indices(len(items), cfg.eval_fraction, cfg.seed)[1]]
    if config.eval and config.eval.num_samples:
        items = items[: config.eval.num_samples]
    out = []
    for item in items:
        if isinstance(item, chat.Conversation):
            messages = item.messages
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            turns = [m for m in messages[:last] if m["role"] != "system"]
            out.append(HeldOut(messages[:last], [messages[last]["content"]], turns[-1]["content"] if turns else ""))
        else:
            refs = item.references or [item.completion]
            out.append(HeldOut([{"role": "user", "content": item.prompt}], refs, item.display or item.prompt))
    return out


def _run_answers(source: RunSource, prompts: list[list[int]], budget: int, batch_size: int) -> list[str]:
    """The run's own greedy answers to ``prompts`` (its training-rendered ids), as its evaluation made them.

    The run model is loaded as training evaluated it (``method.load_output``: the base, quantized as in
    training, with the adapter on top, unmerged) and decoded by ``eval.generation.generate``. Cached in
    ``RUN/exports/run_answers.cache`` per prompts and budget, so checking several exports decodes once.
    """
    import hashlib

    import torch

    from ..config.loader import validate_dict
    from ..eval.generation import generate
    from ..models.load import load_tokenizer
    from ..registry import get_method

    key = hashlib.sha256(json.dumps([prompts, budget]).encode()).hexdigest()[:16]
    cache = source.run_dir / "exports" / "run_answers.cache" if source.run_dir else None
    if cache is not None and cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return cached["answers"]
    config = validate_dict(source.config, "config.yaml")
    model = get_method(config.method).load_output(config, source.folder, dtype=torch.float32).eval()
    tokenizer = load_tokenizer(
        str(source.folder) if (source.folder / "tokenizer_config.json").exists() else source.base
    )
    answers = generate(model, tokenizer, prompts, max_new_tokens=budget, batch_size=batch_size, progress=False)
    if cache is not None:
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps({"key": key, "answers": answers}, ensure_ascii=False))
    return answers


def _recorded_metrics(source: RunSource) -> dict:
    path = (source.run_dir or source.folder) / "summary.json"
    return (json.loads(path.read_text()).get("after") or {}) if path.is_file() else {}


def read_export(folder: Path) -> tuple[str, str | None, Path, GGUFPrompting, dict]:
    """(format, quant, model path, prompting, record) of an export folder."""
    from .ollama import MODELFILE, parse_modelfile

    record_path = folder / EXPORT_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if (folder / MODELFILE).is_file():
        modelfile = parse_modelfile(folder / MODELFILE)
        gguf_path = (folder / modelfile.model).resolve()
        prompting = GGUFPrompting(
            go_template=modelfile.template, system=modelfile.system, stop_strings=tuple(modelfile.stops)
        )
        if modelfile.template is None:  # Ollama then uses the GGUF's own template
            prompting = GGUFPrompting(system=modelfile.system, stop_strings=tuple(modelfile.stops))
        return "ollama", record.get("quant"), gguf_path, prompting, record
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        return "gguf", record.get("quant"), ggufs[0], GGUFPrompting(), record
    if (folder / "config.json").is_file():
        return "merged", record.get("quant"), folder, GGUFPrompting(), record
    raise ExportRefused(f"{folder}: no Modelfile, .gguf or config.json here; give a folder `tuneforge export` wrote")


def verify_export(
    folder: str | Path,
    run: str | Path,
    *,
    data_path: str | None = None,
    max_new_tokens: int | None = None,
    tolerance: float | None = None,
    runtime: str = "auto",
    progress=None,
) -> Verification:
    """Run the check described in the module docstring; ``progress(i, n)`` is called after each answer."""
    from ..adapters.inference import tokenizer_folder
    from ..data.run_prompt import render_run_prompt
    from ..eval.scorers import best_reference, resolve_scorer
    from ..models.load import load_tokenizer

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"DIR: {folder} is not a folder; give the --output folder of `tuneforge export`")
    source = resolve_source(run)
    fmt, quant, model_path, prompting, record = read_export(folder)
    samples = heldout_prompts(source, data_path)
    if not samples:
        raise ExportRefused(f"--run {source.label}: no held-out prompts (data.eval / data.eval_fraction)")
    eval_cfg = source.config.get("eval") or {}
    scorers = {name: resolve_scorer(name) for name in eval_cfg.get("scorers") or ["exact_match"]}
    budget = max_new_tokens or int(eval_cfg.get("max_new_tokens") or 128)
    run_tokenizer = load_tokenizer(str(tokenizer_folder(source.folder) or source.base))
    trained = [render_run_prompt(run_tokenizer, s.messages, source.rendering) for s in samples]
    run_answers = _run_answers(source, trained, budget, int(eval_cfg.get("batch_size") or 8))
    recorded = _recorded_metrics(source)

    started = time.perf_counter()
    engine: Runtime = open_runtime(fmt, model_path, prompting, runtime=runtime)
    loaded = time.perf_counter() - started
    rows = []
    for i, sample in enumerate(samples):
        ids = engine.prompt_ids(sample.messages)
        answer = engine.answer(sample.messages, budget)
        scores = {n: best_reference(f, answer.text, sample.references)[0] for n, f in scorers.items()}
        rows.append((sample, ids == trained[i], answer, scores, run_answers[i]))
        if progress:
            progress(i + 1, len(samples))
    n = len(rows)
    metrics = {}
    for name in scorers:
        export_value = sum(r[3][name] for r in rows) / n
        run_value = sum(best_reference(scorers[name], r[4], r[0].references)[0] for r in rows) / n
        metrics[name] = {
            "run": round(run_value, 4),
            "export": round(export_value, 4),
            "drop": round(run_value - export_value, 4),
            "run_recorded": recorded.get(name),  # what training's own evaluation reported (summary.json)
        }
    agreement = sum(r[2].text.strip() == r[4].strip() for r in rows) / n
    parity = sum(r[1] for r in rows) / n
    stop_rate = sum(r[2].stopped for r in rows) / n
    limit = tolerance if tolerance is not None else tolerance_for(quant, fmt)

    failures = []
    if parity < 1:
        bad = next(r for r in rows if not r[1])
        failures.append(
            f"{n - sum(r[1] for r in rows)}/{n} prompts differ from the run's training prompts (first: "
            f"{bad[0].prompt[:60]!r}): the artifact's template, system prompt or tokenizer is not the run's"
        )
    if stop_rate < 1:
        failures.append(f"{n - sum(r[2].stopped for r in rows)}/{n} answers never stopped within {budget} tokens")
    for name, m in metrics.items():
        if m["drop"] is not None and m["drop"] > limit:
            failures.append(
                f"{name} dropped by {m['drop']:.3f} (run {m['run']:.3f} → export {m['export']:.3f}; allowed {limit})"
            )
    differences = [
        {"prompt": r[0].prompt, "run": r[4], "export": r[2].text, "stopped": r[2].stopped}
        for r in rows
        if r[2].text.strip() != r[4].strip()
    ][:SHOWN_DIFFERENCES]
    result = {
        "export": str(folder.resolve()),
        "format": fmt,
        "quant": quant,
        "run": str((source.run_dir or source.folder).resolve()),
        "runtime": engine.name,
        "samples": n,
        "max_new_tokens": budget,
        "metrics": metrics,
        "agreement": round(agreement, 4),
        "stop_rate": round(stop_rate, 4),
        "prompt_parity": round(parity, 4),
        "tolerance": limit,
        "passed": not failures,
        "failures": failures,
        "differences": differences,
        "load_seconds": round(loaded, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "exported_with": {k: record.get(k) for k in ("quant", "note", "created") if record.get(k)},
    }
    return Verification(record=result, passed=not failures, failures=failures)


def save_verification(run_dir: Path, record: dict) -> Path:
    """Keep the verification in the run folder (``exports/<export folder name>.json``) for the report."""
    out = run_dir / "exports"
    out.mkdir(exist_ok=True)
    path = out / f"{Path(record['export']).name}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False))
    return path
