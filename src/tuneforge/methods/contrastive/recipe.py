"""`method: contrastive`: embedding models trained with in-batch negatives, triplets or scored pairs.

Encoders (MiniLM, BERT) pool by the mean of their tokens, decoders (SmolLM2) by
their last token; both optionally L2-normalised. Losses in ``losses.py``;
batches without duplicate texts (``data.arrange_without_duplicates``);
GradCache for batches bigger than memory; unsupervised SimCSE from raw text.
Evaluated before and after by retrieval (recall@1/5/10, MRR@10, nDCG@10 of
held-out queries against the held-out documents plus ``data.corpus``) or, for
scored pairs, the Spearman correlation of cosine similarity with the scores.
Output: a sentence-transformers folder (``model.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ...interface import CAUSAL_LM, ENCODER, Batch, EvalContext, Method, MethodData
from ...models.kind import is_causal_lm
from .config import ContrastiveConfig


def _pooling(config, decoder: bool) -> str:
    """``auto``: what the base model's own sentence-transformers setup uses (BGE: cls), else
    mean for encoders and the last token for decoders."""
    mode = config.embedding.pooling
    if mode != "auto":
        return mode
    from ...models.load import resolve_model
    from .model import POOLING_FLAGS

    folder = Path(resolve_model(config.model.name))
    saved = folder / "1_Pooling" / "config.json"
    if saved.exists():
        flags = json.loads(saved.read_text())
        for name, flag in POOLING_FLAGS.items():
            if flags.get(flag):
                return name
    return "last" if decoder else "mean"


def _adapter_notes(adapter) -> list[str]:
    if adapter is not None and adapter.type in ("bottleneck", "mam"):
        return [
            "adapter: bottleneck adapters wrap modules named 'mlp' by default; encoder models name "
            "theirs differently (set adapter.target_modules)"
        ]
    return []


@dataclass(frozen=True)
class Contrastive(Method):
    name: str = "contrastive"
    config_class: type = ContrastiveConfig
    model_kinds: tuple[str, ...] = (ENCODER, CAUSAL_LM)
    peft_task_type: str = "FEATURE_EXTRACTION"
    count_name: str = "anchors"

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        from ...data.types import DataError

        adapter_notes = _adapter_notes(config.adapter)
        try:
            data = self.load_data(config, tokenizer)
        except DataError as exc:
            return list(exc.problems), adapter_notes, {}
        errors, warnings = [], adapter_notes
        extra = data.extra
        if config.eval is not None and extra["retrieval"] is None and extra["scored"] is None:
            errors.append(
                "eval: needs held-out data; set data.eval (pairs: queries and the documents they "
                "should find) or data.eval_fraction"
            )
        if config.loss_type == "triplet" and any(len(r.texts) < 3 for r in data.train):
            errors.append("loss.type triplet: every training row needs a negative (data rows without one found)")
        if extra["anchor_equals_positive"]:
            warnings.append(
                f"{extra['anchor_equals_positive']} training pair(s) have anchor == positive; they "
                "teach nothing (use data.format: text for SimCSE)"
            )
        if config.data.format == "text" and not _has_dropout(config):
            warnings.append(
                "SimCSE needs dropout to make the two views differ; this model has none "
                "(use an adapter with dropout, e.g. adapter.dropout: 0.1)"
            )
        if extra["truncated"]:
            warnings.append(
                f"{extra['truncated']} training row(s) had a text longer than data.max_length="
                f"{config.data.max_length} tokens, cut"
            )
        if config.loss.gradient_cache and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            errors.append(
                "loss.gradient_cache runs in one process for now (its recomputing backward is not "
                "DDP-safe); drop it or train with one process"
            )
        if config.loss.gradient_cache and config.training.gradient_checkpointing:
            warnings.append(
                "loss.gradient_cache already bounds activation memory; gradient checkpointing on top only costs time"
            )
        retrieval = extra["retrieval"]
        held = (
            f"{len(retrieval.queries)} held-out queries over {len(retrieval.documents)} documents"
            if retrieval
            else f"{len(data.eval)} held-out rows"
        )
        facts = {
            "rows": len(data.train),
            "examples": len(data.train),
            "tokens": data.facts["tokens"],
            "data": f"{len(data.train)} training rows ({config.data.format}), {held}, {data.facts['tokens']} tokens",
        }
        return errors, warnings, facts

    def load_data(self, config, tokenizer) -> MethodData:
        from .data import arrange_without_duplicates, duplicate_texts, load_contrastive

        loaded = load_contrastive(config.data, tokenizer)
        train = loaded["train"]
        facts = {"rows": len(train), "tokens": sum(len(r.input_ids) for r in train)}

        def arrange(order, group, first):
            new, _ = arrange_without_duplicates(train, order, group, first)
            if "duplicate_texts_in_batches" not in facts:  # the first epoch arranged, as a measure
                facts["duplicate_texts_in_batches_if_shuffled"] = duplicate_texts(train, order, group, first)
                facts["duplicate_texts_in_batches"] = duplicate_texts(train, new, group, first)
            return new

        decoder = is_causal_lm(config)
        return MethodData(
            train=train,
            eval=loaded["eval"],
            facts=facts,
            arrange=arrange if config.loss.avoid_duplicates else None,
            extra={**loaded, "decoder": decoder, "pooling": _pooling(config, decoder)},
        )

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        from .model import load_encoder

        m = config.model
        model = load_encoder(
            m.name,
            dtype=dtype,
            trust_remote_code=m.trust_remote_code,
            revision=m.revision,
            attn_implementation=m.attn_implementation,
        )
        if getattr(model, "pooler", None) is not None:
            # BERT's pooler (CLS → dense → tanh) is not part of the embedding: frozen, it neither
            # trains nor trips DDP's unused-parameter check; it is saved unchanged.
            model.pooler.requires_grad_(False)
        return model

    def loss_module(self, config, model, data: MethodData) -> torch.nn.Module:
        from .losses import EmbeddingLoss

        loss = config.loss
        return EmbeddingLoss(
            model,
            loss=config.loss_type,
            pooling=data.extra["pooling"],
            normalize=config.embedding.normalize,
            scale=loss.scale,
            symmetric=loss.symmetric,
            margin=loss.margin,
            gradient_cache=loss.gradient_cache,
        )

    def collate(self, rows: list, tokenizer) -> Batch:
        """Every text of the batch in one (N, T) tensor: anchors, then positives, then negatives."""
        layout = [(r.ids[0], r.types[0], 0) for r in rows] + [(r.ids[1], r.types[1], 1) for r in rows]
        layout += [(ids, types, 2) for r in rows for ids, types in zip(r.ids[2:], r.types[2:])]
        width = max(len(ids) for ids, _, _ in layout)
        pad = tokenizer.pad_token_id
        input_ids = torch.full((len(layout), width), pad, dtype=torch.long)  # (N, T), right-padded
        mask = torch.zeros((len(layout), width), dtype=torch.long)
        types = torch.zeros((len(layout), width), dtype=torch.long)
        for k, (ids, token_types, _) in enumerate(layout):
            input_ids[k, : len(ids)] = torch.tensor(ids)
            mask[k, : len(ids)] = 1
            if token_types is not None:
                types[k, : len(ids)] = torch.tensor(token_types)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "role": torch.tensor([role for _, _, role in layout]),
            "negative_of": torch.tensor([b for b, r in enumerate(rows) for _ in r.ids[2:]], dtype=torch.long),
        }
        if layout[0][1] is not None:
            inputs["token_type_ids"] = types
        if rows[0].score is not None:
            inputs["scores"] = torch.tensor([r.score for r in rows], dtype=torch.float32)
        return Batch(inputs=inputs, count=len(rows), tokens=int(mask.sum()))

    def plan_profile(self, config):
        from ...planning.profile import PlanProfile

        return PlanProfile(sequences_per_item=2)  # anchor and positive

    def chance_loss(self, config, model, data: MethodData) -> float | None:
        return None  # candidates per anchor vary with the batch; "far above the start" still applies

    def periodic_metrics(self, loss: float) -> dict:
        return {"eval_loss": round(loss, 6)}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model, ctx: EvalContext) -> dict:
        out: dict = {"metrics": {}, "samples": []}
        config = ctx.config
        if config.eval is None or model is None or not ctx.accelerator.is_main_process:
            return out
        from .metrics import ranks, retrieval_metrics, spearman
        from .model import embed_texts

        extra = ctx.data.extra
        embed = lambda texts: embed_texts(  # noqa: E731
            model,
            ctx.tokenizer,
            texts,
            pooling=extra["pooling"],
            normalize=True,
            max_length=config.data.max_length,
            batch_size=config.eval.batch_size,
        )
        if extra["retrieval"] is not None:
            retrieval = extra["retrieval"]
            queries, documents = embed(retrieval.queries), embed(retrieval.documents)
            rank_list = ranks(queries, documents, retrieval.relevant)
            out["metrics"] = retrieval_metrics(rank_list)
            out["curves"] = {
                "recall@k on held-out queries": {
                    "x": [1, 2, 3, 5, 10, 20],
                    "xlabel": "k",
                    "ylabel": "recall@k",
                    "y": [round(sum(r <= k for r in rank_list) / len(rank_list), 4) for k in (1, 2, 3, 5, 10, 20)],
                }
            }
            scores = queries @ documents.T
            out["samples"] = [
                {
                    "prompt": retrieval.queries[i],
                    "reference": retrieval.documents[retrieval.relevant[i]],
                    "prediction": f"{retrieval.documents[int(scores[i].argmax())]}\n(relevant document at rank "
                    f"{rank_list[i]})",
                    "scores": {"found first": float(rank_list[i] == 1)},
                }
                for i in range(min(config.eval.samples_in_report, len(rank_list)))
            ]
        elif extra["scored"]:
            a, b, gold = zip(*extra["scored"])
            cos = (embed(list(a)) * embed(list(b))).sum(-1).tolist()
            out["metrics"] = {"spearman": round(spearman(cos, list(gold)), 6)}
        return out

    # ------------------------------------------------------------------ output

    def save(self, config, model, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        from .model import save_sentence_transformer

        decoder = is_causal_lm(config)
        save_sentence_transformer(
            model,
            output_dir,
            tokenizer,
            pooling=_pooling(config, decoder),
            normalize=config.embedding.normalize,
            max_length=config.data.max_length,
            state_dict=state_dict,
            source={"model_name": config.model.name, "revision": config.model.revision},
        )

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        from .model import load_embedding_model

        return load_embedding_model(output_dir, dtype=dtype, trust_remote_code=config.model.trust_remote_code)[0]

    def inference_loader(self, adapter_folder: Path):
        from .model import inference_loader

        return inference_loader(adapter_folder)


def _has_dropout(config) -> bool:
    from transformers import AutoConfig

    from ...models.load import resolve_model

    model_config = AutoConfig.from_pretrained(
        resolve_model(config.model.name), trust_remote_code=config.model.trust_remote_code
    )
    rates = [
        getattr(model_config, k, 0) or 0
        for k in ("hidden_dropout_prob", "attention_probs_dropout_prob", "attention_dropout", "dropout", "resid_pdrop")
    ]
    adapter_dropout = config.adapter.dropout if config.adapter is not None else 0
    return max(rates + [adapter_dropout]) > 0


METHOD = Contrastive()
