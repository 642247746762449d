"""Interleaved A/B of packed-attention modes on the SFT benchmark's real batches.

    python bench/packed_attention_ab.py [--modes mask,segments] [--rounds 1] [--bf16]

One model (embedded SmolLM2-135M + LoRA r16 on all linear layers), the first 28
packed rows of bench/sft_data.py's 96 conversations in batches of 4; for each
batch, a forward + backward in every mode, the order alternating between rounds,
so a machine that gets busier or slower mid-run affects every mode alike (a
sequential benchmark cannot tell that apart from a real difference). Prints
mean seconds per batch and real tokens/s per mode.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sft_data  # noqa: E402

from tuneforge.adapters import attach_adapter  # noqa: E402
from tuneforge.adapters.config import LoraConfig  # noqa: E402
from tuneforge.config.schema import DataConfig  # noqa: E402
from tuneforge.data import load_splits, pack  # noqa: E402
from tuneforge.methods.causal_lm import collate_rows  # noqa: E402
from tuneforge.methods.causal_lm.loss import CausalLMLoss  # noqa: E402
from tuneforge.models.load import load_causal_lm, load_tokenizer  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="mask,segments")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="under bf16 autocast")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    modes = args.modes.split(",")
    data = sft_data.write_jsonl(sft_data.build(96), Path("/tmp/tuneforge-hot-path") / "train.jsonl")
    tokenizer = load_tokenizer(None)
    rows = pack(load_splits(DataConfig(format="chat", train=str(data), max_length=512), tokenizer).train, 512)
    lora = LoraConfig.model_validate(
        {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    )
    model = attach_adapter(load_causal_lm(None), lora).model
    batches = [collate_rows(rows[i : i + 4], tokenizer.pad_token_id) for i in range(0, 28, 4)]
    losses = {m: CausalLMLoss(model, packed_attention=m) for m in modes}
    seconds = dict.fromkeys(modes, 0.0)
    for r in range(args.rounds):
        for batch in batches:
            for mode in modes if r % 2 == 0 else modes[::-1]:
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                    loss_sum, count = losses[mode](**batch.inputs)
                (loss_sum / count).backward()
                model.zero_grad(set_to_none=True)
                seconds[mode] += time.perf_counter() - start
    tokens = args.rounds * sum(b.tokens for b in batches)
    for mode in modes:
        print(
            f"{mode:10s} {seconds[mode] / (args.rounds * len(batches)):.3f} s/batch  "
            f"{tokens / seconds[mode]:.1f} real tokens/s"
        )


if __name__ == "__main__":
    main()
