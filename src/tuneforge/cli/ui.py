"""`tuneforge ui`: the browser page for new runs, data preview, runs and the playground (ui/)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from .output import err_console

KEY_ENV = "TUNEFORGE_API_KEY"  # the same key variable as `tuneforge serve`


def add_parsers(sub) -> None:
    u = sub.add_parser("ui", help="a local web page: new run form, data preview, runs, compare, playground")
    u.add_argument("--port", type=int, default=7860, help="default 7860")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    u.add_argument("--runs", default="runs", help="the runs folder it lists and launches into (default: runs)")
    u.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="PATH",
        help="a folder outside the project the page may read (data, models); repeat for several",
    )
    u.add_argument(
        "--api-key",
        default=None,
        help=f"require this key (better: set {KEY_ENV}, unseen by ps); needed beyond 127.0.0.1",
    )
    u.set_defaults(func=_cmd_ui)


def _cmd_ui(args) -> int:
    started = time.monotonic()
    try:
        import uvicorn

        from ..ui.app import UISettings, create_app
    except ImportError:
        err_console.print("[bold red]error:[/] tuneforge ui needs FastAPI and uvicorn: pip install 'tuneforge[ui]'")
        return 2
    key = args.api_key or os.environ.get(KEY_ENV) or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not key:
        err_console.print(f"[bold red]error:[/] --host {args.host} serves beyond this machine: set a key ({KEY_ENV})")
        return 2
    project = Path.cwd().resolve()
    runs = (project / args.runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    settings = UISettings(project, runs, [Path(p).expanduser().resolve() for p in args.allow], key)
    app = create_app(settings)
    shown = "localhost" if args.host == "127.0.0.1" else args.host
    err_console.print(
        f"[bold]tuneforge ui[/] at http://{shown}:{args.port}/ (runs: {runs}; ready in {time.monotonic() - started:.1f} s)",
        highlight=False,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
