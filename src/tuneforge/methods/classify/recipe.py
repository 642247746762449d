"""`method: classify`: sequence classification, full fine-tuning or an adapter.

A label head on the pooled hidden state — the last non-pad token of a causal
LM, [CLS] through the pooler for an encoder — trained with (weighted,
optionally smoothed) cross-entropy, example-weighted. Evaluated before and
after on the held-out set (accuracy, macro-F1, per-class precision / recall,
confusion matrix) and, before, against the zero-shot prompting baseline.
Output: a folder plain ``AutoModelForSequenceClassification`` loads, or a peft
adapter with the head in ``modules_to_save`` that plain peft loads with what the
folder says (model.py, portable.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ...interface import CAUSAL_LM, ENCODER, Batch, EvalContext, Method, MethodData
from ...models.kind import is_causal_lm
from ..heldout import evaluates_here, length_sorted_batches
from .config import ClassifyConfig


def _class_weights(config, counts: list[int], labels: list[str]) -> list[float] | None:
    spec = config.loss.class_weights
    if spec is None:
        return None
    if spec == "balanced":
        from .losses import balanced_weights

        return balanced_weights(counts)
    return [float(spec.get(name, 1.0)) for name in labels]


@dataclass(frozen=True)
class Classify(Method):
    name: str = "classify"
    config_class: type = ClassifyConfig
    model_kinds: tuple[str, ...] = (CAUSAL_LM, ENCODER)
    peft_task_type: str = "SEQ_CLS"
    count_name: str = "examples"
    continual: bool = True  # one loss per row, one classifier that carries over

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        from ...data.types import DataError

        errors: list[str] = []
        warnings: list[str] = []
        try:
            data = self.load_data(config, tokenizer)
        except DataError as exc:
            return list(exc.problems), warnings, {}
        labels = data.extra["labels"]
        counts = data.extra["counts"]
        spec = config.loss.class_weights
        if isinstance(spec, dict):
            errors += [
                f"loss.class_weights.{name}: not a label (labels: {', '.join(labels)})"
                for name in spec
                if name not in labels
            ]
        if not data.eval and config.eval is not None:
            errors.append("eval: needs held-out data; set data.eval to a file or data.eval_fraction (e.g. 0.1)")
        smallest, largest = min(counts.values()), max(counts.values())
        if smallest * 10 < largest and spec is None:
            warnings.append(
                f"labels are imbalanced ({largest} vs {smallest} training examples); consider "
                "loss.class_weights: balanced"
            )
        truncated = data.extra["truncated"]
        if truncated:
            warnings.append(
                f"{truncated} training text(s) were longer than data.max_length="
                f"{config.data.max_length} tokens and were cut"
            )
        shown = ", ".join(f"{name} {n}" for name, n in counts.items())
        facts = {
            "rows": len(data.train) + len(data.eval),
            "examples": len(data.train),
            "labels": labels,
            "tokens": data.facts["tokens"],
            "truncated": truncated,
            "data": f"{len(data.train)} training / {len(data.eval)} held-out texts, {len(labels)} labels "
            f"({shown}), {data.facts['tokens']} tokens",
        }
        return errors, warnings, facts

    def stage_problems(self, config) -> list[str]:
        """One classifier carries over from stage to stage: every stage needs the same labels in the same
        head order, which only a top-level ``data.labels`` fixes (found labels depend on each stage's rows)."""
        from ...config.schema import stage_data

        if config.data.labels is None:
            return [
                "stages: with method classify every stage trains the same head; name its labels once at the top "
                "level, e.g. data: {labels: [negative, positive]} (each stage's rows then use those names)"
            ]
        return [
            f"stages: stage {stage.name} sets data.labels {stage_data(config, k).labels}; every stage shares the "
            f"top-level labels {config.data.labels}: remove the stage's own"
            for k, stage in enumerate(config.stages)
            if stage_data(config, k).labels != config.data.labels
        ]

    def load_data(self, config, tokenizer) -> MethodData:
        from .data import load_classification

        decoder = is_causal_lm(config)
        splits = load_classification(config.data, tokenizer, decoder=decoder)
        return MethodData(
            train=splits.train,
            eval=splits.eval,
            extra={
                "labels": splits.labels,
                "counts": splits.counts,
                "truncated": splits.truncated,
                "decoder": decoder,
                "pad_token_id": tokenizer.pad_token_id,
                "texts": splits.eval_texts,
            },
            facts={"rows": len(splits.train), "tokens": sum(len(e.input_ids) for e in splits.train)},
        )

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        from .model import load_classifier

        m = config.model
        return load_classifier(
            m.name,
            data.extra["labels"],
            dtype=dtype,
            pad_token_id=data.extra["pad_token_id"],
            trust_remote_code=m.trust_remote_code,
            revision=m.revision,
            attn_implementation=m.attn_implementation,
        )

    def loss_module(self, config, model: torch.nn.Module, data: MethodData) -> torch.nn.Module:
        from .losses import ClassifierLoss

        weights = _class_weights(config, list(data.extra["counts"].values()), data.extra["labels"])
        return ClassifierLoss(model, weights=weights, label_smoothing=config.loss.label_smoothing)

    def collate(self, rows: list, tokenizer) -> Batch:
        pad = tokenizer.pad_token_id
        width = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T), right-padded
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
        with_types = rows[0].token_type_ids is not None
        token_types = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row.input_ids)
            input_ids[b, :n] = torch.tensor(row.input_ids)
            attention_mask[b, :n] = 1
            if with_types:
                token_types[b, :n] = torch.tensor(row.token_type_ids)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": torch.tensor([r.label for r in rows], dtype=torch.long),
        }
        if with_types:
            inputs["token_type_ids"] = token_types
        return Batch(inputs=inputs, count=len(rows), tokens=sum(len(r.input_ids) for r in rows))

    def chance_loss(self, config, model, data: MethodData) -> float | None:
        # With class weights a batch's loss at chance is Σ w_y·ln K / n, not ln K: no fixed level.
        return None if config.loss.class_weights is not None else math.log(len(data.extra["labels"]))

    def periodic_metrics(self, loss: float) -> dict:
        return {"eval_loss": round(loss, 6)}

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model, ctx: EvalContext) -> dict:
        """Held-out metrics on the main process (the set is small; no collective needed)."""
        out: dict = {"metrics": {}, "samples": []}
        config = ctx.config
        if not evaluates_here(ctx, model):
            return out
        from .losses import classification_loss_sum
        from .metrics import classification_metrics, confusion_matrix, per_class

        labels = ctx.data.extra["labels"]
        logits, gold = self._logits(model, ctx)
        probs = torch.softmax(logits, dim=-1)
        weights = _class_weights(config, list(ctx.data.extra["counts"].values()), labels)
        loss = classification_loss_sum(
            logits,
            gold,
            label_smoothing=config.loss.label_smoothing,
            weights=torch.tensor(weights) if weights else None,
        ) / len(gold)
        predicted = probs.argmax(-1).tolist()
        gold_list = gold.tolist()
        out["metrics"] = {"eval_loss": round(float(loss), 6), **classification_metrics(gold_list, predicted, labels)}
        out["matrices"] = {
            "confusion matrix (rows: true label, columns: predicted)": {
                "labels": labels,
                "values": confusion_matrix(gold_list, predicted, len(labels)),
            }
        }
        classes = per_class(gold_list, predicted, len(labels))
        out["tables"] = {
            "per class": {
                "columns": ["label", "precision", "recall", "F1", "support"],
                "rows": [
                    [name, round(c["precision"], 4), round(c["recall"], 4), round(c["f1"], 4), c["support"]]
                    for name, c in zip(labels, classes)
                ],
            }
        }
        texts = ctx.data.extra["texts"]
        out["samples"] = [
            {
                "prompt": texts[i].text + (f"\n{texts[i].text_pair}" if texts[i].text_pair else ""),
                "reference": labels[gold_list[i]],
                "prediction": f"{labels[predicted[i]]}  (p = {float(probs[i, predicted[i]]):.2f})",
                "scores": {"correct": float(predicted[i] == gold_list[i])},
            }
            for i in range(min(len(texts), config.eval.samples_in_report))
        ]
        if ctx.label == "before" and config.eval.zero_shot_baseline:
            baseline = self._zero_shot(ctx, labels, gold_list)
            if baseline is not None:
                out["baselines"] = {"zero-shot prompting (base model)": baseline}
        return out

    @torch.no_grad()
    def _logits(self, model, ctx: EvalContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, K) logits and (N,) gold labels over the held-out set, in its order."""
        from ...eval.generation import eval_mode
        from .losses import ClassifierLoss

        rows = ctx.data.eval
        scorer = ClassifierLoss(model)
        device = next(model.parameters()).device
        out = torch.zeros(len(rows), len(ctx.data.extra["labels"]))
        with eval_mode(model):
            for chunk in length_sorted_batches(rows, ctx.config.eval.batch_size):
                inputs = self.collate([rows[i] for i in chunk], ctx.tokenizer).inputs
                inputs.pop("labels")
                logits = scorer.logits(**{k: v.to(device) for k, v in inputs.items()})
                out[chunk] = logits.float().cpu()
        return out, torch.tensor([r.label for r in rows])

    def _zero_shot(self, ctx: EvalContext, labels: list[str], gold: list[int]) -> dict | None:
        from ...models.load import load_causal_lm, resolve_dtype
        from ...training.engine import console
        from .metrics import classification_metrics
        from .zero_shot import zero_shot_predictions

        config = ctx.config
        if not ctx.data.extra["decoder"] or not getattr(ctx.tokenizer, "chat_template", None):
            return None  # an encoder, or a base model without a chat template, cannot be prompted
        n = config.eval.zero_shot_samples or len(gold)
        texts = [t.text if t.text_pair is None else f"{t.text}\n{t.text_pair}" for t in ctx.data.extra["texts"][:n]]
        console.print(f"Zero-shot baseline: prompting the base model for {len(texts)} held-out texts…")
        m = config.model
        device = ctx.accelerator.device
        lm = load_causal_lm(
            m.name, dtype=resolve_dtype(m.dtype, device), trust_remote_code=m.trust_remote_code, revision=m.revision
        ).to(device)
        predicted, _answers = zero_shot_predictions(lm, ctx.tokenizer, texts, labels, batch_size=config.eval.batch_size)
        del lm
        metrics = classification_metrics(gold[:n], predicted, labels)
        metrics["unmapped_answers"] = round(sum(p < 0 for p in predicted) / max(len(predicted), 1), 6)
        return {key: value for key, value in metrics.items() if "/" not in key}

    # ------------------------------------------------------------------ output

    def save(self, config, model, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        from .model import save_classifier

        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        m = config.model
        save_classifier(
            model,
            output_dir,
            tokenizer,
            state_dict=state_dict,
            info={
                "labels": labels,
                "max_length": config.data.max_length,
                "pad_token_id": tokenizer.pad_token_id,
                "model_name": m.name,
                "revision": m.revision,
                "trust_remote_code": m.trust_remote_code,
            },
        )

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        from .model import load_trained_classifier

        m = config.model
        return load_trained_classifier(output_dir, dtype=dtype, trust_remote_code=m.trust_remote_code)[0]

    def inference_loader(self, adapter_folder: Path):
        from .model import inference_loader

        return inference_loader(adapter_folder)


METHOD = Classify()
