"""``GET /metrics``: the server's counters in Prometheus' text format (version 0.0.4), no client library.

Every HTTP request is counted by route and status, and timed from its arrival to
its last byte (:class:`MetricsMiddleware`, around the whole app, so refusals
such as 413 and 429 count too). Completions add their tokens per model, their
time to first token, and why they were refused or cut (``queue_full``,
``timeout``, ``client_gone``, ``body_too_large``). Queue depth, requests in
flight, batches and the worker's state are read when scraped.

All names start with ``tuneforge_``; a route label is the route's template
(``/v1/chat/completions``), never a raw path, so labels stay few.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable

# Seconds: decoding on a CPU takes seconds to minutes; on a GPU, tens of milliseconds to seconds.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ROUTES = (
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/load_lora_adapter",
    "/v1/unload_lora_adapter",
)


class Histogram:
    """Cumulative-bucket histogram (Prometheus' ``_bucket``, ``_sum``, ``_count``)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    @property
    def count(self) -> int:
        return sum(self.counts)

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        for bound, count in zip((*self.buckets, math.inf), self.counts):
            running += count
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            out.append(f'{name}_bucket{{{labels}{"," if labels else ""}le="{le}"}} {running}')
        brace = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{brace} {self.sum:.6f}", f"{name}_count{brace} {running}"]
        return out


class Metrics:
    """What /metrics reports; updated from the event loop and the worker, hence the lock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)  # (route, status) → count
        self.durations: dict[str, Histogram] = defaultdict(Histogram)  # route → seconds to the last byte
        self.ttft = Histogram()
        self.prompt_tokens: dict[str, int] = defaultdict(int)  # model → tokens
        self.completion_tokens: dict[str, int] = defaultdict(int)
        self.refused: dict[str, int] = defaultdict(int)  # reason → count
        self.in_flight = 0
        self.recent: deque[float] = deque(maxlen=64)  # seconds of the last completions (Retry-After)

    def request_done(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            self.durations[route].observe(seconds)
            if status == 200 and route.startswith("/v1/") and route.endswith("completions"):
                self.recent.append(seconds)

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        with self.lock:
            self.prompt_tokens[model] += prompt
            self.completion_tokens[model] += completion

    def first_token(self, seconds: float) -> None:
        with self.lock:
            self.ttft.observe(seconds)

    def refuse(self, reason: str) -> None:
        with self.lock:
            self.refused[reason] += 1

    def retry_after(self, waiting: int, batch: int) -> int:
        """Seconds a refused client should wait: the queue ahead, in batches, times a recent request's time."""
        with self.lock:
            typical = sorted(self.recent)[len(self.recent) // 2] if self.recent else 1.0
        return max(1, min(600, math.ceil(typical * max(1, math.ceil(waiting / max(1, batch))))))

    def render(self, *, queued: int, alive: bool, batches: int, rows: int, sampled: int) -> str:
        with self.lock:
            lines = [
                "# HELP tuneforge_requests_total HTTP requests answered, by route and status.",
                "# TYPE tuneforge_requests_total counter",
                *(
                    f'tuneforge_requests_total{{route="{route}",status="{status}"}} {count}'
                    for (route, status), count in sorted(self.requests.items())
                ),
                "# HELP tuneforge_request_duration_seconds From a request's arrival to its last byte.",
                "# TYPE tuneforge_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self.durations.items()):
                lines += histogram.lines("tuneforge_request_duration_seconds", f'route="{route}"')
            lines += [
                "# HELP tuneforge_time_to_first_token_seconds From a completion's arrival to its first text.",
                "# TYPE tuneforge_time_to_first_token_seconds histogram",
                *self.ttft.lines("tuneforge_time_to_first_token_seconds"),
            ]
            for kind, table in (("prompt", self.prompt_tokens), ("completion", self.completion_tokens)):
                lines += [
                    f"# HELP tuneforge_{kind}_tokens_total {kind.capitalize()} tokens of answered requests, by model.",
                    f"# TYPE tuneforge_{kind}_tokens_total counter",
                    *(f'tuneforge_{kind}_tokens_total{{model="{m}"}} {n}' for m, n in sorted(table.items())),
                ]
            lines += [
                "# HELP tuneforge_requests_refused_total Requests refused or cut, by reason.",
                "# TYPE tuneforge_requests_refused_total counter",
                *(f'tuneforge_requests_refused_total{{reason="{r}"}} {n}' for r, n in sorted(self.refused.items())),
            ]
            in_flight = self.in_flight
        gauges = (
            ("queue_depth", "gauge", "Requests waiting for the worker.", queued),
            ("requests_in_flight", "gauge", "HTTP requests being answered now.", in_flight),
            ("worker_up", "gauge", "1 while the worker thread runs.", int(alive)),
            ("batches_total", "counter", "Batches the worker started.", batches),
            ("rows_total", "counter", "Requests the worker decoded.", rows),
            ("sampled_tokens_total", "counter", "Tokens sampled, every row.", sampled),
        )
        for name, kind, text, value in gauges:
            lines += [f"# HELP tuneforge_{name} {text}", f"# TYPE tuneforge_{name} {kind}", f"tuneforge_{name} {value}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Pure ASGI: counts and times every HTTP request, whatever answered it (route, middleware, error)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = next((r for r in ROUTES if path == r or (r == "/v1/models" and path.startswith(r + "/"))), "other")
        started = self.metrics.clock()
        status = 500
        with self.metrics.lock:
            self.metrics.in_flight += 1

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            with self.metrics.lock:
                self.metrics.in_flight -= 1
            self.metrics.request_done(route, status, self.metrics.clock() - started)
