"""`tuneforge score`: the command line of ``score.py`` (registered by ``registry.add_method_commands``).

Imported whenever the `tuneforge` parser is built, so nothing heavy (torch) at module level.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)


def add_parser(sub) -> None:
    sc = sub.add_parser("score", help="score responses (and chosen / rejected pairs) with a reward model")
    sc.add_argument("--model", required=True, help="a method: reward run folder, or its model/ or adapter/ folder")
    sc.add_argument("--data", required=True, help="rows {prompt, response}, {messages} or {prompt, chosen, rejected}")
    sc.add_argument("--output", default=None, help="write JSONL here (default: print to standard output)")
    sc.add_argument("--batch-size", type=int, default=16)
    sc.add_argument("--max-length", type=int, default=None, help="default: the length the model was trained with")
    sc.set_defaults(func=_cmd_score)


def _cmd_score(args) -> int:
    """Write JSONL (``--output`` or standard output) and print the summary on standard error."""
    from .score import score_file

    rows, summary = score_file(args.model, args.data, batch_size=args.batch_size, max_length=args.max_length)
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.output:
        Path(args.output).write_text(lines, encoding="utf-8")
        err_console.print(f"Wrote {len(rows)} scored rows to {args.output}", highlight=False)
    else:
        sys.stdout.write(lines)
    err_console.print(
        ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()), highlight=False
    )
    return 0
