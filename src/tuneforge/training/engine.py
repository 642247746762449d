"""Accelerate setup, the data order, stop signals and progress/metrics logging."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def make_accelerator(
    *,
    mixed_precision: str,
    gradient_accumulation_steps: int = 1,
    trackers: list[str] | None = None,
    project_dir: Path | None = None,
    cpu: bool | None = None,
):
    from accelerate import Accelerator

    from .precision import resolve_precision

    if cpu is None:
        cpu = not torch.cuda.is_available()
    precision = resolve_precision(mixed_precision, cpu=cpu)
    if mixed_precision == "auto" and cpu and _launched_processes() > 1:
        precision = _agree_on_precision(precision, cpu=cpu)
    _forget_other_precision(precision.choice)
    accelerator = Accelerator(
        cpu=cpu,
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=precision.choice,
        log_with=trackers or None,
        project_dir=str(project_dir) if project_dir else None,
    )
    accelerator.precision = precision  # the choice and its reason, for summary.json
    return accelerator


def _forget_other_precision(choice: str) -> None:
    """accelerate keeps one AcceleratorState per process and refuses a second Accelerator with
    another mixed precision; a later run in the same process (tests, notebooks) may resolve
    differently, so that part of the state is dropped (the process group, in PartialState, stays)."""
    from accelerate.state import AcceleratorState

    previous = AcceleratorState._shared_state.get("_mixed_precision")
    if previous is not None and previous != choice:
        AcceleratorState._reset_state()


def _launched_processes() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def _agree_on_precision(precision, *, cpu: bool):
    """Every process measures on its own; all use bf16 only if all of them chose it."""
    import torch.distributed as dist
    from accelerate import PartialState

    from .precision import Precision

    PartialState(cpu=cpu)  # joins the process group the Accelerator then reuses
    if not dist.is_available() or not dist.is_initialized():
        return precision
    flag = torch.tensor([1 if precision.choice == "bf16" else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    if precision.choice == "bf16" and not flag.item():
        return Precision("no", "another process measured bf16 as not faster; all processes use fp32")
    return precision


class RowOrder:
    """The global order of training rows: one seeded permutation per epoch.

    A position is "rows consumed so far", so it does not depend on how many
    processes or micro-batches share a step: a checkpoint written by N processes
    resumes with M.

    ``arrange(permutation, group, first) -> permutation`` lets a method reorder each
    epoch, e.g. so that no global batch of ``group`` rows holds the same text twice;
    ``first`` is the size of the epoch's first batch when the previous epoch's last
    batch runs into it (0: the epoch starts a fresh batch). It must be deterministic.
    """

    def __init__(self, num_rows: int, seed: int, *, arrange=None, group: int = 1):
        if num_rows == 0:
            raise ValueError("no training rows")
        self.num_rows = num_rows
        self.seed = seed
        self.arrange = arrange
        self.group = group
        self._cache: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._cache:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = torch.randperm(self.num_rows, generator=generator).tolist()
            if self.arrange is not None:
                order = self.arrange(
                    order, self.group, (self.group - (epoch * self.num_rows) % self.group) % self.group
                )
            self._cache = {epoch: order}
        return self._cache[epoch]

    def take(self, start: int, count: int) -> list[int]:
        out = []
        for k in range(start, start + count):
            out.append(self._epoch(k // self.num_rows)[k % self.num_rows])
        return out


def split_for_process(indices: list[int], rank: int, world: int, batch_size: int) -> list[list[int]]:
    """This process's share of a global batch, cut into micro-batches of ``batch_size`` rows."""
    mine = indices[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def total_steps(num_rows: int, global_batch: int, epochs: float, max_steps: int | None) -> int:
    if max_steps is not None:
        return max_steps
    return max(1, math.ceil(epochs * num_rows / global_batch))


class StopSignal:
    """Turn Ctrl-C / SIGTERM into a flag the loop checks after each step (then checkpoint + exit).

    A second Ctrl-C while the checkpoint is written still waits for it; the
    default handlers come back when the block ends.
    """

    def __init__(self):
        self.requested: str | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is None:
            console.print(f"\n[yellow]{name} received: finishing this step, then writing a checkpoint…[/]")
        self.requested = name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class MetricsLog:
    """`metrics.jsonl` (rank 0 only), accelerate trackers, and the rich progress bar."""

    def __init__(self, path: Path, *, total_steps: int, start_step: int, accelerator, enabled: bool):
        self.path = path
        self.accelerator = accelerator
        self.enabled = enabled
        self.total = total_steps
        self.start_step = start_step
        self.t0 = time.perf_counter()
        self.tokens_since_start = 0
        self.progress = Progress(
            TextColumn("[bold]step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled or os.environ.get("TUNEFORGE_NO_PROGRESS") == "1",
            transient=False,
        )
        self.task = None

    def __enter__(self):
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.progress.__enter__()
        self.task = self.progress.add_task(
            "train", total=self.total, completed=self.start_step, loss="-", lr="-", tps="-"
        )
        return self

    def __exit__(self, *exc):
        self.progress.__exit__(*exc)
        return False

    def log(self, record: dict, *, advance: bool = True) -> None:
        if "tokens" in record and advance:
            self.tokens_since_start += record["tokens"]
            elapsed = time.perf_counter() - self.t0
            record["tokens_per_second"] = round(self.tokens_since_start / max(elapsed, 1e-9), 2)
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.accelerator.trackers:
                self.accelerator.log(
                    {k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record.get("step")
                )
        if advance and self.task is not None:
            self.progress.update(
                self.task,
                completed=record["step"],
                loss=f"{record['loss']:.4f}",
                lr=f"{record['lr']:.2e}",
                tps=f"{record.get('tokens_per_second', 0):.0f}",
            )
        elif "eval_loss" in record and self.enabled:
            extra = f" (perplexity {record['eval_perplexity']:.2f})" if "eval_perplexity" in record else ""
            console.print(f"step {record['step']}: held-out loss {record['eval_loss']:.4f}{extra}")


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        # ru_maxrss is KiB on Linux: the process's peak resident memory.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
