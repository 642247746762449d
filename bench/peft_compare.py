"""PEFT method comparison: every adapter type on the same task, data order and token budget.

    python bench/peft_compare.py                       # all methods, results in bench/results/
    python bench/peft_compare.py --methods lora,ia3 --steps 8 --samples 8   # a quick look

Task: the bundled clinical-notes extraction (note → JSON report; the
quickstart's task), SFT of the embedded SmolLM2-135M-Instruct. Every method
sees exactly the same rows in the same order: data unpacked (soft prompts
need one example per row), ``--batch`` rows per step, ``--steps`` steps, one
seed. Learning rates differ, as they must: each method's row states the rate
used, taken from its paper's / peft's usual range, not tuned here.

Each method runs in its own process (``tuneforge train``), so peak memory is
that run's own peak resident memory (weights + activations + optimizer, on
CPU). Reported per method: trainable parameters and their share, peak memory,
training tokens/s (the loop's real tokens over its wall time), held-out JSON
field accuracy and exact match on ``--samples`` held-out notes (greedy, after
training), and whether the result can merge into the base weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from sft_throughput import machine_info  # bench/ is the script's folder, so on sys.path

ROOT = Path(__file__).resolve().parent.parent

# (name, adapter section, learning rate, extra config) — rates from each method's usual range.
METHODS = [
    ("lora", {"type": "lora", "r": 16, "alpha": 32}, 2e-3, {}),
    ("dora", {"type": "lora", "r": 16, "alpha": 32, "use_dora": True}, 2e-3, {}),
    ("rslora", {"type": "lora", "r": 16, "alpha": 32, "use_rslora": True}, 5e-4, {}),
    ("pissa", {"type": "lora", "r": 16, "alpha": 16, "init": "pissa"}, 5e-4, {}),
    ("loha", {"type": "loha", "r": 8, "alpha": 8}, 2e-3, {}),
    ("lokr", {"type": "lokr", "r": 8, "alpha": 8}, 2e-3, {}),
    ("vera", {"type": "vera", "r": 256}, 1e-2, {}),
    ("adalora", {"type": "adalora", "init_r": 12, "target_r": 8}, 2e-3, {}),
    ("oft", {"type": "oft", "block_size": 32}, 2e-3, {}),
    ("ia3", {"type": "ia3"}, 1e-2, {}),
    ("bottleneck_series", {"type": "bottleneck", "placement": "series", "size": 64}, 1e-3, {}),
    ("bottleneck_parallel", {"type": "bottleneck", "placement": "parallel", "size": 64}, 1e-3, {}),
    ("mam", {"type": "mam", "size": 64, "num_virtual_tokens": 30}, 1e-3, {}),
    ("prompt_tuning", {"type": "prompt_tuning", "num_virtual_tokens": 20}, 3e-2, {}),
    ("prefix_tuning", {"type": "prefix_tuning", "num_virtual_tokens": 20}, 1e-2, {}),
    ("p_tuning", {"type": "p_tuning", "num_virtual_tokens": 20}, 1e-2, {}),
    ("layernorm", {"type": "layernorm"}, 5e-3, {}),
    ("partial_top2", {"type": "partial", "top_k_layers": 2}, 1e-4, {}),
    ("qlora_4bit", {"type": "lora", "r": 16, "alpha": 32}, 2e-3, {"model": {"quantize": "4bit"}}),
    ("lora_8bit", {"type": "lora", "r": 16, "alpha": 32}, 2e-3, {"model": {"quantize": "8bit"}}),
    ("full", None, 5e-5, {}),
]
MERGEABLE = {
    "lora",
    "dora",
    "rslora",
    "pissa",
    "loha",
    "lokr",
    "vera",
    "adalora",
    "oft",
    "ia3",
    "layernorm",
    "qlora_4bit",
    "lora_8bit",
}  # a LoRA adapter trained on a quantized base merges into the unquantized one
OUTPUT_IS_FULL_MODEL = {"partial_top2", "full"}


def method_config(name, adapter, lr, extra, *, steps, batch, samples, out_dir, before) -> dict:
    config = {
        "method": "sft",
        "name": name,
        "output_dir": str(out_dir),
        "model": {"name": "smollm2-135m-instruct", **extra.get("model", {})},
        "data": {
            "format": "chat",
            "train": str(ROOT / "examples/clinical_notes/train.jsonl"),
            "eval": str(ROOT / "examples/clinical_notes/eval.jsonl"),
            "max_length": 256,
            "packing": False,
        },
        "training": {
            "max_steps": steps,
            "batch_size": batch,
            "learning_rate": lr,
            "scheduler": "cosine",
            "warmup_ratio": 0.05,
            "max_grad_norm": 1.0,
            "seed": 42,
            "on_divergence": "warn",
        },
        "eval": {
            "scorers": ["json_field_accuracy", "exact_match"],
            "num_samples": samples,
            "max_new_tokens": 72,
            "batch_size": samples,
            "before": before,
            "samples_in_report": 3,
        },
    }
    if adapter is not None:
        config["adapter"] = adapter
    return config


def run_one(config: dict, work: Path) -> dict:
    path = work / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", str(path)], cwd=ROOT, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:], "wall_seconds": round(wall, 1)}
    summary = json.loads((Path(config["output_dir"]) / config["name"] / "summary.json").read_text())
    return {"summary": summary, "wall_seconds": round(wall, 1)}


def row_of(name, lr, result, measured_at: dict) -> dict:
    if "error" in result:
        return {"method": name, "learning_rate": lr, "error": result["error"], "measured_at": measured_at}
    s = result["summary"]
    t = s["train"]
    return {
        "method": name,
        "learning_rate": lr,
        "trainable_parameters": t["trainable_parameters"],
        "trainable_percent": t["trainable_percent"],
        "peak_memory_mb": t["peak_memory_mb"],
        "tokens_per_second": t["tokens_per_second"],
        "json_field_accuracy": s["after"].get("json_field_accuracy"),
        "exact_match": s["after"].get("exact_match"),
        "final_loss": t["final_loss"],
        "eval_loss": s["after"].get("eval_loss"),
        "before": s.get("before", {}),
        "merges": "yes" if name in MERGEABLE else ("full model" if name in OUTPUT_IS_FULL_MODEL else "no"),
        "run_wall_seconds": result["wall_seconds"],
        # --update mixes rows from several sessions: each row says which code and libraries made it
        "measured_at": measured_at,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| method | lr | trainable | % | peak memory (MB) | tokens/s | JSON field acc. | exact match | merges |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['learning_rate']:g} | failed: {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['learning_rate']:g} | {r['trainable_parameters']:,} | "
            f"{r['trainable_percent']:.3f} | {r['peak_memory_mb']:,.0f} | {r['tokens_per_second']:.0f} | "
            f"{r['json_field_accuracy']:.3f} | {r['exact_match']:.3f} | {r['merges']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(m[0] for m in METHODS))
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", default=str(ROOT / "bench/results/peft_compare.json"))
    parser.add_argument(
        "--update",
        action="store_true",
        help="replace only these methods' rows in an existing --out (e.g. to re-measure runs that "
        "shared the CPU with something else), keeping the others",
    )
    args = parser.parse_args()
    wanted = args.methods.split(",")
    unknown = set(wanted) - {m[0] for m in METHODS}
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    machine = machine_info()
    measured_at = {
        "git_commit": machine["git_commit"],
        "git_dirty": machine["git_dirty"],
        "versions": machine["versions"],
        "cpu": machine["cpu"],
    }
    with tempfile.TemporaryDirectory(prefix="peft-compare-") as tmp:
        work = Path(tmp)
        for i, (name, adapter, lr, extra) in enumerate(m for m in METHODS if m[0] in wanted):
            config = method_config(
                name,
                adapter,
                lr,
                extra,
                steps=args.steps,
                batch=args.batch,
                samples=args.samples,
                out_dir=work / "runs",
                before=(i == 0 and not args.update),
            )
            print(f"[{i + 1}/{len(wanted)}] {name} …", flush=True)
            row = row_of(name, lr, run_one(config, work), measured_at)
            rows.append(row)
            print("   ", {k: v for k, v in row.items() if k != "before"}, flush=True)
    if args.update and Path(args.out).exists():
        previous = json.loads(Path(args.out).read_text())
        fresh = {r["method"]: r for r in rows}
        order = [m[0] for m in METHODS]
        kept = {r["method"]: r for r in previous["rows"]}
        kept.update(fresh)
        rows = sorted(kept.values(), key=lambda r: order.index(r["method"]))
        base_before = previous.get("base_model_scores") or {}
    else:
        base_before = {}
    base = next((r["before"] for r in rows if r.get("before")), base_before)
    result = {
        "machine": machine,
        "setup": {
            "task": "clinical_notes",
            "steps": args.steps,
            "batch_rows": args.batch,
            "eval_samples": args.samples,
            "packing": False,
            "max_length": 256,
        },
        "base_model_scores": base,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(markdown(rows))
    print(f"base model before training: {base}")


if __name__ == "__main__":
    main()
