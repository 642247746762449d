"""`tuneforge embed`: embed a file of texts with a trained encoder (registered by ``registry.add_method_commands``).

Imported whenever the `tuneforge` parser is built, so nothing heavy (torch, numpy) at module level.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

err_console = Console(stderr=True, soft_wrap=True)


def add_parser(sub) -> None:
    em = sub.add_parser("embed", help="embed a file of texts with a model trained by method: contrastive")
    em.add_argument("--model", required=True, help="a contrastive run folder, or its model/ or adapter/ folder")
    em.add_argument("--data", required=True, help="JSONL / CSV / JSON with a text column, or .txt (one text a line)")
    em.add_argument("--output", required=True, help="a .jsonl ({text, embedding} rows) or .npy file")
    em.add_argument("--text-column", default="text")
    em.add_argument("--batch-size", type=int, default=64)
    em.set_defaults(func=_cmd_embed)


def _cmd_embed(args) -> int:
    from .model import embed_file

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
