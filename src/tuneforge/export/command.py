"""The ``tuneforge export`` and ``tuneforge verify-export`` command lines (docs/EXPORT.md)."""

from __future__ import annotations

import argparse

from rich.console import Console

from . import FORMATS

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def add_parser(sub) -> None:
    from .gguf_write import QUANTS

    e = sub.add_parser("export", help="write a run as a merged folder, a GGUF file or an Ollama model (docs/EXPORT.md)")
    e.add_argument("run", metavar="RUN", help="a run folder (runs/NAME)")
    e.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    e.add_argument(
        "--quant",
        default=None,
        metavar="TYPE",
        help=f"gguf / ollama: {' | '.join(QUANTS)} (default f16); merged: f32 | f16 | bf16 (default: f32)",
    )
    e.add_argument("--output", required=True, help="the new folder (must not exist or be empty)")
    e.set_defaults(func=run_export)

    v = sub.add_parser(
        "verify-export", help="check an export against its run: held-out score, same answers, every answer stops"
    )
    v.add_argument("export_dir", metavar="DIR", help="the folder `tuneforge export` wrote")
    v.add_argument("--run", required=True, help="the run folder it was exported from")
    v.add_argument("--data", default=None, help="held-out JSONL (default: the run's data.eval / eval_fraction split)")
    v.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval.max_new_tokens")
    v.add_argument("--tolerance", type=float, default=None, help="largest allowed metric drop (default by precision)")
    v.add_argument(
        "--runtime",
        default="auto",
        choices=["auto", "llama-cpp", "transformers"],
        help="GGUF runtime: llama-cpp-python when installed (auto), else transformers reading the GGUF",
    )
    v.set_defaults(func=run_verify)


def _known_errors() -> tuple[type[BaseException], ...]:
    from ..adapters.merge import MergeRefused, OutputNotEmpty
    from ..config import ConfigError
    from ..models.load import ModelNotFoundError
    from . import ExportRefused

    return (ExportRefused, MergeRefused, OutputNotEmpty, ConfigError, ModelNotFoundError, FileNotFoundError)


def _fail(exc: BaseException) -> int:
    err_console.print(f"[bold red]error:[/] {_escape(str(exc))}", highlight=False)
    return 2


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def run_export(args: argparse.Namespace) -> int:
    from .write import export_run

    try:
        result = export_run(args.run, args.fmt, args.output, quant=args.quant)
    except _known_errors() as exc:
        return _fail(exc)
    quant = f" ({result.quant})" if result.quant else ""
    console.print(f"[bold]Exported[/] {args.run} as {result.fmt}{quant}: {result.output}", highlight=False)
    for name in result.files:
        console.print(f"  {result.output / name}", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {_escape(note)}", highlight=False)
    if result.fmt == "ollama":
        console.print(
            f"Run it: cd {result.output} && ollama create NAME -f Modelfile && ollama run NAME", highlight=False
        )
    console.print(f"Check it: tuneforge verify-export {result.output} --run {args.run}", highlight=False)
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from .verify import save_verification, verify_export

    try:
        outcome = verify_export(
            args.export_dir,
            args.run,
            data_path=args.data,
            max_new_tokens=args.max_new_tokens,
            tolerance=args.tolerance,
            runtime=args.runtime,
        )
    except _known_errors() as exc:
        return _fail(exc)
    record = outcome.record
    from ..eval.export_report import update_report
    from .source import resolve_source

    run_dir = resolve_source(args.run).run_dir
    if run_dir is not None:
        saved = save_verification(run_dir, record)
        update_report(run_dir)
        record_line = f"Saved: {saved} (and the report's export section)"
    else:
        record_line = ""
    _print_table(record)
    if record_line:
        console.print(record_line, highlight=False)
    if outcome.passed:
        console.print("[bold green]PASS[/]: the export answers like the run", highlight=False)
        return 0
    for failure in outcome.failures:
        err_console.print(f"[bold red]FAIL:[/] {_escape(failure)}", highlight=False)
    return 1


def _print_table(record: dict) -> None:
    from rich.table import Table

    def fmt(value) -> str:
        return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)

    title = (
        f"{record['format']} {record.get('quant') or ''}".strip()
        + f" in {record['runtime']}, {record['samples']} held-out prompts"
    )
    table = Table(title=_escape(title), title_justify="left")
    for column in ("", "run", "export", "drop"):
        table.add_column(column, justify="right" if column else "left")
    for name, m in record["metrics"].items():
        table.add_row(name, fmt(m["run"]), fmt(m["export"]), fmt(m["drop"]))
    table.add_row("answers identical to the run's", "", fmt(record["agreement"]), "")
    table.add_row("answers that stopped", "", fmt(record["stop_rate"]), "")
    table.add_row("prompts identical to training's", "", fmt(record["prompt_parity"]), "")
    console.print(table)
    for diff in record["differences"][:3]:
        console.print(
            f"[dim]differs:[/] {_escape(diff['prompt'][:70])!s}\n  run:    {_escape(str(diff['run'])[:120])}\n"
            f"  export: {_escape(diff['export'][:120])}",
            highlight=False,
        )
