"""``tuneforge export RUN --format merged | gguf | ollama --output DIR``: write the artifact.

One path for every format: resolve the run (``source.py``), derive its prompt format from the
template it trained with (``template.py``), merge the weights once (dequantized base for QLoRA /
INT8 runs), then write the folder atomically (``adapters.merge.write_atomically``: no half export
on failure) with a ``tuneforge_export.json`` record of what was written from which run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import EXPORT_RECORD, ExportRefused

MERGED_DTYPES = {None: None, "f32": "float32", "f16": "float16", "bf16": "bfloat16"}


@dataclass
class ExportResult:
    output: Path
    fmt: str
    quant: str | None
    files: list[str]
    notes: list[str] = field(default_factory=list)


def _name(source) -> str:
    return (source.run_dir or source.folder).name


def _check_request(source, fmt: str, quant: str | None) -> None:
    from .gguf_write import check_quant
    from .source import check_generative

    if fmt == "merged":
        if quant not in MERGED_DTYPES:
            raise ExportRefused(
                f"--quant {quant}: a merged folder holds f32, f16 or bf16 weights; quantized files are --format gguf"
            )
        return
    check_generative(source, fmt)
    check_quant(quant or "f16")
    if source.adapter_kind in ("prompt_tuning", "prefix_tuning", "p_tuning", "mam"):
        raise ExportRefused(
            f"{source.label}: a {source.adapter_kind} adapter adds virtual tokens, which a GGUF has no place for "
            "(llama.cpp runs weights only); serve the adapter with its base (`tuneforge serve`) instead"
        )


def export_run(run: str | Path, fmt: str, output: str | Path, *, quant: str | None = None) -> ExportResult:
    """Export the run at ``run`` as ``fmt`` into the new folder ``output``."""
    from ..adapters.inference import tokenizer_folder
    from ..adapters.merge import ensure_new_output, write_atomically
    from ..models.load import load_tokenizer
    from .source import load_merged_model, resolve_source
    from .template import base_chat_template, run_chat_template, stop_strings, stop_token_ids, turn_end

    source = resolve_source(run)
    if fmt == "merged" and source.task not in (None, "CAUSAL_LM"):
        return _merged_other_task(source, output, quant)
    _check_request(source, fmt, quant)
    quant = quant or ("f16" if fmt != "merged" else None)
    output = ensure_new_output(output)
    tokenizer = load_tokenizer(str(tokenizer_folder(source.folder) or source.base))
    trained = base_chat_template(tokenizer, source.rendering)
    template = run_chat_template(tokenizer, source.rendering)
    end = turn_end(tokenizer, trained)
    stops = stop_token_ids(tokenizer, trained)
    model, note = load_merged_model(source)
    notes = [note] if note else []
    record = {
        "format": fmt,
        "quant": quant,
        "run": str((source.run_dir or source.folder).resolve()),
        "adapter": source.adapter_kind,
        "base": source.base,
        "rendering": dataclasses.asdict(source.rendering),
        "chat_template": template,
        "end_of_turn": end.stop_text,
        "stop_token_ids": stops,
        "stop_strings": stop_strings(tokenizer, trained),
        "note": note,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    files: list[str] = []

    def write(tmp: Path) -> None:
        if fmt == "merged":
            files.extend(_write_merged(model, tokenizer, source, tmp, quant, template, stops))
        else:
            files.extend(_write_gguf_files(model, tokenizer, source, tmp, fmt, quant, template, end, record, notes))
        record["notes"] = notes
        (tmp / EXPORT_RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False))

    write_atomically(output, write)
    return ExportResult(output=output, fmt=fmt, quant=quant, files=files + [EXPORT_RECORD], notes=notes)


def _write_merged(model, tokenizer, source, tmp: Path, quant, template: str, stops: list[int]) -> list[str]:
    """A transformers folder whose tokenizer renders the run's prompts and whose generate stops as trained."""
    import torch

    from ..adapters.merge import copy_task_files

    dtype = MERGED_DTYPES[quant]
    if dtype:
        model = model.to(getattr(torch, dtype))
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.chat_template = template
    tokenizer.save_pretrained(tmp)
    if source.adapter_kind:
        copy_task_files(source.folder, tmp)
    # tuneforge's own generate / serve / eval read the rendering back (as for `tuneforge merge`)
    (tmp / "merged_from.json").write_text(
        json.dumps(
            {
                "adapter": str(source.folder),
                "adapter_type": source.adapter_kind,
                "base": source.base,
                "rendering": dataclasses.asdict(source.rendering),
            },
            indent=1,
        )
    )
    return sorted(p.name for p in tmp.iterdir())


def _write_gguf_files(model, tokenizer, source, tmp: Path, fmt, quant, template, end, record, notes) -> list[str]:
    from .gguf_write import write_gguf
    from .ollama import MODELFILE, Modelfile, format_modelfile
    from .template import base_chat_template, ollama_template, stop_strings

    name = f"{_name(source)}.{quant}.gguf"
    extra = {k: record[k] for k in ("run", "rendering", "quant", "adapter", "base")}
    facts = write_gguf(
        model,
        tokenizer,
        tmp / name,
        quant=quant,
        chat_template=template,
        eot_token_id=end.stop_id,
        name=_name(source),
        extra=extra,
    )
    notes.extend(facts.notes)
    record["gguf"] = {"file": name, "architecture": facts.architecture, "tensor_types": facts.tensor_types}
    if fmt != "ollama":
        return [name]
    trained = base_chat_template(tokenizer, source.rendering)
    modelfile = Modelfile(
        model=f"./{name}",
        template=ollama_template(tokenizer, trained),
        system=source.rendering.system_prompt,
        stops=stop_strings(tokenizer, trained),
    )
    (tmp / MODELFILE).write_text(format_modelfile(modelfile), encoding="utf-8")
    record["modelfile"] = dataclasses.asdict(modelfile)
    return [name, MODELFILE]


def _merged_other_task(source, output, quant) -> ExportResult:
    """Classifier, reward and embedding adapters: `tuneforge merge` already writes what loads in transformers."""
    from ..adapters.merge import merge_to_folder

    if quant not in MERGED_DTYPES:
        raise ExportRefused(f"--quant {quant}: a merged folder holds f32, f16 or bf16 weights")
    result = merge_to_folder(source.folder, output, dtype=MERGED_DTYPES[quant] or "auto")
    note = f"{source.task} model: merged as `tuneforge merge` does; verify-export checks text generators only"
    return ExportResult(output=result.output, fmt="merged", quant=quant, files=[], notes=[note])
