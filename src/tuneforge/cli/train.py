"""`tuneforge train | validate | plan | quickstart`: the commands that read a run config."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

from .output import console, err_console, print_errors


def add_parsers(sub) -> None:
    t = sub.add_parser("train", help="train from a config file")
    t.add_argument("config")
    t.add_argument("overrides", nargs="*", help="key.subkey=value overrides, e.g. training.learning_rate=1e-4")
    t.add_argument("--resume", action="store_true", help="continue the run from its latest checkpoint")
    t.add_argument(
        "--num-processes",
        type=int,
        default=1,
        help="data-parallel processes on this machine (launches torchrun; gloo on CPU)",
    )
    t.add_argument(
        "--accelerate-config",
        default=None,
        help="launch with this accelerate config (configs/accelerate/: ddp, fsdp, deepspeed_zero2/3, ...)",
    )
    t.set_defaults(func=_cmd_train)

    v = sub.add_parser("validate", help="check a config, its data and chat template without loading weights")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*")
    how = v.add_mutually_exclusive_group()
    how.add_argument("--accelerate-config", default=None, help="also check this launch setup against the config")
    how.add_argument(
        "--schema-only",
        action="store_true",
        help="only the schema (unknown keys included) and that the data files exist: no model, "
        "tokenizer or data rows read, torch not imported (instant)",
    )
    v.set_defaults(func=_cmd_validate)

    pl = sub.add_parser(
        "plan", help="memory by part, time per step and per run, and whether a config fits; no weights loaded"
    )
    pl.add_argument("config")
    pl.add_argument("overrides", nargs="*")
    pl.add_argument("--processes", type=int, default=1, help="data-parallel processes to plan for (default 1)")
    pl.set_defaults(func=_cmd_plan)

    q = sub.add_parser("quickstart", help="the bundled demo: LoRA SFT of the embedded model on clinical notes")
    q.add_argument("--output", default="runs", help="parent folder of the run (default: runs)")
    q.add_argument("overrides", nargs="*", help="overrides for configs/quickstart.yaml")
    q.set_defaults(func=_cmd_quickstart)


def _cmd_train(args) -> int:
    from ..config import load_config

    config = load_config(args.config, args.overrides)
    launched = "LOCAL_RANK" in os.environ
    if config.stages and (args.num_processes > 1 or args.accelerate_config or launched):
        from ..checks import ChecksFailed

        raise ChecksFailed(
            ["stages: continual runs train in one process for now; leave out --num-processes and --accelerate-config"]
        )
    if args.accelerate_config and not launched:
        import torch

        from ..distributed import check_launch, read_accelerate_config

        problems = check_launch(
            read_accelerate_config(args.accelerate_config), config, cuda_available=torch.cuda.is_available()
        )
        if problems:
            from ..checks import ChecksFailed

            raise ChecksFailed(problems)
        return _relaunch(args, ["-m", "accelerate.commands.launch", "--config_file", args.accelerate_config])
    if args.num_processes > 1 and not launched:
        return _relaunch(
            args, ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.num_processes}"]
        )
    from ..runner import train_from_config
    from ..training.loop import TrainingInterrupted

    try:
        if config.stages:
            from ..continual.runner import run_continual

            run_continual(config, config_path=args.config, resume=args.resume)
        else:
            train_from_config(config, config_path=args.config, resume=args.resume)
    except TrainingInterrupted as stop:
        again = shlex.join(["tuneforge", "train", args.config, *args.overrides, "--resume"])
        err_console.print(
            f"[yellow]Stopped by {stop.signal_name}.[/] Checkpoint: {stop.checkpoint}\nContinue with: {again}"
        )
        return 130
    return 0


def _relaunch(args, launcher: list[str]) -> int:
    """Re-run this same command under a launcher (torchrun / accelerate launch): N processes."""
    import subprocess

    cmd = [sys.executable, *launcher, "-m", "tuneforge", "train", args.config, *args.overrides]
    if args.resume:
        cmd.append("--resume")
    process = subprocess.Popen(cmd)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            # Pass Ctrl-C on and keep waiting: the workers checkpoint before they exit.
            process.send_signal(signal.SIGINT)


def _cmd_validate(args) -> int:
    from ..config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]✗ config[/] {exc}", highlight=False)
        return 1
    console.print(f"[green]✓ schema[/] method={config.method} model={config.model.name}")
    if args.schema_only:  # torch-free up to here and in check_files (tests/test_torch_free.py)
        from ..checks import check_files

        report = check_files(config)
        console.print(f"[green]✓ files[/] {report.facts['files']}", highlight=False)
        if print_errors(report.errors):
            return 1
        console.print("[bold green]valid[/] (schema only: model, tokenizer and data rows not checked)")
        return 0
    from ..checks import check_config
    from ..data.types import DataError
    from ..models.load import load_tokenizer

    if args.accelerate_config:
        import torch

        from ..distributed import check_launch, read_accelerate_config

        try:
            setup = read_accelerate_config(args.accelerate_config)
        except (FileNotFoundError, ValueError) as exc:
            err_console.print(f"[bold red]✗ launch[/] {exc}", highlight=False)
            return 1
        launch_problems = check_launch(setup, config, cuda_available=torch.cuda.is_available())
        for problem in launch_problems:
            err_console.print(f"[bold red]✗ launch[/] {problem}", highlight=False)
        if launch_problems:
            return 1
        console.print(f"[green]✓ launch[/] {setup.distributed_type} × {setup.num_processes} processes")
    tokenizer = load_tokenizer(
        config.model.name, trust_remote_code=config.model.trust_remote_code, revision=config.model.revision
    )
    try:
        report = check_config(config, tokenizer=tokenizer)
    except DataError as exc:
        err_console.print(f"[bold red]✗ data[/] {exc}", highlight=False)
        return 1
    if report.facts.get("data"):
        console.print(f"[green]✓ data[/] {report.facts['data']}", highlight=False)
    if report.facts.get("precision"):
        console.print(f"[green]✓ precision[/] {report.facts['precision']}", highlight=False)
    for warning in report.warnings:
        console.print(f"[yellow]! {warning}[/]", highlight=False)
    if print_errors(report.errors):
        return 1
    console.print("[bold green]valid[/]")
    return 0


def _cmd_plan(args) -> int:
    """`tuneforge plan CONFIG`: the resource plan as a table (planning/)."""
    from ..config import load_config
    from ..planning import PlanError, build_plan, print_plan

    config = load_config(args.config, args.overrides)
    try:
        plan = build_plan(config, processes=max(1, args.processes))
    except PlanError as exc:
        err_console.print(f"[bold red]error:[/] {exc} (plan another model with model.name=...)", highlight=False)
        return 2
    print_plan(console, plan)
    return 0


def _cmd_quickstart(args) -> int:
    from ..quickstart import run_quickstart

    run_quickstart(Path(args.output), args.overrides)
    return 0
