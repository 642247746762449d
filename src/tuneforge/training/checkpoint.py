"""Atomic, resumable checkpoints.

A checkpoint folder `checkpoints/step-000120/` holds:
- `trainable.safetensors`: every trainable parameter by name (the adapter, or
  the whole model for full fine-tuning);
- `adapter/`: for adapter runs, a standard PEFT folder usable on its own;
- `optimizer.pt`, `scheduler.pt`: optimizer / scheduler state, loaded back with
  `torch.load(weights_only=True)` (tensors and plain containers only, no pickle code);
- `rng.pt`: the torch RNG state;
- `state.json`: step, rows consumed, python RNG state and anything the recipe adds.
It is written into a temporary folder and renamed into place, so a crash while
saving never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..fsutil import atomic_directory

PREFIX = "step-"
PENDING = "PENDING"  # present while a sharded checkpoint is still being completed


class CheckpointMismatch(Exception):
    """The checkpoint was written by a different model / adapter setup than the one resuming it."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters() yields tied weights once, so safetensors sees no shared storage.
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def is_sharded(accelerator) -> bool:
    """FSDP and DeepSpeed shard parameters / optimizer state across processes."""
    return accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")


def gather_trainable_state(accelerator, prepared_model) -> dict[str, torch.Tensor] | None:
    """Trainable weights as full tensors on the main process (None elsewhere).

    With FSDP / DeepSpeed the parameters are sharded, so the full state dict is
    gathered collectively (every process must call this); otherwise the local
    copy is already complete.
    """
    unwrapped = accelerator.unwrap_model(prepared_model)
    if not is_sharded(accelerator):
        return trainable_state(unwrapped) if accelerator.is_main_process else None
    names = {n for n, p in unwrapped.named_parameters() if p.requires_grad}
    full = accelerator.get_state_dict(prepared_model)
    if not accelerator.is_main_process:
        return None
    return {n: t.detach().to("cpu").contiguous().clone() for n, t in full.items() if n in names}


def gather_full_state(accelerator, prepared_model) -> dict[str, torch.Tensor]:
    """The full state dict of a sharded model (collective: every process must call this).

    Complete on the main process (accelerate returns an empty dict elsewhere under FSDP2).
    The gathered tensors are separate copies, so tied parameters (a tied ``lm_head`` and
    input embedding) no longer share storage, and ``save_pretrained`` would not recognise
    them as tied and write the matrix twice. Each alias is pointed back at its
    parameter's tensor, as in an unsharded model's state dict.
    """
    full = accelerator.get_state_dict(prepared_model)
    first: dict[int, str] = {}
    for name, param in accelerator.unwrap_model(prepared_model).named_parameters(remove_duplicate=False):
        owner = first.setdefault(id(param), name)
        if owner != name and owner in full and name in full:
            full[name] = full[owner]
    return full


def save_checkpoint(
    run_dir: Path,
    step: int,
    *,
    model,
    optimizer,
    scheduler,
    state: dict,
    keep: int = 2,
    adapter_model=None,
    weights: dict[str, torch.Tensor] | None = None,
    pending: bool = False,
) -> Path:
    """Write one checkpoint atomically and prune old ones.

    ``pending=True`` (sharded setups) marks it incomplete until every process has
    added its optimizer shard and `mark_complete` ran; pruning waits until then.
    """
    root = Path(run_dir) / "checkpoints"
    final = root / f"{PREFIX}{step:06d}"
    with atomic_directory(final) as tmp:
        save_file(weights if weights is not None else trainable_state(model), str(tmp / "trainable.safetensors"))
        if optimizer is not None:  # sharded setups save optimizer state with accelerate (see causal_lm.py)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        if pending:
            (tmp / PENDING).write_text("optimizer shards still being written\n")
        if adapter_model is not None:
            adapter_model.save_pretrained(tmp / "adapter", safe_serialization=True)
        version, internal, gauss = random.getstate()
        python_rng = [version, list(internal), gauss]
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "python_rng": python_rng}))
    if not pending:
        prune(run_dir, keep)
    return final


def mark_complete(path: Path, run_dir: Path, keep: int) -> None:
    (Path(path) / PENDING).unlink(missing_ok=True)
    prune(run_dir, keep)


def prune(run_dir: Path, keep: int) -> None:
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").exists() and not (p / PENDING).exists()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def set_aside(run_dir: Path, from_step: int) -> list[Path]:
    """Rename checkpoints of ``from_step`` and later to ``diverged-step-…``: kept for a look,
    never resumed from (``list_checkpoints`` only sees ``step-…``)."""
    moved = []
    for path in list_checkpoints(run_dir):
        if int(path.name[len(PREFIX) :]) >= from_step:
            target = path.with_name("diverged-" + path.name)
            path.rename(target)
            moved.append(target)
    return moved


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: Path, *, model, optimizer, scheduler, restore_weights: bool = True) -> dict:
    """Restore weights, optimizer, scheduler and RNG in place; return the saved state dict.

    ``restore_weights=False`` when accelerate's ``load_state`` already restored the
    (sharded) model and optimizer.
    """
    path = Path(path)
    if restore_weights:
        _restore_weights(path, model)
    if (path / "optimizer.pt").exists():
        try:
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        except ValueError as exc:
            raise CheckpointMismatch(f"checkpoint {path}: optimizer state does not fit this run: {exc}") from None
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((path / "state.json").read_text())
    version, internal, gauss = state.pop("python_rng")
    random.setstate((version, tuple(internal), gauss))
    return state


def _restore_weights(path: Path, model) -> None:
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = sorted(set(weights) - set(params))
    missing = sorted(n for n, p in params.items() if p.requires_grad and n not in weights)
    reshaped = sorted(n for n in set(weights) & set(params) if tuple(weights[n].shape) != tuple(params[n].shape))
    if unknown or missing or reshaped:
        raise CheckpointMismatch(
            f"checkpoint {path} does not match this model/adapter (unknown: {unknown[:3]}, missing: {missing[:3]}, "
            f"other shape: {reshaped[:3]}); resume with the model and adapter settings the run started with"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
