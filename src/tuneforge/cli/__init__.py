"""The `tuneforge` command: train | validate | plan | eval | generate | chat | predict | score | embed | merge | adapters |
serve | models | quickstart."""

from __future__ import annotations

import argparse
import os

from ..registry import add_method_commands
from . import adapters, inference, sweep, train, ui
from .inference import load_for_inference
from .output import console, err_console

__all__ = ["console", "err_console", "load_for_inference", "main"]


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides (key=value) may come before or after flags such as --resume.
    args, extra = parser.parse_known_args(argv)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Exception as exc:  # user-facing errors become one clear message
        known = _known_errors()
        if isinstance(exc, known) and not os.environ.get("TUNEFORGE_DEBUG"):
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            return 2
        raise


def _known_errors() -> tuple[type[BaseException], ...]:
    from ..adapters import AdapterLoadError
    from ..adapters.combine import CombineRefused
    from ..adapters.inference import AdapterSetError
    from ..adapters.merge import MergeRefused, OutputNotEmpty
    from ..checks import ChecksFailed
    from ..config import ConfigError
    from ..continual.evaluation import ScoreMissing
    from ..continual.runner import ContinualRefused
    from ..data.types import DataError
    from ..models.load import ModelNotFoundError
    from ..runner import RunFolderExists
    from ..serve.settings import ServeSettingsError
    from ..sweep.runner import SweepRefused
    from ..training.checkpoint import CheckpointMismatch, CheckpointWriteError
    from ..training.divergence import DivergenceError
    from ..training.early_stop import EarlyStopMetricMissing
    from ..training.step import NonFiniteLossError

    return (
        ConfigError,
        DataError,
        ChecksFailed,
        ModelNotFoundError,
        RunFolderExists,
        NonFiniteLossError,
        DivergenceError,
        CheckpointMismatch,
        CheckpointWriteError,
        FileNotFoundError,
        AdapterLoadError,
        AdapterSetError,
        MergeRefused,
        OutputNotEmpty,
        CombineRefused,
        ServeSettingsError,
        ContinualRefused,
        ScoreMissing,
        EarlyStopMetricMissing,
        SweepRefused,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneforge", description=__doc__)
    sub = p.add_subparsers(dest="command")
    train.add_parsers(sub)
    inference.add_parsers(sub)
    add_method_commands(sub)  # predict, score, embed: each in its method's folder
    adapters.add_parsers(sub)
    sweep.add_parsers(sub)
    ui.add_parsers(sub)

    from ..export.command import add_parser as add_export_parser
    from ..serve.command import add_parser as add_serve_parser

    add_export_parser(sub)  # export, verify-export
    add_serve_parser(sub)
    return p
