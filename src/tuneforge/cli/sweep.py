"""`tuneforge sweep SWEEP.yaml`: a search over config keys (sweep/), each trial an ordinary run."""

from __future__ import annotations

import shlex

from .output import err_console


def add_parsers(sub) -> None:
    sw = sub.add_parser("sweep", help="search config keys (grid / random / tpe); each trial an ordinary run")
    sw.add_argument("sweep", metavar="SWEEP", help="the sweep file (YAML): base config, metric, parameters")
    sw.add_argument("--budget", default=None, help="total wall-clock budget, e.g. 30m, 2h (overrides the file's)")
    sw.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    sw.add_argument("--dry-run", action="store_true", help="print the trials and their planned cost, run none")
    sw.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    from ..sweep.run import run_sweep
    from ..training.loop import TrainingInterrupted

    try:
        run_sweep(args.sweep, budget=args.budget, resume=args.resume, dry_run=args.dry_run)
    except TrainingInterrupted as stop:
        again = shlex.join(["tuneforge", "sweep", args.sweep, "--resume"])
        err_console.print(f"[yellow]Stopped by {stop.signal_name}.[/] Continue with: {again}")
        return 130
    return 0
