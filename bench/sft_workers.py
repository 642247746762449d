"""One benchmark setup per process: ``python bench/sft_workers.py SETUP SPEC.json RESULT.json``.

``sft_throughput.py`` starts each setup in a fresh interpreter so that the
peak resident memory (``ru_maxrss``) belongs to that setup alone and no setup
runs on caches another one warmed. Setups:

- ``tuneforge``: ``tuneforge.runner.train_from_config`` on a config dict, its
  real path (data pipeline, best-fit packing, ``CausalLMLoss``, shared step).
- ``trl`` / ``trl_packing`` / ``trl_gc``: ``trl.SFTTrainer`` + ``SFTConfig``
  with TRL's defaults except what must match (see ``run_trl``).
- ``matmul``: the machine's fp32 matmul peak with the same thread count.

Every training setup returns the same fields: loop wall time, real (non-pad)
tokens, padded token slots, loss tokens, optimizer steps, peak RSS.
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux: the peak resident memory of this process so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_usage() -> dict:
    """Whole-process CPU time split user / kernel, and minor page faults (fresh memory touched)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "user_seconds": round(usage.ru_utime, 1),
        "system_seconds": round(usage.ru_stime, 1),
        "minor_page_faults": usage.ru_minflt,
    }


def base_parameters(model) -> int:
    """Parameters of the frozen base model (tied weights once, LoRA matrices excluded)."""
    seen, total = set(), 0
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen or "lora_" in name:
            continue
        seen.add(id(param))
        total += param.numel()
    return total


def run_matmul(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    n = 2048
    dtype = torch.bfloat16 if spec.get("precision") == "bf16" else torch.float32  # the peak in the run's precision
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    out = torch.empty(n, n, dtype=dtype)
    for _ in range(3):  # warm up the thread pool and caches
        torch.mm(a, b, out=out)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {
        "n": n,
        "repeats": len(times),
        "best_seconds": best,
        "median_seconds": sorted(times)[len(times) // 2],
        "gflops": 2 * n**3 / best / 1e9,
        "threads": torch.get_num_threads(),
    }


def run_tuneforge(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from tuneforge.config import load_config
    from tuneforge.data import load_splits, pack
    from tuneforge.models.load import load_tokenizer
    from tuneforge.runner import train_from_config
    from tuneforge.training.engine import RowOrder

    work = Path(spec["workdir"])
    shutil.rmtree(work / "runs" / "tuneforge", ignore_errors=True)  # an earlier attempt's run (busy-machine retry)
    config = load_config(
        data={
            "method": "sft",
            "name": "tuneforge",
            "output_dir": str(work / "runs"),
            "model": {"name": spec["model"]},
            "adapter": {
                "type": "lora",
                "r": spec["lora_r"],
                "alpha": spec["lora_alpha"],
                "dropout": 0.0,
                "target_modules": "all-linear",
            },
            "data": {"format": "chat", "train": spec["data"], "max_length": spec["max_length"], "packing": True},
            "training": {
                "epochs": 1,
                "batch_size": spec["batch_size"],
                "gradient_accumulation_steps": 1,
                "learning_rate": spec["learning_rate"],
                "scheduler": "cosine",
                "warmup_steps": 0,
                "weight_decay": 0.0,
                "max_grad_norm": 1.0,
                "seed": spec["seed"],
                "num_threads": spec["threads"],
                "mixed_precision": "bf16" if spec.get("precision") == "bf16" else "no",
            },
        }
    )
    result = train_from_config(config)
    train = result.summary["train"]

    # Padding the loop does not report: rebuild its rows (cached tokenisation) and its batches, in its order.
    # The last step of an epoch is topped up with rows of the next epoch's order (RowOrder.take), so a
    # run of ceil(rows / B) steps can train on up to B - 1 rows twice; `tokens` counts them, as trained.
    tokenizer = load_tokenizer(spec["model"])
    rows = pack(load_splits(config.data, tokenizer).train, config.data.max_length, config.data.packing)
    order, batch = RowOrder(len(rows), spec["seed"]), spec["batch_size"]
    batches = [order.take(step * batch, batch) for step in range(train["steps"])]
    if sum(len(rows[i].input_ids) for b in batches for i in b) != train["tokens"]:
        raise RuntimeError("rebuilt batches do not match the tokens the loop reported")
    slots = sum(len(b) * max(len(rows[i].input_ids) for i in b) for b in batches)
    return {
        "wall_seconds": train["wall_seconds"],
        "tokens": train["tokens"],
        "padded_tokens": slots,
        "loss_tokens": train["loss_tokens"],
        "steps": train["steps"],
        "rows": len(rows),
        "rows_trained": sum(len(b) for b in batches),
        "examples": sum(r.num_examples for r in rows),
        "dataset_tokens": sum(len(r.input_ids) for r in rows),
        "final_loss": train["final_loss"],
        "base_parameters": base_parameters(result.model),
        "trainable_parameters": train["trainable_parameters"],
        "loss_on": "assistant turns (content + <|im_end|>); prompt and system tokens masked",
        "batch": f"{spec['batch_size']} packed rows of <= {spec['max_length']} tokens (best-fit decreasing), "
        "shape (B, longest row), causal attention per packed example (model.packed_attention: auto)",
        "precision": result.summary.get("precision"),
        "peak_rss_mb": peak_rss_mb(),
        "process_cpu": cpu_usage(),
    }


def run_trl(spec: dict, *, packing: bool, gradient_checkpointing: bool = False) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tuneforge.models.load import resolve_model

    class Clock(TrainerCallback):
        """Loop time only: from just before the first batch to the end of the last step."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_train_end(self, args, state, control, **kwargs):
            self.end = time.perf_counter()

    class CountingSFTTrainer(SFTTrainer):
        """SFTTrainer that counts the tokens of every batch it trains on (nothing else changes)."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.counts = {"tokens": 0, "padded_tokens": 0, "loss_tokens": 0, "batches": 0}

        def training_step(self, model, inputs, num_items_in_batch=None):
            ids = inputs["input_ids"]  # (B, T); padding-free: (1, sum of lengths), no padding
            mask = inputs.get("attention_mask")
            self.counts["tokens"] += int(mask.sum()) if mask is not None else ids.numel()
            self.counts["padded_tokens"] += ids.numel()
            self.counts["loss_tokens"] += int((inputs["labels"][:, 1:] != -100).sum())
            self.counts["batches"] += 1
            return super().training_step(model, inputs, num_items_in_batch)

    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line]
    dataset = Dataset.from_list(rows)  # in memory: no datasets cache shared between setups
    out_dir = tempfile.mkdtemp(dir=spec["workdir"], prefix="trl-")
    args = SFTConfig(
        output_dir=out_dir,
        # What must match tuneforge's run:
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        num_train_epochs=1,
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=spec["seed"],
        max_length=spec["max_length"],
        packing=packing,
        # The run's precision: fp32, or bf16 autocast (TRL's default bf16=True) where the bench asks for it.
        use_cpu=True,
        bf16=spec.get("precision") == "bf16",
        fp16=False,
        # TRL defaults to True; off by default here so both tools do the same compute.
        gradient_checkpointing=gradient_checkpointing,
        # No eval, no checkpoints, no trackers, no worker processes, no progress bar.
        eval_strategy="no",
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(
        r=spec["lora_r"],
        lora_alpha=spec["lora_alpha"],
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    clock = Clock()
    trainer = CountingSFTTrainer(
        model=resolve_model(spec["model"]), args=args, train_dataset=dataset, peft_config=peft_config, callbacks=[clock]
    )
    prepared = trainer.train_dataset
    output = trainer.train()
    counts = trainer.counts
    dataset_tokens = sum(len(ids) for ids in prepared["input_ids"])
    if counts["tokens"] != dataset_tokens:  # one epoch must see every prepared token exactly once
        raise RuntimeError(f"counted {counts['tokens']} tokens in batches but the dataset holds {dataset_tokens}")
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {
        "wall_seconds": clock.end - clock.start,
        "train_call_seconds": output.metrics.get("train_runtime"),
        "tokens": counts["tokens"],
        "padded_tokens": counts["padded_tokens"],
        "loss_tokens": counts["loss_tokens"],
        "steps": trainer.state.global_step,
        "rows": len(prepared),
        "rows_trained": len(prepared),
        "examples": len(rows),
        "dataset_tokens": dataset_tokens,
        "final_loss": _last_loss(trainer.state.log_history),
        "mean_loss": output.training_loss,
        "trl_counted_tokens": getattr(trainer, "_total_train_tokens", None),
        "base_parameters": base_parameters(trainer.model),
        "trainable_parameters": trainable,
        "padding_free": getattr(trainer, "padding_free", None),
        "packing_strategy": args.packing_strategy if packing else None,
        "completion_only_loss": getattr(trainer, "completion_only_loss", None),
        "assistant_only_loss": args.assistant_only_loss,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optim": getattr(args.optim, "value", str(args.optim)),
        "loss_on": "every token (TRL's default for conversational data: assistant_only_loss=False)",
        "batch": (
            f"{spec['batch_size']} packed rows of <= {spec['max_length']} tokens ({args.packing_strategy}), "
            "flattened into one (1, sum of lengths) sequence with position_ids (padding-free)"
        )
        if packing
        else f"{spec['batch_size']} examples right-padded to the longest, with attention_mask",
        "peak_rss_mb": peak_rss_mb(),
        "process_cpu": cpu_usage(),
    }


def _last_loss(history: list[dict]):
    losses = [h["loss"] for h in history if "loss" in h]
    return losses[-1] if losses else None


SETUPS = {
    "tuneforge": run_tuneforge,
    "trl": lambda spec: run_trl(spec, packing=False),
    "trl_packing": lambda spec: run_trl(spec, packing=True),
    "trl_gc": lambda spec: run_trl(spec, packing=False, gradient_checkpointing=True),
    "matmul": run_matmul,
}


def main(argv: list[str]) -> None:
    setup, spec_path, result_path = argv
    spec = json.loads(Path(spec_path).read_text())
    result = SETUPS[setup](spec)
    result["setup"] = setup
    Path(result_path).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
