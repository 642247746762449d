"""Memory of the embedded SmolLM2-135M loaded in fp32, 8-bit (LLM.int8) and 4-bit (QLoRA NF4).

    python bench/quant_memory.py            # prints a markdown table, writes bench/results/quant_memory.json

Each mode loads in its own process, so resident memory (RSS) is that load's
alone. Reported: transformers' ``get_memory_footprint()`` (parameters +
buffers as stored), the process's peak RSS after loading (the Python runtime,
torch and the libraries included), and the same after one LoRA (r 16, all
linear) forward + backward on a batch of 4 × 256 tokens, as a training step
would do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, resource, sys, torch
from tuneforge.models.load import load_causal_lm, quantization_config, count_parameters
from tuneforge.config.schema import ModelConfig
from tuneforge.adapters import attach_adapter
from tuneforge.adapters.config import LoraConfig
mode = sys.argv[1]
cfg = ModelConfig(quantize=None if mode == "fp32" else mode)
model = load_causal_lm("smollm2-135m-instruct", dtype=torch.float32, quantization_config=quantization_config(cfg, torch.float32))
footprint = model.get_memory_footprint()
rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
adapted = attach_adapter(model, LoraConfig(r=16, alpha=32)).model
ids = torch.randint(3, 40000, (4, 256))
adapted.train()
adapted(input_ids=ids, labels=ids).loss.backward()
rss_step = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"mode": mode, "weights_mb": round(footprint / 2**20, 1), "rss_after_load_mb": round(rss_load, 1),
                  "rss_after_lora_step_mb": round(rss_step, 1), "parameters": count_parameters(adapted)[1]}))
"""


def main() -> None:
    rows = []
    for mode in ("fp32", "8bit", "4bit"):
        out = subprocess.run([sys.executable, "-c", WORKER, mode], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            raise SystemExit(out.stderr[-2000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    (ROOT / "bench/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench/results/quant_memory.json").write_text(json.dumps(rows, indent=1))
    print("| base | weights (MB) | peak RSS after load (MB) | peak RSS after a LoRA step (MB) |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['weights_mb']:,} | {r['rss_after_load_mb']:,.0f} | {r['rss_after_lora_step_mb']:,.0f} |"
        )


if __name__ == "__main__":
    main()
