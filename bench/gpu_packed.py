"""Packed rows on a CUDA GPU: isolation per attention path, and bf16 training throughput / MFU.

    PYTHONPATH=src python bench/gpu_packed.py [--output bench/results/gpu_packed.json]

Needs no weights and no network: the models are built from their configs with random weights (throughput and
isolation do not depend on the weights), so it runs on a bare GPU machine with torch, transformers and peft.

1. **Isolation.** Random examples are packed into rows of 512 (best-fit, ``data/packing.py``), batch 4, and
   each example's summed loss is read from the packed forward and compared with the same example run alone
   (one row each), for every way tuneforge can attend over packed rows on CUDA:
   ``mask`` (transformers' dense block-diagonal mask, sdpa), ``segments`` (models/segment_attention.py: one
   torch varlen flash-attention call in bf16), and ``flash_attention_2`` — transformers' flash path fed the
   collator's boundaries as its variable-length arguments (flash-attn itself cannot be installed on a machine
   without network, so the ``flash_attention_2`` slot is filled by torch's varlen kernel; what is checked is
   that the arguments reach it and isolation holds at batch size > 1). ``leak`` is the control: plain causal
   attention over each row, what lost isolation looks like in the same numbers.
2. **Throughput.** SmolLM2-135M's architecture with LoRA r16 on all linear layers (the CPU benchmark's setup)
   and a 1.2B Llama-style model with full fine-tuning, bf16 autocast over fp32 master weights, AdamW, rows of
   ``--max-length`` packed from examples of 40–600 tokens; real tokens/s and MFU against the bf16 matmul peak
   measured in the same process (an 8192³ matmul).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: --dry-run only
sys.path.insert(0, str(HERE.parent / "src"))

from tuneforge.data.collate import collate  # noqa: E402
from tuneforge.data.packing import pack  # noqa: E402
from tuneforge.data.types import IGNORE_INDEX, Example  # noqa: E402
from tuneforge.methods.causal_lm.loss import CausalLMLoss  # noqa: E402
from tuneforge.models import segment_attention as sa  # noqa: E402

SMOLLM2_135M = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}
LLAMA_1B = {
    "vocab_size": 49152,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-5,
}


def build(spec: dict, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(
        LlamaConfig(**spec, pad_token_id=2, eos_token_id=2, bos_token_id=1, attn_implementation="sdpa")
    ).to(DEVICE)


def examples(n: int, low: int, high: int, vocab: int, seed: int) -> list[Example]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        ids = [rng.randrange(3, vocab) for _ in range(rng.randint(low, high))]
        out.append(Example(ids, [IGNORE_INDEX] + ids[1:], f"x:{i}"))
    return out


def flash_slot(module, query, key, value, attention_mask, **kwargs):
    """Stands in for flash-attn in transformers' ``flash_attention_2`` slot: the same varlen arguments go to
    tuneforge's per-segment attention (on CUDA: torch's flash-attention varlen kernel)."""
    if kwargs.get("cu_seq_lens_q") is None:
        raise RuntimeError("flash_attention_2 was called without cu_seq_lens_q: packed rows would not be isolated")
    flash_slot.calls += 1
    return sa.segment_attention(module, query, key, value, **kwargs)


def per_example_losses(model, batch, mode: str) -> list[tuple[float, torch.Tensor]]:
    """(summed token loss, last hidden states) of every packed example, in order, from one forward."""
    loss = CausalLMLoss(model, packed_attention="mask" if mode in ("flash_attention_2", "leak") else mode)
    before = model.config._attn_implementation
    if mode == "flash_attention_2":
        model.config._attn_implementation = "flash_attention_2"
    try:
        with torch.no_grad(), torch.autocast(DEVICE, dtype=torch.bfloat16):
            _, decoder, head = loss._parts()
            if mode == "leak":  # control: plain causal attention over the row, what a lost isolation gives
                hidden = decoder(
                    input_ids=batch["input_ids"],
                    position_ids=batch["position_ids"],
                    attention_mask=torch.ones_like(batch["input_ids"]),
                    use_cache=False,
                ).last_hidden_state
            else:
                hidden = loss._packed_hidden(decoder, batch["input_ids"], batch["position_ids"], batch["cu_seq_lens"])
            logits = head(hidden).float()
    finally:
        model.config._attn_implementation = before
    targets = batch["labels"][:, 1:]
    token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), targets.clamp(min=0), reduction="none"
    ) * (targets != IGNORE_INDEX)
    out = []
    for b in range(batch["input_ids"].shape[0]):
        starts = (batch["position_ids"][b] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
        for s, e in itertools.pairwise(starts):
            if (batch["labels"][b, s + 1 : e] != IGNORE_INDEX).any():  # an example, not the padding tail
                out.append((float(token[b, s : e - 1].sum()), hidden[b, s:e].float().cpu()))
    return out


def isolation(model) -> dict:
    from transformers import AttentionInterface

    flash_slot.calls = 0
    AttentionInterface._global_mapping["flash_attention_2"] = flash_slot
    items = examples(24, 20, 200, model.config.vocab_size, seed=1)
    rows = pack(items, 512, packing=True)
    results = {}
    alone_rows = pack(items, 512, packing=False)
    order = [tuple(r.input_ids) for r in alone_rows]
    alone = {}
    for i in range(0, len(alone_rows), 8):
        batch = {k: v.to(DEVICE) for k, v in collate(alone_rows[i : i + 8], 2).items()}
        for j, value in enumerate(per_example_losses(model, batch, "mask")):
            alone[order[i + j]] = value
    for mode in ("mask", "segments", "flash_attention_2", "leak"):
        try:
            results[mode] = _compare(model, rows, alone, mode)
        except Exception as exc:  # report, and go on with the other paths
            results[mode] = {"error": repr(exc)[:400]}
    if "flash_attention_2" in results:
        results["flash_attention_2"]["attention_calls_with_boundaries"] = flash_slot.calls
    return results


def _compare(model, rows, alone, mode) -> dict:
    """Worst relative difference between packed and alone per-example losses over all of ``rows``."""
    worst, worst_hidden, count = 0.0, 0.0, 0
    for i in range(0, len(rows), 4):
        chunk = rows[i : i + 4]
        batch = {k: v.to(DEVICE) for k, v in collate(chunk, 2).items()}
        got = per_example_losses(model, batch, mode)
        want = []
        for row in chunk:
            ids, pos = row.input_ids, row.position_ids
            starts = [n for n, p in enumerate(pos) if p == 0] + [len(ids)]
            want += [alone[tuple(ids[s:e])] for s, e in itertools.pairwise(starts)]
        assert len(got) == len(want), (mode, len(got), len(want))
        for (g, gh), (w, wh) in zip(got, want):
            worst = max(worst, abs(g - w) / max(abs(w), 1e-6))
            worst_hidden = max(worst_hidden, float((gh - wh).norm() / wh.norm()))
            count += 1
    return {
        "examples": count,
        "worst_relative_loss_difference": worst,
        "worst_relative_hidden_difference": worst_hidden,
        "rows_per_batch": 4,
    }


def _sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def matmul_peak() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (time.perf_counter() - start) / 1e12


def throughput(spec: dict, *, lora: bool, mode: str, batch_size: int, max_length: int, steps: int, peak: float):
    model = build(spec)
    base = sum(p.numel() for p in model.parameters())
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    loss_module = CausalLMLoss(model, packed_attention=mode)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=DEVICE == "cuda")
    needed = batch_size * (steps + 2) * (max_length // 320 + 1) * 2  # examples average ≤ 320 tokens
    rows = pack(examples(needed, 40, 600, spec["vocab_size"], seed=2), max_length)
    batches = [rows[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)][: steps + 2]
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens, start = 0, None
    for n, chunk in enumerate(batches):
        if n == 2:  # two warm-up steps
            _sync()
            start, tokens = time.perf_counter(), 0
        batch = {k: v.to(DEVICE, non_blocking=True) for k, v in collate(chunk, 2).items()}
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            loss_sum, count = loss_module(**batch)
        (loss_sum / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += sum(len(r.input_ids) for r in chunk)
    if len(batches) < steps + 2:
        raise RuntimeError(f"only {len(batches)} batches of data for {steps} timed steps")
    _sync()
    wall = time.perf_counter() - start
    per_token = (4 if lora else 6) * base  # the CPU benchmark's convention (attention FLOPs left out)
    tps = tokens / wall
    return {
        "model": f"{base / 1e6:.0f}M",
        "training": "LoRA r16 all-linear" if lora else "full",
        "attention": mode,
        "batch": f"{batch_size} × {max_length}",
        "steps_timed": len(batches) - 2,
        "tokens_per_second": round(tps),
        "mfu": round(per_token * tps / (peak * 1e12), 4),
        "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE == "cuda" else None,
        "final_loss": round(float(loss_sum / count), 4),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "results" / "gpu_packed.json")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true", help="tiny models on CPU: check the script runs")
    args = parser.parse_args(argv)
    import transformers

    small = dict(SMOLLM2_135M, hidden_size=72, intermediate_size=128, num_hidden_layers=2, vocab_size=512)
    setups = (
        ((small, True, 2, 256), (small, False, 2, 256))
        if args.dry_run
        else ((SMOLLM2_135M, True, 16, 2048), (SMOLLM2_135M, False, 16, 2048), (LLAMA_1B, False, 8, 4096))
    )
    info = {
        "device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "varlen_kernel": sa._varlen_kernel(torch.zeros(1, device=DEVICE, dtype=torch.bfloat16)) is not None,
    }
    print(info, flush=True)
    out = {"machine": info, "isolation": isolation(build(small if args.dry_run else SMOLLM2_135M))}
    print(json.dumps(out["isolation"], indent=1), flush=True)
    out["peak_bf16_tflops"] = 1.0 if args.dry_run else round(matmul_peak(), 1)
    print("bf16 matmul peak", out["peak_bf16_tflops"], "TFLOP/s", flush=True)
    runs = []
    for spec, lora, batch_size, max_length in setups:
        for mode in ("mask", "segments"):
            try:
                result = throughput(
                    spec,
                    lora=lora,
                    mode=mode,
                    batch_size=batch_size,
                    max_length=max_length,
                    steps=args.steps,
                    peak=out["peak_bf16_tflops"],
                )
            except Exception as exc:  # one failing setup must not lose the others
                result = {"model": spec["hidden_size"], "attention": mode, "error": repr(exc)[:300]}
            print(result, flush=True)
            runs.append(result)
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
    out["throughput"] = runs
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
