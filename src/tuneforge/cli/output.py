"""The consoles every `tuneforge` command prints through, and the tables they share."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_errors(errors: list[str]) -> bool:
    """One ✗ line per error on stderr; True when there were any."""
    for error in errors:
        err_console.print(f"[bold red]✗[/] {error}", highlight=False)
    return bool(errors)


def print_metrics(title: str, result: dict) -> None:
    table = Table("metric", "value", title=title)
    for key, value in result.items():
        table.add_row(key, f"{value:.4f}")
    console.print(table)


def print_comparison(title: str, scored: dict[str, tuple[dict, list]]) -> None:
    """One row per adapter (and the base), one column per metric."""
    metrics = list(dict.fromkeys(key for result, _ in scored.values() for key in result))
    table = Table(title=title)
    table.add_column("adapter", no_wrap=True)
    for key in metrics:
        table.add_column(key, justify="right")
    for label, (result, _) in scored.items():
        table.add_row(label, *(f"{result[key]:.4f}" if key in result else "-" for key in metrics))
    console.print(table)
