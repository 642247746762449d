"""``tuneforge serve``: an OpenAI-compatible server for one base model and many task adapters.

The parts: :mod:`.settings` (flags / YAML), :mod:`.pool` (what is in memory),
:mod:`.worker` (the one thread that runs the models, batching requests),
:mod:`.decode` (the batched decoding loop), :mod:`.text` (streamed text and stop
strings), :mod:`.protocol` (OpenAI's request and response shapes) and
:mod:`.app` (the routes). docs/SERVE.md is the user's guide.
"""

from __future__ import annotations

import logging
import threading
import time

from .settings import ServeSettings

log = logging.getLogger("tuneforge.serve")


def build(settings: ServeSettings):
    """Load the models and return ``(app, pool, worker)``; the worker starts with the app.

    Unsafe settings (:meth:`ServeSettings.check_safe`) are refused before anything loads.
    """
    from .app import create_app
    from .pool import build_pool
    from .worker import Worker, WorkerSettings

    settings.check_safe()
    pool = build_pool(
        settings.model,
        settings.adapters,
        base_id=settings.served_name,
        max_loaded=settings.max_loaded_adapters,
        trust_remote_code=settings.trust_remote_code,
        device=settings.resolved_device(),
        dtype=settings.dtype,
    )
    worker = Worker(
        WorkerSettings(
            queue_size=settings.queue_size,
            max_batch_size=settings.max_batch_size,
            batch_window_s=settings.batch_window_ms / 1000,
            mixed_batches=settings.mixed_batches,
        )
    )
    return create_app(settings, pool, worker), pool, worker


class ServerThread:
    """A server on a background thread (tests, the load benchmark): ``with ServerThread(app) as url: ...``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, drain_timeout_s: int | None = None):
        import uvicorn

        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=drain_timeout_s
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
