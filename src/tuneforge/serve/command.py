"""The ``tuneforge serve`` command line: flags (or ``--config serve.yaml``) → settings → models → uvicorn."""

from __future__ import annotations

import argparse
import logging

from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)


def add_parser(sub) -> None:
    s = sub.add_parser(
        "serve", help="an OpenAI-compatible server: one base model and many adapters (pip install 'tuneforge[serve]')"
    )
    s.add_argument("--config", default=None, help="a serve YAML with the same keys as these flags (docs/SERVE.md)")
    s.add_argument(
        "--model",
        default=None,
        help="the base: embedded name, folder or hub id (default: the adapters' base, else embedded)",
    )
    s.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="an adapter, run or full model folder served as model NAME; repeat for several",
    )
    s.add_argument("--served-name", default=None, help="the base's name in requests (default: its own)")
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=None, help="default 8000")
    s.add_argument(
        "--api-key",
        default=None,
        help="require Authorization: Bearer KEY (better: set TUNEFORGE_API_KEY, unseen by ps)",
    )
    s.add_argument("--max-prompt-tokens", type=int, default=None)
    s.add_argument("--max-tokens-limit", type=int, default=None, help="the most tokens a request may ask for")
    s.add_argument("--queue-size", type=int, default=None, help="requests waiting beyond this get 429 (default 64)")
    s.add_argument("--max-body-bytes", type=int, default=None, help="larger request bodies get 413 (default 1 MiB)")
    s.add_argument(
        "--request-timeout",
        type=float,
        default=None,
        dest="request_timeout_s",
        metavar="SECONDS",
        help="a request not answered within this (waiting + decoding) ends with 504 (default 300)",
    )
    s.add_argument(
        "--drain-timeout",
        type=int,
        default=None,
        dest="drain_timeout_s",
        metavar="SECONDS",
        help="on SIGTERM, how long requests in flight may still take before they are cut (default 30)",
    )
    s.add_argument("--max-batch-size", type=int, default=None)
    s.add_argument("--batch-window-ms", type=float, default=None)
    s.add_argument(
        "--max-loaded-adapters",
        type=int,
        default=None,
        help="adapters held in memory; the least recently used are unloaded beyond it",
    )
    s.add_argument(
        "--no-mixed-batches",
        dest="mixed_batches",
        action="store_const",
        const=False,
        default=None,
        help="one adapter per batch even where peft can mix LoRA adapters",
    )
    s.add_argument(
        "--adapter-dir",
        default=None,
        help="allow loading adapters at runtime over the API, from this folder only (off by default)",
    )
    s.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        dest="cors_origins",
        metavar="ORIGIN",
        help="allow browser requests from this origin (none by default)",
    )
    s.add_argument("--device", default=None, help="auto (CUDA when available) | cpu | cuda | cuda:N")
    s.add_argument(
        "--dtype",
        default=None,
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: fp32 on CPU, bf16 on CUDA",
    )
    s.add_argument("--trust-remote-code", action="store_true", default=None)
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..adapters.inference import parse_named_paths
    from .settings import load_settings

    try:
        import fastapi
        import uvicorn

        del fastapi  # imported to check it is installed
    except ImportError:
        err_console.print(
            "[bold red]error:[/] tuneforge serve needs FastAPI and uvicorn: pip install 'tuneforge[serve]'",
            highlight=False,
        )
        return 2
    flags = {
        name: getattr(args, name)
        for name in (
            "model",
            "served_name",
            "host",
            "port",
            "api_key",
            "max_prompt_tokens",
            "max_tokens_limit",
            "queue_size",
            "max_body_bytes",
            "request_timeout_s",
            "drain_timeout_s",
            "max_batch_size",
            "batch_window_ms",
            "max_loaded_adapters",
            "mixed_batches",
            "adapter_dir",
            "cors_origins",
            "device",
            "dtype",
            "trust_remote_code",
        )
    }
    settings = load_settings(args.config, adapters=parse_named_paths(args.adapter, lone=None), **flags)
    settings.check_safe()  # before any model loads: no key beyond localhost, or with runtime loading, is refused

    from . import build

    app, pool, _worker = build(settings)
    url = f"http://{settings.host}:{settings.port}/v1"
    err_console.print(f"[bold]serving[/] {', '.join(t.name for t in pool.names())} at {url}", highlight=False)
    for line in _renderings(pool):
        err_console.print(line, highlight=False, markup=False)
    logging.getLogger("tuneforge.serve").setLevel(logging.INFO)
    # SIGTERM / Ctrl-C: uvicorn stops accepting, lets requests in flight finish (up to drain_timeout_s),
    # then the app's shutdown stops the worker. New connections are refused from the first moment.
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=settings.drain_timeout_s,
    )
    uvicorn.Server(config).run()
    return 0


def _renderings(pool) -> list[str]:
    """A line for each served run whose chat prompts are not the tokenizer's template alone: what they get."""
    out = []
    for target in pool.names():
        rendering = target.rendering
        if rendering.template == "auto" and not rendering.system_prompt:
            continue
        parts = [f"template {rendering.template}"]
        if rendering.system_prompt:
            parts.append(f"system prompt {rendering.system_prompt!r}")
        out.append(f"  {target.name}: chat requests rendered as in its training run ({', '.join(parts)})")
    return out
