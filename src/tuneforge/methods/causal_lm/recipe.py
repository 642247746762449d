"""Next-token prediction on a causal LM: the recipe shared by `cpt` and `sft`.

Both minimise next-token cross-entropy; they differ only in which tokens carry
a loss (every token for raw text, completions / assistant turns for SFT), and
that is decided by the data pipeline's labels, so one recipe serves both and
each method folder (``methods/cpt``, ``methods/sft``) only brings its config.

Evaluation: held-out loss and perplexity with the training loss itself, and
greedy generation for held-out prompts scored by ``eval.scorers`` (main process
only; same prompts and decoding before and after).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ...data.types import PackedRow
from ...interface import CAUSAL_LM, Batch, EvalContext, Method, MethodData


def collate_rows(rows: list[PackedRow], pad_id: int) -> Batch:
    """Packed rows → a right-padded batch; the count is the loss tokens after the shift."""
    from ...data.collate import collate
    from .loss import count_loss_tokens

    tensors = collate(rows, pad_id)
    return Batch(inputs=tensors, count=count_loss_tokens(tensors["labels"]), tokens=sum(len(r.input_ids) for r in rows))


@dataclass(frozen=True)
class CausalLM(Method):
    name: str
    config_class: type
    model_kinds: tuple[str, ...] = (CAUSAL_LM,)
    peft_task_type: str = "CAUSAL_LM"
    count_name: str = "loss_tokens"
    causal_lm_output: bool = True
    continual: bool = True

    # ------------------------------------------------------------------ checks and data

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        from ...data import validate_data
        from ...data.mixture import is_mixture, validate_mixture

        errors: list[str] = []
        mixed = is_mixture(config.data)
        data_report = validate_mixture(config.data, tokenizer) if mixed else validate_data(config.data, tokenizer)
        errors.extend(data_report.problems)
        facts = {
            "rows": data_report.rows,
            "examples": data_report.examples,
            "tokens": data_report.tokens,
            "loss_tokens": data_report.loss_tokens,
            "loss_fraction": round(data_report.loss_fraction, 4),
            "truncated": data_report.truncated,
            "data": (
                f"{data_report.rows} rows → {data_report.examples} examples, {data_report.tokens} tokens, "
                f"{data_report.loss_fraction:.1%} of them carry the loss"
                + (f", {data_report.truncated} truncated" if data_report.truncated else "")
            ),
        }
        if mixed and config.data.eval is not None:
            errors.append(
                "data.eval: a mixture holds out per source: give each source in data.train its own eval "
                "(or set data.eval_fraction); leave data.eval out"
            )
        if mixed and not data_report.problems:  # each source's share of an epoch, as training will draw it
            from ...data.mixture import describe, load_mixture

            facts["data"] = f"{facts['data']}\n  {describe(load_mixture(config.data, tokenizer).facts)}"
        if data_report.tokens and data_report.loss_tokens == 0:
            errors.append("data: no token carries a loss; check data.format and data.completion_only_loss")
        if config.eval is not None:
            from ...eval.scorers import resolve_scorer

            for spec in config.eval.scorers:
                try:
                    resolve_scorer(spec)
                except (ValueError, ImportError, AttributeError, FileNotFoundError) as exc:
                    errors.append(f"eval.scorers: {exc}")
            held_out = config.data.eval is not None or (
                mixed and any(not isinstance(s, str) and s.eval is not None for s in config.data.train)
            )
            if not held_out and config.data.eval_fraction == 0 and config.data.format != "natural_instructions":
                errors.append("eval: needs held-out data; set data.eval to a file or data.eval_fraction (e.g. 0.1)")
        return errors, list(data_report.warnings), facts

    def load_data(self, config, tokenizer) -> MethodData:
        from ...data import load_splits, pack
        from ...data.mixture import is_mixture, load_mixture

        if is_mixture(config.data):  # several sources, each its own format, drawn by weight every epoch
            mix = load_mixture(config.data, tokenizer)
            n = config.eval.num_samples if config.eval and config.eval.num_samples else None
            return MethodData(
                train=mix.train,
                eval=mix.eval,
                extra={"samples": mix.samples[:n] if n else mix.samples},
                facts=mix.facts,
                arrange=mix.arrange,
                eval_groups=mix.groups,
            )
        splits = load_splits(config.data, tokenizer)
        samples = splits.eval_samples
        if config.eval and config.eval.num_samples:
            samples = samples[: config.eval.num_samples]
        train = pack(splits.train, config.data.max_length, config.data.packing)
        held = pack(splits.eval, config.data.max_length, config.data.packing)
        return MethodData(
            train=train,
            eval=held,
            extra={"samples": samples},
            facts={"rows": len(train), "tokens": sum(len(r.input_ids) for r in train)},
        )

    # ------------------------------------------------------------------ model and loss

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        from ...models.load import load_causal_lm, quantization_config

        m = config.model
        return load_causal_lm(
            m.name,
            dtype=dtype,
            trust_remote_code=m.trust_remote_code,
            revision=m.revision,
            attn_implementation=m.attn_implementation,
            quantization_config=quantization_config(m, dtype),
        )

    def loss_module(self, config, model: torch.nn.Module, data: MethodData) -> torch.nn.Module:
        from .loss import CausalLMLoss

        return CausalLMLoss(model, packed_attention=config.model.packed_attention)

    def collate(self, rows: list[PackedRow], tokenizer) -> Batch:
        return collate_rows(rows, tokenizer.pad_token_id)

    def chance_loss(self, config, model, data) -> float | None:
        head = model.get_output_embeddings()
        vocab = head.weight.shape[0] if head is not None else getattr(model.config, "vocab_size", None)
        return math.log(vocab) if vocab else None

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, model, ctx: EvalContext) -> dict:
        from ...eval.generation import evaluate_generation
        from ...training.engine import console
        from ...training.loop import heldout_mean_loss
        from .loss import CausalLMLoss

        config = ctx.config
        out: dict = {"metrics": {}, "samples": []}
        if config.eval is None:
            return out
        if ctx.data.eval:
            loss_module = (
                ctx.loss_module
                if ctx.loss_module is not None
                else CausalLMLoss(model, packed_attention=config.model.packed_attention)
            )
            loss = heldout_mean_loss(
                loss_module,
                ctx.data.eval,
                lambda rows: self.collate(rows, ctx.tokenizer),
                config.training.batch_size,
                ctx.accelerator,
            )
            out["metrics"].update({"eval_loss": round(loss, 6), "eval_perplexity": round(math.exp(min(loss, 50)), 4)})
            for name, rows in ctx.data.eval_groups.items():  # a mixture's sources, each on its own held-out rows
                part = heldout_mean_loss(
                    loss_module,
                    rows,
                    lambda rows: self.collate(rows, ctx.tokenizer),
                    config.training.batch_size,
                    ctx.accelerator,
                )
                out["metrics"][f"eval_loss/{name}"] = round(part, 6)
        samples = ctx.data.extra.get("samples") or []
        # Generation runs on the main process only: it writes the report, and decoding
        # needs no collective, so the other processes simply wait at the next barrier.
        if samples and config.eval.scorers and ctx.accelerator.is_main_process:
            console.print(f"Generating for {len(samples)} held-out prompts ({ctx.label})…")
            result = evaluate_generation(
                model,
                ctx.tokenizer,
                samples,
                config.eval.scorers,
                max_new_tokens=config.eval.max_new_tokens,
                batch_size=config.eval.batch_size,
            )
            out["metrics"].update(result.scores)
            out["samples"] = [asdict(sample) for sample in result.samples]
            if result.field_errors:
                out["field_errors"] = result.field_errors
        return out

    def periodic_metrics(self, loss: float) -> dict:
        return {"eval_loss": round(loss, 6), "eval_perplexity": round(math.exp(min(loss, 50)), 4)}

    # ------------------------------------------------------------------ output

    def save(self, config, model, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        model.save_pretrained(output_dir, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(output_dir)

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        from ...adapters import is_adapter_folder, load_adapter
        from ...models.load import load_causal_lm, quantization_config

        if not is_adapter_folder(output_dir):  # full fine-tuning, or a selective method's full folder
            return load_causal_lm(str(output_dir), dtype=dtype)
        m = config.model
        base = load_causal_lm(
            m.name,
            dtype=dtype,
            trust_remote_code=m.trust_remote_code,
            revision=m.revision,
            quantization_config=quantization_config(m, dtype),
        )
        return load_adapter(base, output_dir)
