"""`tuneforge predict`: the command line of ``predict.py`` (registered by ``registry.add_method_commands``).

Imported whenever the `tuneforge` parser is built, so nothing heavy (torch) at module level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

err_console = Console(stderr=True, soft_wrap=True)


def add_parser(sub) -> None:
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


def _cmd_predict(args) -> int:
    from ...adapters.inference import AdapterSetError, parse_named_paths
    from .predict import predict_file, predict_with_adapters

    columns = {"text": args.text_column} if args.text_column != "text" else {}
    results: dict[str, tuple[list[dict], dict | None]]  # by --model / --adapter name
    if bool(args.model) == bool(args.adapter):
        raise AdapterSetError("predict: give --model RUN, or one or more --adapter [NAME=]PATH (not both)")
    if args.model:
        results = {
            args.model: predict_file(
                args.model, args.data, batch_size=args.batch_size, max_length=args.max_length, columns=columns
            )
        }
    else:
        named: dict[str, str | Path] = {**parse_named_paths(args.adapter)}
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
        keys = [k for k in next(m for _, m in results.values() if m) if k != "rows"]
        table = Table("adapter", *keys, title="Against the file's labels")
        for name, (_, m) in results.items():
            table.add_row(
                name,
                *(f"{m[k]:.4f}" if m and isinstance(m.get(k), float) else str((m or {}).get(k, "-")) for k in keys),
            )
        err_console.print(table)
    return 0
