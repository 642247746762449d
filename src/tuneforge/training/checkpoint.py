"""Atomic, resumable checkpoints.

A checkpoint folder `checkpoints/step-000120/` holds:
- `trainable.safetensors`: every trainable parameter by name (the adapter, or
  the whole model for full fine-tuning);
- `adapter/`: for adapter runs, a standard PEFT folder usable on its own;
- `optimizer.pt`, `scheduler.pt`: optimizer / scheduler state, loaded back with
  `torch.load(weights_only=True)` (tensors and plain containers only, no pickle code);
- `rng.pt`: the torch RNG state;
- `state.json`: step, rows consumed, python RNG state and anything the recipe adds;
- `manifest.json`, written last: every other file's size and SHA-256.
It is written into a temporary folder, flushed to disk and renamed into place,
so a crash while saving (even SIGKILL) never leaves a half-written checkpoint
under the final name; the next save removes the temporary folder it left.

What can still go wrong is caught when resuming: a checkpoint whose files no
longer match its manifest (a disk error, a partial copy, a folder emptied by an
interrupted overwrite) is skipped, said so, and the newest intact one is used.
A save that fails (disk full) stops the run with one line that names the
checkpoint that is kept, before anything older is pruned.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..fsutil import atomic_directory

PREFIX = "step-"
PENDING = "PENDING"  # present while a sharded checkpoint is still being completed
MANIFEST = "manifest.json"
REQUIRED = ("trainable.safetensors", "scheduler.pt", "rng.pt", "state.json")  # what every checkpoint has


class CheckpointMismatch(Exception):
    """The checkpoint was written by a different model / adapter setup than the one resuming it."""


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (disk full, no permission); the last complete one is kept."""


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
    remove_partial_saves(run_dir)
    tensors = weights if weights is not None else trainable_state(model)
    optimizer_state = optimizer.state_dict() if optimizer is not None else None
    # Refuse before writing when the disk cannot hold it: a clear message, nothing half-written.
    needed = _tensor_bytes(tensors) * (2 if adapter_model is not None else 1) + _tensor_bytes(optimizer_state)
    free = _free_bytes(root)
    if free is not None and free < needed + RESERVE_BYTES:
        raise _write_error(final, run_dir, f"the disk is full: {needed / 1e6:.1f} MB needed, {free / 1e6:.1f} MB free")
    try:
        with atomic_directory(final) as tmp:
            save_file(tensors, str(tmp / "trainable.safetensors"))
            if optimizer_state is not None:  # sharded setups save optimizer state with accelerate (see causal_lm.py)
                torch.save(optimizer_state, tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            rng = {"torch": torch.get_rng_state()}
            if torch.cuda.is_available():
                rng["cuda"] = torch.cuda.get_rng_state_all()
            torch.save(rng, tmp / "rng.pt")
            if adapter_model is not None:
                adapter_model.save_pretrained(tmp / "adapter", safe_serialization=True)
            version, internal, gauss = random.getstate()
            python_rng = [version, list(internal), gauss]
            (tmp / "state.json").write_text(json.dumps({**state, "step": step, "python_rng": python_rng}))
            _write_manifest(tmp)
            if pending:
                (tmp / PENDING).write_text("optimizer shards still being written\n")
    # What a failed write raises: OSError from Python, SafetensorError ("... (os error 28)") from safetensors,
    # RuntimeError ("unexpected pos ...") from torch's zip writer, which loses the errno.
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise _write_error(final, run_dir, _cause(exc, root)) from exc
    _fsync(root)  # the rename itself reaches the disk
    if not pending:
        prune(run_dir, keep)
    return final


RESERVE_BYTES = 16 << 20  # headroom left on the disk beyond the checkpoint itself (manifest, metrics, logs)


def _tensor_bytes(obj) -> int:
    """Bytes of every tensor in a (nested) state dict."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _free_bytes(root: Path) -> int | None:
    folder = root
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _cause(exc: Exception, root: Path) -> str:
    number = exc.errno if isinstance(exc, OSError) else None
    found = re.search(r"os error (\d+)", str(exc))
    number = number or (int(found.group(1)) if found else None)
    if number in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    free = _free_bytes(root)
    where = f"; {free / 1e6:.1f} MB free there now" if free is not None else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _write_error(final: Path, run_dir: Path, cause: str) -> CheckpointWriteError:
    kept = latest_checkpoint(run_dir)
    kept_text = f"{kept.name} is kept and --resume continues from it" if kept else "no earlier checkpoint exists"
    return CheckpointWriteError(
        f"checkpoint {final}: not written ({cause}); {kept_text}. Free space under {final.parent} "
        "(or lower training.keep_checkpoints), then run again with --resume"
    )


def remove_partial_saves(run_dir: Path) -> list[Path]:
    """Delete temporary folders a save killed mid-write left behind (``.step-…``); return them."""
    root = Path(run_dir) / "checkpoints"
    if not root.exists():
        return []
    partial = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(f".{PREFIX}")]
    for path in partial:
        shutil.rmtree(path, ignore_errors=True)
    return partial


def _write_manifest(folder: Path) -> None:
    """Flush every file to disk and record its size and SHA-256 in ``manifest.json`` (flushed too)."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _fsync(path)
        files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
    _fsync(folder / MANIFEST)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot sync a directory; the data files were synced
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    """The newest intact checkpoint; a newer damaged one is skipped, with a warning naming it, why, and what is used."""
    skipped: list[tuple[Path, str]] = []
    found = None
    for path in reversed(list_checkpoints(run_dir)):
        problem = damage(path)
        if problem is None:
            found = path
            break
        skipped.append((path, problem))
    instead = f"the newest intact one is {found.name}" if found else "no intact checkpoint is left"
    for path, problem in skipped:
        if (path, found) not in _warned:
            _warned.add((path, found))
            from .engine import console

            console.print(
                f"[bold yellow]warning:[/] checkpoint {path} is damaged ({problem}); skipped: {instead}",
                highlight=False,
                soft_wrap=True,
            )
    return found


_warned: set[tuple[Path, Path | None]] = set()  # each warning once per process
_checked: dict[tuple[Path, int], str | None] = {}  # (folder, manifest mtime) → damage(): hashing once is enough


def damage(path: Path) -> str | None:
    """What is wrong with the checkpoint folder ``path`` (one phrase), or None when it is intact.

    With a manifest: every listed file is there with its size and SHA-256. Checkpoints from before
    manifests: the files every checkpoint has are there, non-empty, and ``state.json`` parses.
    """
    path = Path(path)
    manifest = path / MANIFEST
    if not manifest.exists():
        return _damage_without_manifest(path)
    key = (path, manifest.stat().st_mtime_ns)
    if key not in _checked:
        _checked[key] = _damage_by_manifest(path, manifest)
    return _checked[key]


def _damage_by_manifest(path: Path, manifest: Path) -> str | None:
    try:
        files = json.loads(manifest.read_text())["files"]
        listed = [(name, int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()]
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return f"{MANIFEST} is unreadable"
    for name, size, digest in listed:
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{name} is {actual} bytes, {size} were written"
        if _sha256(file) != digest:
            return f"{name} does not match its checksum"
    return None


def _damage_without_manifest(path: Path) -> str | None:
    for name in REQUIRED:
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size == 0:
            return f"{name} is empty"
    try:
        json.loads((path / "state.json").read_text())["python_rng"]
    except (ValueError, KeyError, TypeError, OSError):
        return "state.json is unreadable"
    return None


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
