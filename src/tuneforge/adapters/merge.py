"""`tuneforge merge`: fold an adapter into its base's weights → a standalone model folder.

peft's ``merge_and_unload()`` does the arithmetic (W ← W + ΔW for LoRA and its
relatives, W ← W·l for (IA)³, …). What has no weight form is refused with the
reason: soft prompts and prefixes (extra tokens, not weights), bottleneck
adapters (a non-linearity between their two matrices), and folders that are
already full models. The output is what plain transformers loads, with the
tokenizer and the adapter folder's task files (``classifier.json``, the
sentence-transformers modules) beside it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from . import adapter_type_of
from . import config as C

SOFT_PROMPT_REASON = (
    "virtual tokens are not weights; no weight matrix can hold them: serve the adapter with its base instead"
)
BOTTLENECK_REASON = (
    "a non-linearity sits between W_down and W_up, so no weight matrix equals it; serve the adapter "
    "with its base instead"
)
# Files of an adapter folder that describe the adapter itself, not the task; never copied to a merged model.
ADAPTER_FILES = {
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "README.md",
    "tuneforge_adapter.json",
    "bottleneck_model.safetensors",
    "combine.json",
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MergeRefused(ValueError):
    """This folder cannot be merged; the message says why and what to do instead."""


class OutputNotEmpty(ValueError):
    """The output folder exists and holds files: tuneforge never writes over them."""


@dataclass
class MergeResult:
    output: Path
    adapter: Path
    adapter_type: str
    base: str


def refusal_reason(kind: str | None) -> str | None:
    """Why an adapter of type ``kind`` cannot be merged, or None when peft can merge it."""
    if kind in C.SOFT_PROMPTS:
        return SOFT_PROMPT_REASON
    if kind == "bottleneck":
        return BOTTLENECK_REASON
    if kind in C.SELECTIVE:
        return "it trained the base weights in place: the folder is already a full model"
    if kind not in C.MERGEABLE:
        return f"peft has no merge for adapter type '{kind}'; serve the adapter with its base instead"
    return None


def resolve_merge_target(path: str | Path) -> Path:
    """The adapter folder of a run folder or an adapter folder; refuses full-model folders."""
    from .inference import AdapterSetError, resolve_adapter_folder

    try:
        return resolve_adapter_folder(path, label="merge")
    except AdapterSetError:
        folder = Path(path).expanduser()
        for full in (folder / "model", folder):
            if (full / "config.json").exists():
                raise MergeRefused(f"{folder}: already a full model: use {full} directly") from None
        raise MergeRefused(
            f"{folder}: no adapter here (no adapter_config.json, no adapter/ folder); give "
            "runs/NAME or runs/NAME/adapter"
        ) from None


def check_mergeable(folder: Path) -> str:
    """The adapter type of ``folder``; :class:`MergeRefused` with the reason when it cannot merge."""
    kind = adapter_type_of(folder)
    reason = refusal_reason(kind)
    if reason:
        raise MergeRefused(f"{folder}: cannot merge a {kind} adapter: {reason}")
    return kind


def merge_adapter(base: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """``base`` with the adapter in ``folder`` folded into its weights (a plain transformers model)."""
    from . import load_adapter

    folder = Path(folder)
    check_mergeable(folder)
    model = load_adapter(base, folder)
    return model.merge_and_unload()


def ensure_new_output(output: str | Path, flag: str = "--output") -> Path:
    """``output`` as a Path, if it does not exist or is an empty folder; else :class:`OutputNotEmpty`."""
    output = Path(output).expanduser()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise OutputNotEmpty(
            f"{flag}: {output} already exists and is not empty; tuneforge never overwrites: "
            "choose a new folder or remove that one"
        )
    return output


def write_atomically(output: Path, write) -> Path:
    """Call ``write(tmp_folder)``, then rename the folder to ``output`` (no half-written output on failure)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        write(partial)
        if output.exists():
            output.rmdir()  # empty, checked by ensure_new_output
        partial.rename(output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return output


def copy_task_files(source: Path, target: Path) -> None:
    """Copy what describes the task (classifier.json, sentence-transformers modules…), not the adapter itself."""
    for item in source.iterdir():
        if item.name in ADAPTER_FILES or (target / item.name).exists():
            continue
        if item.is_dir():
            if not item.name.startswith(("checkpoint", ".")):
                shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)


def stored_dtype(base_name: str | None) -> torch.dtype | None:
    """The dtype a local base folder's config.json records (``dtype`` / ``torch_dtype``), else None."""
    from ..models.load import resolve_model

    try:
        config = Path(resolve_model(base_name)) / "config.json"
    except Exception:  # a hub id or an unknown name: no local config to read
        return None
    if not config.exists():
        return None
    data = json.loads(config.read_text())
    return DTYPES.get(data.get("dtype") or data.get("torch_dtype") or "")


def merge_to_folder(
    target: str | Path,
    output: str | Path,
    *,
    model_name: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> MergeResult:
    """Merge the adapter of ``target`` (run or adapter folder) into its base; write the model to ``output``.

    The base is ``model_name``, else the run's config.yaml ``model.name``, else the adapter's record.
    ``dtype``: ``auto`` saves in the dtype the base is stored in (the merge itself runs in float32).
    """
    from ..models.load import load_tokenizer
    from .inference import base_loader_for, run_base_name, run_rendering, tokenizer_folder

    folder = resolve_merge_target(target)
    kind = check_mergeable(folder)
    output = ensure_new_output(output)
    base_name = model_name or run_base_name(folder)
    if base_name is None:
        raise MergeRefused(f"{folder}: records no base model; name it with --model")
    base = base_loader_for(folder)(base_name, trust_remote_code=trust_remote_code)
    merged = merge_adapter(base, folder)
    save_dtype = DTYPES.get(dtype) if dtype != "auto" else stored_dtype(base_name)
    if save_dtype is not None:
        merged = merged.to(save_dtype)
    tokenizer = load_tokenizer(str(tokenizer_folder(folder) or base_name), trust_remote_code=trust_remote_code)

    def write(tmp: Path) -> None:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        copy_task_files(folder, tmp)
        # the run's prompt rendering (system prompt, template) goes with the weights, so the merged
        # model is asked the way the run was trained (generate / serve / eval read it back)
        (tmp / "merged_from.json").write_text(
            json.dumps(
                {
                    "adapter": str(folder),
                    "adapter_type": kind,
                    "base": base_name,
                    "rendering": dataclasses.asdict(run_rendering(folder)),
                },
                indent=1,
            )
        )

    write_atomically(output, write)
    return MergeResult(output=output, adapter=folder, adapter_type=kind, base=base_name)
