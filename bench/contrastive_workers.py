"""One contrastive benchmark setup per process: ``python bench/contrastive_workers.py SETUP SPEC.json RESULT.json``.

``contrastive_throughput.py`` starts each setup in a fresh interpreter so that
the peak resident memory (``ru_maxrss``) belongs to that setup alone and no
setup runs on caches another one warmed. Setups:

- ``tuneforge``: ``tuneforge.runner.train_from_config`` on a config dict built
  like ``configs/contrastive_faq.yaml`` (its real path: data loading and
  checks, batches without duplicate texts, ``EmbeddingLoss`` InfoNCE, the
  shared loop and step, the sentence-transformers folder it saves), eval off.
- ``st``: ``sentence_transformers.SentenceTransformerTrainer`` +
  ``MultipleNegativesRankingLoss`` with ``BatchSamplers.NO_DUPLICATES``,
  everything else as close to tuneforge's run as the two tools allow
  (see ``run_st``).
- ``eval``: every saved output (and the base model), loaded with plain
  ``SentenceTransformer(path)``, scored on the held-out retrieval task the
  same way (see ``run_eval``).
- ``matmul``: the machine's fp32 matmul peak with the same thread count (a
  check that the machine did not slow down between the start and the end).

Both training setups return the same fields: loop wall time, pairs trained,
real (non-padding) tokens and padded token slots of the batches, optimizer
steps, final loss, peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from sft_workers import cpu_usage, peak_rss_mb, run_matmul  # noqa: E402


def _rows(path: str) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- tuneforge


def tuneforge_config(spec: dict, name: str) -> dict:
    """configs/contrastive_faq.yaml, with the benchmark's data, seed, warmup, threads, and eval off."""
    return {
        "method": "contrastive",
        "name": name,
        "output_dir": str(Path(spec["workdir"]) / "runs"),
        "model": {"name": "minilm-l6-v2", "dtype": "float32"},
        "data": {"format": "pairs", "train": spec["train"], "max_length": spec["max_length"]},
        "loss": {"type": "infonce", "scale": spec["scale"], "symmetric": False, "avoid_duplicates": True},
        "embedding": {"pooling": "auto", "normalize": True},
        "training": {
            "epochs": 1,
            "batch_size": spec["batch_size"],
            "gradient_accumulation_steps": 1,
            "learning_rate": spec["learning_rate"],
            "scheduler": "linear",
            "warmup_steps": spec["warmup_steps"],
            "weight_decay": 0.0,
            "max_grad_norm": 1.0,
            "seed": spec["seed"],
            "num_threads": spec["threads"],
            "mixed_precision": "no",
        },
        # Eval off in the timed process: the held-out retrieval is scored for both tools
        # afterwards, in one separate process (the `eval` setup), the same way.
        "eval": None,
    }


def run_tuneforge(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from tuneforge.config import load_config
    from tuneforge.methods import get_method
    from tuneforge.models.load import load_tokenizer
    from tuneforge.runner import train_from_config
    from tuneforge.training.engine import RowOrder

    config = load_config(data=tuneforge_config(spec, f"tuneforge-seed{spec['seed']}"))
    started = time.perf_counter()
    result = train_from_config(config)
    run_seconds = time.perf_counter() - started
    peak = peak_rss_mb()  # before the bookkeeping below, which the run itself does not need
    train = result.summary["train"]

    # Padding and pairs the loop does not report: rebuild its batches, in its order (same seeded
    # permutation, same no-duplicates arrangement). The last step of the epoch is topped up with
    # rows of the next epoch's order (RowOrder.take), as the loop does.
    method = get_method("contrastive")
    tokenizer = load_tokenizer(config.model.name)
    data = method.load_data(config, tokenizer)
    rows, batch = data.train, spec["batch_size"]
    order = RowOrder(len(rows), spec["seed"], arrange=data.arrange, group=batch)
    batches = [order.take(step * batch, batch) for step in range(train["steps"])]
    tokens = sum(len(ids) for b in batches for i in b for ids in rows[i].ids)
    if tokens != train["tokens"]:
        raise RuntimeError(f"rebuilt batches hold {tokens} tokens but the loop reported {train['tokens']}")
    # EmbeddingLoss embeds anchors and positives as separate runs, each trimmed to its own longest
    # text (since b62904e; before, the whole (2B, T) batch was one forward at the longest text).
    slots = sum(len(b) * max(len(rows[i].ids[role]) for i in b) for b in batches for role in (0, 1))
    copies = [2 * len(b) - len({t for i in b for t in rows[i].texts}) for b in batches]
    pairs = sum(len(b) for b in batches)
    if pairs != train["anchors"]:
        raise RuntimeError(f"rebuilt batches hold {pairs} pairs but the loop reported {train['anchors']}")
    return {
        "wall_seconds": train["wall_seconds"],
        "run_seconds": round(run_seconds, 2),
        "pairs": pairs,
        "dataset_pairs": len(rows),
        "pairs_repeated": pairs - len({i for b in batches for i in b}),
        "tokens": tokens,
        "padded_tokens": slots,
        "steps": train["steps"],
        "batch_sizes": sorted({len(b) for b in batches}),
        "batches_with_duplicate_texts": sum(1 for c in copies if c),
        "duplicate_text_copies": sum(copies),  # texts that were already in their batch (false negatives)
        "duplicates_at_step": [k + 1 for k, c in enumerate(copies) if c],
        "data_facts": {k: v for k, v in data.facts.items() if k.startswith("duplicate")},
        "final_loss": train["final_loss"],
        "trainable_parameters": train["trainable_parameters"],
        "output": str(result.output_dir),
        "batch": f"{spec['batch_size']} pairs collated into one ({2 * spec['batch_size']}, T) tensor; anchors and "
        "positives embedded in two forwards, each trimmed to its own longest text",
        "peak_rss_mb": peak,
        "process_cpu": cpu_usage(),
    }


# --------------------------------------------------------------------------- sentence-transformers


def run_st(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        """Loop time only: from just before the first batch to the end of the last step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    class CountingMNRL(MultipleNegativesRankingLoss):
        """MultipleNegativesRankingLoss that counts what every batch holds (nothing else changes)."""

        counts: ClassVar[dict] = {
            "pairs": 0,
            "tokens": 0,
            "padded_tokens": 0,
            "batches": 0,
            "batch_sizes": set(),
            "duplicate_text_copies": [],
            "anchor_ids": set(),
        }

        def forward(self, sentence_features, labels=None):
            c = self.counts
            c["pairs"] += sentence_features[0]["input_ids"].shape[0]
            c["batch_sizes"].add(sentence_features[0]["input_ids"].shape[0])
            c["batches"] += 1
            texts = []
            for column, features in enumerate(sentence_features):  # one per column: anchors, then positives
                mask = features["attention_mask"]
                c["tokens"] += int(mask.sum())
                c["padded_tokens"] += mask.numel()
                for ids, m in zip(features["input_ids"].tolist(), mask.tolist()):
                    texts.append(tuple(i for i, k in zip(ids, m) if k))
                    if column == 0:
                        c["anchor_ids"].add(texts[-1])
            c["duplicate_text_copies"].append(len(texts) - len(set(texts)))
            return super().forward(sentence_features, labels)

    started = time.perf_counter()
    pairs = [{"anchor": r["anchor"], "positive": r["positive"]} for r in _rows(spec["train"])]
    dataset = Dataset.from_list(pairs)  # in memory: no datasets cache shared between runs
    model = SentenceTransformer(spec["model_path"], device="cpu")
    model.max_seq_length = spec["max_length"]
    loss = CountingMNRL(model, scale=spec["scale"])
    out_dir = Path(spec["workdir"]) / "runs" / f"st-seed{spec['seed']}"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "trainer"),
        # What must match tuneforge's run:
        num_train_epochs=1,
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="linear",
        warmup_steps=spec["warmup_steps"],
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=spec["seed"],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        # fp32 on the CPU.
        use_cpu=True,
        bf16=False,
        fp16=False,
        # No eval, no checkpoints, no trackers, no worker processes, no progress bar.
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        logging_steps=1,
    )
    clock = Clock()
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=[clock])
    output = trainer.train()
    model.save_pretrained(str(out_dir / "model"))
    run_seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    counts = CountingMNRL.counts
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "wall_seconds": clock.end - clock.start,
        "train_runtime": output.metrics.get("train_runtime"),
        "run_seconds": round(run_seconds, 2),
        "pairs": counts["pairs"],
        "dataset_pairs": len(pairs),
        "tokens": counts["tokens"],
        "padded_tokens": counts["padded_tokens"],
        "steps": trainer.state.global_step,
        "batches": counts["batches"],
        "batch_sizes": sorted(counts["batch_sizes"]),
        "batches_with_duplicate_texts": sum(1 for n in counts["duplicate_text_copies"] if n),
        "duplicate_text_copies": sum(counts["duplicate_text_copies"]),
        "duplicates_at_step": [k + 1 for k, n in enumerate(counts["duplicate_text_copies"]) if n],
        "distinct_anchors_trained": len(counts["anchor_ids"]),  # every anchor of the data is distinct
        "final_loss": losses[-1] if losses else None,
        "mean_loss": output.training_loss,
        # BERT's pooler is left out: it is not part of the embedding and never gets a gradient here.
        "trainable_parameters": sum(
            p.numel() for name, p in model.named_parameters() if p.requires_grad and ".pooler." not in name
        ),
        "optim": getattr(args.optim, "value", str(args.optim)),
        "output": str(out_dir / "model"),
        "batch": f"{spec['batch_size']} pairs: anchors and positives tokenised per column in the collator, "
        "two forwards of (B, T_column)",
        "peak_rss_mb": peak,
        "process_cpu": cpu_usage(),
    }


# --------------------------------------------------------------------------- evaluation


def rank_metrics(queries, documents, relevant: list[int]) -> dict:
    """Unit-normalised (Q, d) and (D, d) → recall@1/5/10 and MRR@10 of each query's one relevant document.

    A document that scores higher than the relevant one, or ties with it and comes first in the
    corpus, ranks above it.
    """
    import torch

    scores = queries @ documents.T
    target = scores[torch.arange(len(relevant)), torch.tensor(relevant)]
    index = torch.arange(scores.shape[1])[None, :]
    ties = (scores == target[:, None]) & (index < torch.tensor(relevant)[:, None])
    ranks = ((scores > target[:, None]).sum(1) + ties.sum(1) + 1).tolist()
    n = len(ranks)
    out = {f"recall@{k}": sum(r <= k for r in ranks) / n for k in (1, 5, 10)}
    out["mrr@10"] = sum(1 / r for r in ranks if r <= 10) / n
    return {k: round(v, 4) for k, v in out.items()}


def run_eval(spec: dict) -> dict:
    """Every model in ``spec['models']`` ({label: path}) scored the same way with plain sentence-transformers."""
    import torch

    torch.set_num_threads(spec["threads"])
    from sentence_transformers import SentenceTransformer

    held = _rows(spec["eval"])
    corpus = [r["text"] for r in _rows(spec["corpus"])]
    where = {text: i for i, text in enumerate(corpus)}
    missing = [r["positive"] for r in held if r["positive"] not in where]
    if missing:
        raise RuntimeError(f"{len(missing)} held-out positives are not in the corpus, e.g. {missing[0]!r}")
    queries, relevant = [r["anchor"] for r in held], [where[r["positive"]] for r in held]
    out = {"queries": len(queries), "documents": len(corpus), "models": {}}
    for label, path in spec["models"].items():
        model = SentenceTransformer(path, device="cpu")
        longest = max(len(ids) for ids in model.tokenizer(queries + corpus)["input_ids"])
        q = model.encode(queries, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
        d = model.encode(corpus, batch_size=64, normalize_embeddings=True, convert_to_tensor=True)
        entry = {
            "path": path,
            **rank_metrics(q.float().cpu(), d.float().cpu(), relevant),
            "max_seq_length": model.max_seq_length,
            "longest_text_tokens": longest,
            "modules": [type(m).__name__ for m in model],
        }
        if label.startswith("tuneforge"):
            # Cross-check: tuneforge's own loader and embedding path must give the same embeddings.
            from tuneforge.methods.contrastive.model import embed_texts, load_embedding_model

            tf_model, tokenizer, settings = load_embedding_model(path)
            tq = embed_texts(
                tf_model,
                tokenizer,
                queries,
                pooling=settings["pooling"],
                normalize=True,
                max_length=settings["max_length"],
            )
            td = embed_texts(
                tf_model,
                tokenizer,
                corpus,
                pooling=settings["pooling"],
                normalize=True,
                max_length=settings["max_length"],
            )
            entry["tuneforge_embed_max_abs_diff"] = float(max((tq - q.cpu()).abs().max(), (td - d.cpu()).abs().max()))
            entry["tuneforge_embed_recall@1"] = rank_metrics(tq, td, relevant)["recall@1"]
        out["models"][label] = entry
    return out


SETUPS = {"tuneforge": run_tuneforge, "st": run_st, "eval": run_eval, "matmul": run_matmul}


def main(argv: list[str]) -> None:
    setup, spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = SETUPS[setup](spec)
    result["setup"] = setup
    Path(result_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
