"""Ablation of tuneforge's SFT hot path: what each change buys, measured on this machine.

    python bench/hot_path.py [--examples 96] [--batch-size 4] [--max-length 512]

Same model (embedded SmolLM2-135M + LoRA r=16 on all linear layers), same data
(bench/sft_data.py chat set), same AdamW, one epoch each, 2 threads, in one
process one variant after another:

1. padded   — one example per row, right-padded batches, full-vocabulary logits
               at every position (the usual `model(labels=...)` path);
2. packed   — best-fit packed rows (no cross-attention), full-vocabulary logits;
3. packed + loss positions only — the output projection and cross-entropy only
               where a label exists (SFT prompt tokens skip the 49k-wide projection);
4. … + chunked projection/loss — the (N, V) logits are never held at once
               (training/linear_ce.py);
5. … + per-segment attention — tuneforge's fp32 path: causal attention per
               packed example, no T×T block-diagonal mask (models/segment_attention.py);
6. … + bf16 autocast over fp32 weights — what ``mixed_precision: auto`` picks
               on CPUs with fast bf16 (training/precision.py).

Variants 1-4 attend through transformers' dense block-diagonal mask.

Reports real (non-padding) tokens/s for each. Nothing else should run on the
machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sft_data  # noqa: E402

from tuneforge.adapters import attach_adapter  # noqa: E402
from tuneforge.adapters.config import LoraConfig  # noqa: E402
from tuneforge.config.schema import DataConfig  # noqa: E402
from tuneforge.data import load_splits, pack  # noqa: E402
from tuneforge.data.types import IGNORE_INDEX  # noqa: E402
from tuneforge.methods.causal_lm import collate_rows  # noqa: E402
from tuneforge.methods.causal_lm.loss import CausalLMLoss  # noqa: E402
from tuneforge.models.load import load_causal_lm, load_tokenizer  # noqa: E402


def full_logits_loss(model, batch):
    """Full-vocabulary logits at every position, then token cross-entropy (the common path)."""
    logits = model(
        input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None, use_cache=False
    ).logits  # (B, T, V)
    targets = batch["labels"][:, 1:]
    loss_sum = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, (targets != IGNORE_INDEX).sum()


def _autocast_bf16(fn, batch):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return fn(batch)


def run_variant(name, rows, loss_fn, model, batch_size, pad_id):
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    real = 0
    start = time.perf_counter()
    for i in range(0, len(rows), batch_size):
        collated = collate_rows(rows[i : i + batch_size], pad_id)
        loss_sum, n = loss_fn(collated.inputs)
        (loss_sum / n.clamp(min=1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        real += collated.tokens
    wall = time.perf_counter() - start
    padded = sum(len(r.input_ids) for r in rows)
    return {
        "variant": name,
        "rows": len(rows),
        "real_tokens": real,
        "wall_seconds": round(wall, 2),
        "real_tokens_per_second": round(real / wall, 1),
        "tokens_in_batches": padded,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--variants",
        type=lambda s: [int(x) for x in s.split(",")],
        default=None,
        help="comma-separated variant numbers to run (default: all)",
    )
    parser.add_argument("--output", type=Path, default=HERE / "results" / "hot_path.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    work = Path("/tmp/tuneforge-hot-path")
    data = sft_data.write_jsonl(sft_data.build(args.examples), work / "train.jsonl")
    tokenizer = load_tokenizer(None)
    splits = load_splits(DataConfig(format="chat", train=str(data), max_length=args.max_length), tokenizer)
    padded_rows = pack(splits.train, args.max_length, packing=False)
    packed_rows = pack(splits.train, args.max_length, packing=True)
    pad_id = tokenizer.pad_token_id

    results = []
    variants = (
        ("padded, full logits", padded_rows, "full", "mask", False),
        ("packed, full logits", packed_rows, "full", "mask", False),
        ("packed, loss positions only", packed_rows, "selected", "mask", False),
        ("packed, loss positions, chunked", packed_rows, "fused", "mask", False),
        ("… + per-segment attention, no T×T mask (tuneforge fp32)", packed_rows, "fused", "segments", False),
        ("… + bf16 autocast, fp32 master weights (tuneforge auto here)", packed_rows, "fused", "segments", True),
    )
    chosen = [v for i, v in enumerate(variants, 1) if not args.variants or i in args.variants]
    for name, rows, projection, attention, bf16 in chosen:
        torch.manual_seed(0)
        lora = LoraConfig.model_validate(
            {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
        )
        model = attach_adapter(load_causal_lm(None), lora).model
        model.train()
        loss_fn = (
            CausalLMLoss(model, fused=projection == "fused", packed_attention=attention)
            if projection != "full"
            else None
        )
        fn = (
            (lambda b, m=loss_fn: m(b["input_ids"], b["labels"], b["position_ids"], b["cu_seq_lens"]))
            if loss_fn
            else (lambda b, m=model: full_logits_loss(m, b))
        )
        if bf16:

            def fn(b, inner=fn):
                return _autocast_bf16(inner, b)

        result = run_variant(name, rows, fn, model, args.batch_size, pad_id)
        results.append(result)
        print(
            f"{name:45s} {result['real_tokens_per_second']:8.1f} real tokens/s  "
            f"({result['rows']} rows, {result['wall_seconds']} s)",
            flush=True,
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "examples": args.examples,
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
