"""The one thread that owns the models: a bounded queue in, batches out.

Requests wait in a bounded queue (full: the caller answers 429). The worker
takes the first waiting request, gathers whatever else arrives within a short
window (up to the batch size), and decodes them together:

* rows for the base and for plain LoRA adapters share one batch, each row with
  its own adapter (peft's ``adapter_names=``): no adapter is "set" at all;
* other adapter kinds are batched per adapter, and the worker activates that
  adapter between batches. Only this thread touches the model, so no adapter
  state ever changes under a running request (peft #804's race cannot happen);
* full models (separate folders) get batches of their own.

Every row reports its text, its end and any error through its job's callbacks,
which hand them to the request's event loop.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .decode import Row, Sampling, decode_batch
from .pool import BASE_ROW, ModelGroup, Target
from .text import TextTracker

log = logging.getLogger("tuneforge.serve")


class QueueFull(RuntimeError):
    """The request queue is at its bound; the caller should answer 429."""


@dataclass
class Job:
    """One request for the worker: what to run, and where its text and its end go.

    The callbacks are called from the worker thread; they must be thread-safe
    (the app's hand the events to the request's event loop).
    """

    target: Target
    prompt_ids: list[int]
    sampling: Sampling
    stop_ids: frozenset[int]
    on_text: Callable[[str], None]
    on_done: Callable[[str, int, int], None]  # finish_reason, prompt tokens, completion tokens
    on_error: Callable[[str], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class WorkerSettings:
    queue_size: int = 64
    max_batch_size: int = 8
    batch_window_s: float = 0.01
    mixed_batches: bool = True  # off: one adapter per batch even where peft could mix them (for comparison)


class Worker:
    """Owns the pool's models; :meth:`submit` from any thread, :meth:`start` once."""

    def __init__(self, settings: WorkerSettings):
        self.settings = settings
        self.queue: queue.Queue[Job] = queue.Queue(maxsize=settings.queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tuneforge-serve-worker", daemon=True)
        self.batches = 0  # counters for /health and the load benchmark
        self.rows = 0
        self.tokens = 0  # tokens sampled, all rows
        # Set while a batch runs, which outlasts its last answer: after a row's end went out the batch still
        # asks the queue for newcomers (decode_batch's admit) before it returns. So "busy" is no sign that a
        # request just sent is running; tests wait on the request's own progress instead.
        self.busy = threading.Event()
        # A request taken from the queue to join a running batch that could not (another model or
        # adapter): it goes first next time. At most one, so the queue's bound still holds.
        self.deferred: collections.deque[Job] = collections.deque()
        self.joined = 0  # requests that joined a running batch

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, job: Job) -> None:
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            raise QueueFull(
                f"the server's queue is full ({self.settings.queue_size} requests waiting); retry later"
            ) from None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.deferred.popleft() if self.deferred else self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            jobs = [first, *self._gather(self.settings.max_batch_size - 1)]
            self.busy.set()
            try:
                self._serve([job for job in jobs if not _skip_cancelled(job)])
            finally:
                self.busy.clear()

    def _gather(self, room: int) -> list[Job]:
        """Whatever else arrives within the batching window, up to ``room`` requests."""
        jobs: list[Job] = []
        while self.deferred and len(jobs) < room:
            jobs.append(self.deferred.popleft())
        deadline = time.monotonic() + self.settings.batch_window_s
        while len(jobs) < room:
            left = deadline - time.monotonic()
            try:
                jobs.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return jobs

    def _serve(self, jobs: list[Job]) -> None:
        by_group: dict[int, list[Job]] = {}
        for job in jobs:
            by_group.setdefault(id(job.target.group), []).append(job)
        for group_jobs in by_group.values():
            group = group_jobs[0].target.group
            for batch, mixed in self._plan(group, group_jobs):
                self._decode(group, batch, mixed)

    def _plan(self, group: ModelGroup, jobs: list[Job]) -> Iterator[tuple[list[Job], bool]]:
        """Batches for one model: mixed where peft can mix the adapters, else one adapter per batch."""
        size = 1 if group.prompt_learning else self.settings.max_batch_size
        if group.mixed_batches and self.settings.mixed_batches:
            batch: list[Job] = []
            adapters: set[str] = set()
            for job in jobs:
                adapter = job.target.adapter
                new_adapter = adapter is not None and adapter not in adapters
                if batch and (len(batch) >= size or (new_adapter and len(adapters) >= group.max_loaded)):
                    yield batch, True
                    batch, adapters = [], set()
                batch.append(job)
                if adapter is not None:
                    adapters.add(adapter)
            if batch:
                yield batch, True
            return
        by_adapter: dict[str | None, list[Job]] = {}
        for job in jobs:
            by_adapter.setdefault(job.target.adapter, []).append(job)
        for same in by_adapter.values():
            for start in range(0, len(same), size):
                yield same[start : start + size], False

    def _decode(self, group: ModelGroup, jobs: list[Job], mixed: bool) -> None:
        try:
            with group.lock:  # runtime (un)loading over the API waits for the batch
                self._decode_locked(group, jobs, mixed)
        except Exception as exc:  # one failed batch must not take the server down
            log.exception("batch failed")
            for job in jobs:
                job.on_error(f"{type(exc).__name__}: {exc}")

    def _decode_locked(self, group: ModelGroup, jobs: list[Job], mixed: bool) -> None:
        adapters = list(dict.fromkeys(job.target.adapter for job in jobs if job.target.adapter))
        missing = [name for name in adapters if name not in group.specs]
        if missing:
            raise LookupError(f"adapter {missing[0]} was unloaded while the request waited")
        group.ensure_loaded(adapters)
        rows = [self._row(job) for job in jobs]
        self.batches += 1  # counted before the rows end, so a finished request always sees its batch counted
        self.rows += len(rows)
        pad_id = _pad_id(group.tokenizer, jobs[0].stop_ids)
        with _active(group, jobs[0].target.adapter, mixed):
            decode_batch(
                group.model,
                rows,
                pad_id=pad_id,
                mixed_adapters=mixed and _is_peft(group.model),
                use_cache=not group.prompt_learning,
                admit=self._admitter(group, jobs[0], mixed),
            )

    def _admitter(self, group: ModelGroup, first: Job, mixed: bool):
        """``admit(live)`` for :func:`decode_batch`: queued requests that can join this batch as it runs.

        They can when they run on the same model and, in a mixed batch, their adapter is in memory
        (loading one could unload an adapter a running row uses); in a one-adapter batch, when they
        ask for that adapter. The first that cannot waits (``deferred``) and stops the joining.
        """
        if group.prompt_learning:
            return None

        def fits(job: Job) -> bool:
            adapter = job.target.adapter
            if job.target.group is not group:
                return False
            if mixed:
                return adapter is None or adapter in group.loaded
            return adapter == first.target.adapter

        def admit(live: int) -> list[Row]:
            rows: list[Row] = []
            while not self.deferred and live + len(rows) < self.settings.max_batch_size:
                try:
                    job = self.queue.get_nowait()
                except queue.Empty:
                    break
                if _skip_cancelled(job):
                    continue
                if not fits(job):
                    self.deferred.append(job)
                    break
                rows.append(self._row(job))
            self.rows += len(rows)
            self.joined += len(rows)
            return rows

        return admit

    def _row(self, job: Job) -> Row:
        tracker = TextTracker(job.target.tokenizer, job.stop_ids, job.sampling.stop)

        def done(row: Row) -> None:
            self.tokens += row.tracker.sampled  # before the request hears it ended
            job.on_done(row.tracker.finished or "cancelled", len(job.prompt_ids), row.tracker.sampled)

        return Row(
            prompt_ids=job.prompt_ids,
            sampling=job.sampling,
            tracker=tracker,
            on_text=job.on_text,
            on_done=done,
            cancelled=job.cancelled,
            adapter=job.target.adapter or BASE_ROW,
        )


def _skip_cancelled(job: Job) -> bool:
    if job.cancelled.is_set():
        job.on_done("cancelled", len(job.prompt_ids), 0)
        return True
    return False


def _is_peft(model) -> bool:
    from ..adapters import is_peft_model

    return is_peft_model(model)


def _pad_id(tokenizer, stop_ids: frozenset[int]) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return min(stop_ids) if stop_ids else 0


@contextlib.contextmanager
def _active(group: ModelGroup, adapter: str | None, mixed: bool) -> Iterator[None]:
    """For a one-adapter batch: that adapter active (or, for the base, every adapter off).

    Mixed batches name each row's adapter in the forward itself: nothing to switch.
    """
    model = group.model
    if mixed or not group.loaded:
        yield
        return
    if adapter is None:
        if _is_peft(model):
            with model.disable_adapter():
                yield
            return
        from ..adapters import adapters_disabled

        with adapters_disabled(model):
            yield
        return
    if _is_peft(model) and adapter in model.peft_config:
        model.set_adapter(adapter, inference_mode=True)
    yield
