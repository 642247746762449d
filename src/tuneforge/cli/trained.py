"""`tuneforge predict | score | embed`: use a model trained by one method (classifier, reward model, encoder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .output import err_console


def add_parsers(sub) -> None:
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


def _cmd_predict(args) -> int:
    from ..adapters.inference import AdapterSetError, parse_named_paths
    from ..methods.classify.predict import predict_file, predict_with_adapters

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
    from ..methods.reward.score import score_command

    return score_command(
        args.model,
        args.data,
        output=args.output,
        batch_size=args.batch_size,
        max_length=args.max_length,
        console=err_console,
    )


def _cmd_embed(args) -> int:
    from ..methods.contrastive.model import embed_file

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
