"""DPO throughput: tuneforge `method: dpo` vs TRL's DPOTrainer, LoRA on the embedded SmolLM2-135M, on this machine.

    flock /tmp/cpu.lock .venv/bin/python bench/dpo_throughput.py --update   # ≈ 9 min on 2 cores; writes
                                                                            # bench/results/dpo_throughput.json
    .venv/bin/python bench/dpo_throughput.py --steps 3 --warmup 1 --no-wait   # a smoke check; prints only

Both tools train the same LoRA adapter (r 16, α 32, no dropout, every linear
layer) on the same preference pairs, in the same batches, for the same number
of optimizer steps: DPO's sigmoid loss, β 0.1, fp32, batch 4 pairs, max length
256. Each setup runs in its own fresh process (``--worker``), one after the
other, so its peak RSS is its own and no setup runs on caches another warmed.

- The pairs (``build_pairs``) are generated offline, seeded, from standard-library
  docstrings (``sft_data.candidates``): a question with some context as the
  prompt (30–80 tokens of user text), the asked name's docstring as the chosen
  answer and another name's as the rejected one (40–120 tokens each), rendered
  with the model's chat template. tuneforge reads them as ``{prompt, chosen,
  rejected}`` strings and applies the chat template itself; TRL gets the same
  conversation already rendered as text (prompt through ``<|im_start|>assistant\\n``,
  responses through ``<|im_end|>``). The TRL worker checks that every pair's
  token ids equal tuneforge's (TRL's own conversational path would also train
  on the ``\\n`` the template puts after ``<|im_end|>``: one more token per sequence).
- Same batches: TRL reads the pairs in tuneforge's row order
  (``training.engine.RowOrder``) with ``train_sampling_strategy="sequential"``;
  the steps × batch size pairs are one epoch exactly. TRL pads (2B, T)
  batches (chosen rows, then rejected rows, right-padded); so does tuneforge
  with ``pair_forward: separate``. tuneforge's default (``auto`` → shared
  prompt here) puts each pair in one row, prompt once and both responses after
  it, so the network computes fewer positions ("computed" in the table, padding
  included; "real tok" always counts both full sequences of each pair).
- Timing: each optimizer step's end is stamped (tuneforge: around
  ``training.loop.optimizer_step``; TRL: ``on_step_end``); the first ``--warmup``
  steps are left out; pairs/s = measured steps × batch / their seconds.
  Tokens/s counts real (non-padding) tokens of both sequences of each pair.
  Model loading, tokenisation and reference precomputation are outside the
  window; precomputation is timed separately and folded into an end-to-end figure.
- Same computation: at step 1 the policy equals the reference (LoRA B = 0), so
  both first losses must be ln 2 = 0.693147; the script prints them.

Run it on a quiet machine (see bench/README.md): before each setup it waits for
other processes to leave the CPU alone and runs the setup again when they took
more than 5% of it meanwhile.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import sft_data  # noqa: E402
from sft_throughput import machine_info, run_setup  # noqa: E402

SETUPS = ("tuneforge", "tuneforge_separate", "tuneforge_precomputed", "trl", "trl_precompute", "tuneforge_gc", "trl_gc")
DEFAULT_SETUPS = "tuneforge,tuneforge_separate,tuneforge_precomputed,trl,trl_precompute"
LABELS = {
    "tuneforge": "tuneforge (reference: adapter off)",
    "tuneforge_separate": "tuneforge pair_forward: separate",
    "tuneforge_precomputed": "tuneforge reference: precomputed",
    "trl": "TRL (precompute_ref_log_probs=False)",
    "trl_precompute": "TRL precompute_ref_log_probs=True",
    "tuneforge_gc": "tuneforge + grad ckpt",
    "trl_gc": "TRL + grad ckpt (its default)",
}
MODEL = "smollm2-135m-instruct"
LORA_R, LORA_ALPHA = 16, 32
LEARNING_RATE = 5e-5
BETA = 0.1
SEED = 42
THREADS = 2
PROMPT_TOKENS, RESPONSE_TOKENS = ((30, 80), (40, 120))  # user text of the prompt; each response's text
TARGET_VS_TRL = 2.0  # issue #8 item 6: ≥ 2× TRL's pairs/s at no more memory
LN2 = math.log(2)
OUT = HERE / "results" / "dpo_throughput.json"
QUIET_MAX_WAIT = 300.0  # seconds to wait for a quiet machine before each setup, then run anyway (and say so)
WORKER = [sys.executable, str(Path(__file__).resolve()), "--worker"]  # + SETUP SPEC RESULT: one setup, own process


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per setup (pairs = steps × batch)")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per sequence (prompt + one response)")
    parser.add_argument(
        "--setups",
        default=DEFAULT_SETUPS,
        help=f"comma-separated subset of {', '.join(SETUPS)} (*_gc: gradient checkpointing on, TRL's own default)",
    )
    parser.add_argument("--update", action="store_true", help=f"write the results to --output ({OUT.name})")
    parser.add_argument("--output", type=Path, default=OUT)
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=1,
        help="run a setup again when other processes used more than 5%% of the CPU meanwhile",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="do not wait for a quiet machine (smoke checks; the timings then mean nothing)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep data, runs and logs here (default: a temporary folder, removed afterwards)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("SETUP", "SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup(s) {', '.join(unknown)}; choose from {', '.join(SETUPS)}")
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    return args


# ----------------------------------------------------------------------------- data


def _cut(tokenizer, text: str, n: int) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return tokenizer.decode(ids).strip()


def build_pairs(num_pairs: int, tokenizer, seed: int = 0) -> list[dict]:
    """``num_pairs`` rows ``{prompt, chosen, rejected}`` (plain strings), deterministic for a Python version."""
    pool = sft_data.candidates()
    rng = random.Random(seed)

    def text_of(first: str, n: int) -> str:  # a docstring, continued with others until it has n tokens
        text = first
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < n + 2:
            text += "\n\n" + rng.choice(pool)[1]
        return _cut(tokenizer, text, n)

    rows = []
    for name, answer in rng.sample(pool, num_pairs):
        question = rng.choice(sft_data.QUESTIONS).format(name=name)
        room = rng.randint(*PROMPT_TOKENS) - len(tokenizer(question, add_special_tokens=False)["input_ids"]) - 4
        context = text_of(rng.choice(pool)[1], max(room, 4))
        other = rng.choice([a for n, a in pool if n != name])
        rows.append(
            {
                "prompt": f"{question}\n\nWhere I saw it:\n{context}",
                "chosen": text_of(answer, rng.randint(*RESPONSE_TOKENS)),
                "rejected": text_of(other, rng.randint(*RESPONSE_TOKENS)),
            }
        )
    return rows


def tuneforge_config(
    spec: dict,
    name: str,
    *,
    reference: str = "auto",
    gradient_checkpointing: bool = False,
    output_dir: str | None = None,
    pair_forward: str = "auto",
):
    from tuneforge.config import load_config

    return load_config(
        data={
            "method": "dpo",
            "name": name,
            "output_dir": output_dir or str(Path(spec["workdir"]) / "runs"),
            "model": {"name": spec["model"]},
            "adapter": {
                "type": "lora",
                "r": spec["lora_r"],
                "alpha": spec["lora_alpha"],
                "dropout": 0.0,
                "target_modules": "all-linear",
            },
            "data": {"train": spec["data"], "feedback_format": "pairs", "max_length": spec["max_length"]},
            "loss": {"type": "dpo", "beta": spec["beta"], "reference": reference},
            "eval": None,
            "pair_forward": pair_forward,
            "training": {
                "max_steps": spec["steps"],
                "batch_size": spec["batch_size"],
                "gradient_accumulation_steps": 1,
                "learning_rate": spec["learning_rate"],
                "scheduler": "cosine",
                "warmup_steps": 0,
                "weight_decay": 0.0,
                "max_grad_norm": 1.0,
                "seed": spec["seed"],
                "num_threads": spec["threads"],
                "gradient_checkpointing": gradient_checkpointing,
            },
        }
    )


def encode(spec: dict) -> dict:
    """tuneforge's token ids of every pair and its batches: the reference both workers are checked against."""
    from tuneforge.methods.dpo.data import load_preferences
    from tuneforge.models.load import load_tokenizer
    from tuneforge.training.engine import RowOrder

    rows = load_preferences(tuneforge_config(spec, "encode"), load_tokenizer(spec["model"])).train
    if len(rows) != spec["pairs"]:
        raise RuntimeError(f"tuneforge kept {len(rows)} of {spec['pairs']} pairs")
    order = RowOrder(len(rows), spec["seed"]).take(0, len(rows))  # the loop's epoch-0 order
    pairs = [
        {
            "prompt_ids": r.pair.prompt_ids,
            "chosen_ids": r.pair.chosen.input_ids[len(r.pair.prompt_ids) :],
            "rejected_ids": r.pair.rejected.input_ids[len(r.pair.prompt_ids) :],
        }
        for r in rows
    ]
    b = spec["batch_size"]
    batches = [order[i : i + b] for i in range(0, len(order), b)]
    lengths = [
        (len(p["prompt_ids"]) + len(p["chosen_ids"]), len(p["prompt_ids"]) + len(p["rejected_ids"])) for p in pairs
    ]
    return {
        "pairs": pairs,
        "order": order,
        "step_tokens": [sum(sum(lengths[i]) for i in batch) for batch in batches],
        "step_slots": [2 * len(batch) * max(max(lengths[i]) for i in batch) for batch in batches],
        # pair_forward shared_prompt: one row per pair, prompt + both responses
        "step_prompt_tokens": [sum(len(pairs[i]["prompt_ids"]) for i in batch) for batch in batches],
        "step_slots_shared": [
            len(batch) * max(sum(lengths[i]) - len(pairs[i]["prompt_ids"]) for i in batch) for batch in batches
        ],
        "stats": {
            "prompt_tokens": _spread([len(p["prompt_ids"]) for p in pairs]),
            "response_tokens": _spread([len(p["chosen_ids"]) for p in pairs] + [len(p["rejected_ids"]) for p in pairs]),
            "sequence_tokens": _spread([n for pair in lengths for n in pair]),
        },
    }


def _spread(values: list[int]) -> dict:
    return {"min": min(values), "mean": round(sum(values) / len(values), 1), "max": max(values)}


# ----------------------------------------------------------------------------- workers (one per process)


def _window(stamps: list[float], step_tokens: list[int], warmup: int, batch: int) -> dict:
    """Seconds, pairs and real tokens of steps warmup+1 … N, from the end-of-step time stamps."""
    if not warmup:
        raise ValueError("--warmup must be at least 1: the window starts at the end of a step")
    measured = len(stamps) - warmup
    seconds = stamps[-1] - stamps[warmup - 1]
    return {
        "measured_steps": measured,
        "measured_seconds": seconds,
        "measured_pairs": measured * batch,
        "measured_tokens": sum(step_tokens[warmup : len(stamps)]),
        "step_seconds": [round(b - a, 3) for a, b in itertools.pairwise(stamps)],
    }


def run_tuneforge(
    spec: dict, *, reference: str = "auto", gradient_checkpointing: bool = False, pair_forward: str = "auto"
) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from sft_workers import base_parameters, cpu_usage, peak_rss_mb

    import tuneforge.methods.dpo.reference as reference_module
    import tuneforge.training.loop as loop_module
    from tuneforge.runner import train_from_config

    # Measurement hooks only (nothing the loop does changes): stamp each optimizer step's end, time
    # the reference precomputation.
    stamps: list[float] = []
    precompute: list[float] = []
    optimizer_step, store = loop_module.optimizer_step, reference_module.store_reference_logps

    def timed_step(*args, **kwargs):
        out = optimizer_step(*args, **kwargs)
        stamps.append(time.perf_counter())
        return out

    def timed_store(*args, **kwargs):
        t0 = time.perf_counter()
        store(*args, **kwargs)
        precompute.append(time.perf_counter() - t0)

    loop_module.optimizer_step = timed_step
    reference_module.store_reference_logps = timed_store

    config = tuneforge_config(
        spec,
        "tuneforge",
        reference=reference,
        gradient_checkpointing=gradient_checkpointing,
        output_dir=tempfile.mkdtemp(dir=spec["workdir"], prefix="tuneforge-"),
        pair_forward=pair_forward,
    )
    result = train_from_config(config)
    from tuneforge.methods.dpo.config import shares_prompt

    shared = shares_prompt(config, result.model.config)
    train, history = result.summary["train"], _read_metrics(result)
    expected = spec["encoded"]
    if [h["tokens"] for h in history] != expected["step_tokens"][: len(history)]:
        raise RuntimeError("tuneforge's per-step tokens differ from the expected batches")
    model = result.model
    return {
        **_window(stamps, expected["step_tokens"], spec["warmup"], spec["batch_size"]),
        "loop_seconds": train["wall_seconds"],
        "first_step_seconds": stamps[0] - (stamps[-1] - train["wall_seconds"]),
        "steps": len(stamps),
        "losses": [h["loss"] for h in history],
        "first_step_metrics": {k: v for k, v in history[0].items() if k.startswith(("rewards/", "logps/"))},
        "precompute_seconds": sum(precompute) if precompute else None,
        "reference": {"auto": "adapter_disabled (auto)", "precomputed": "precomputed"}[reference],
        "pair_forward": "shared_prompt" if shared else "separate",
        "gradient_checkpointing": gradient_checkpointing,
        "dtype": str(next(model.parameters()).dtype),
        "base_parameters": base_parameters(model),
        "trainable_parameters": train["trainable_parameters"],
        "optimizer": "torch.optim.AdamW (foreach=None, fused only on CUDA)",
        "peak_rss_mb": peak_rss_mb(),
        "process_cpu": cpu_usage(),
    }


def _read_metrics(result) -> list[dict]:
    path = Path(result.run_dir) / "metrics.jsonl"
    return [r for r in (json.loads(line) for line in path.read_text().splitlines() if line) if "loss" in r]


def run_trl(spec: dict, *, precompute: bool = False, gradient_checkpointing: bool = False) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from peft import LoraConfig
    from sft_workers import base_parameters, cpu_usage, peak_rss_mb
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tuneforge.models.load import load_tokenizer, resolve_model

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.begin = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    class CountingDPOTrainer(DPOTrainer):
        """DPOTrainer that notes each batch's tokens and each step's loss, and times the precomputation."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            counts["tokens"].append(int(inputs["attention_mask"].sum()))
            counts["slots"].append(inputs["input_ids"].numel())
            loss = super().training_step(model, inputs, num_items_in_batch)
            counts["losses"].append(float(loss))
            return loss

        def _precompute_ref_logps(self, *args, **kwargs):
            t0 = time.perf_counter()
            out = super()._precompute_ref_logps(*args, **kwargs)
            precompute_seconds.append(time.perf_counter() - t0)
            return out

    stamps: list[float] = []
    precompute_seconds: list[float] = []
    counts: dict[str, list] = {"tokens": [], "slots": [], "losses": []}
    expected = spec["encoded"]
    tokenizer = load_tokenizer(spec["model"])
    # The same conversations as text, in tuneforge's row order (read sequentially below).
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines() if line]
    eos = tokenizer.eos_token
    text = [
        {
            "prompt": tokenizer.apply_chat_template(
                [{"role": "user", "content": r["prompt"]}], add_generation_prompt=True, tokenize=False
            ),
            "chosen": r["chosen"] + eos,
            "rejected": r["rejected"] + eos,
        }
        for r in rows
    ]
    dataset = Dataset.from_list([text[i] for i in expected["order"]])  # in memory: no datasets cache shared
    out_dir = tempfile.mkdtemp(dir=spec["workdir"], prefix="trl-")
    args = DPOConfig(
        output_dir=out_dir,
        # What must match tuneforge's run:
        per_device_train_batch_size=spec["batch_size"],
        gradient_accumulation_steps=1,
        max_steps=spec["steps"],
        learning_rate=spec["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=spec["seed"],
        max_length=spec["max_length"],
        beta=spec["beta"],
        loss_type=["sigmoid"],
        train_sampling_strategy="sequential",
        precompute_ref_log_probs=precompute,
        # fp32 weights and compute (TRL defaults to bf16=True; the model's config says bfloat16).
        use_cpu=True,
        bf16=False,
        fp16=False,
        model_init_kwargs={"dtype": torch.float32},
        # TRL defaults to True; off unless asked, as for tuneforge.
        gradient_checkpointing=gradient_checkpointing,
        # padding_free=True is "temporarily unavailable" in TRL 1.16 (it warns and pads): left at False.
        padding_free=False,
        # No eval, no checkpoints, no logging, no trackers, no worker processes, no progress bar.
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
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
    trainer = CountingDPOTrainer(
        model=str(resolve_model(spec["model"])),
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[clock],
    )
    prepared = trainer.train_dataset
    want = [expected["pairs"][i] for i in expected["order"]]
    for k, (got, ref) in enumerate(zip(prepared, want)):
        for key in ("prompt_ids", "chosen_ids", "rejected_ids"):
            if list(got[key]) != ref[key]:
                raise RuntimeError(f"pair {k}: TRL's {key} differ from tuneforge's tokens")
    if len(prepared) != len(want):
        raise RuntimeError(f"TRL kept {len(prepared)} of {len(want)} pairs")
    trainer.train()
    if counts["tokens"] != expected["step_tokens"] or counts["slots"] != expected["step_slots"]:
        raise RuntimeError(
            f"TRL's batches differ from tuneforge's: tokens {counts['tokens']} vs "
            f"{expected['step_tokens']}, slots {counts['slots']} vs {expected['step_slots']}"
        )
    metrics = trainer._metrics.get("train", {})
    model = trainer.model
    return {
        **_window(stamps, expected["step_tokens"], spec["warmup"], spec["batch_size"]),
        "loop_seconds": stamps[-1] - clock.begin,
        "first_step_seconds": stamps[0] - clock.begin,
        "steps": len(stamps),
        "losses": counts["losses"],
        "first_step_metrics": {k: v[0] for k, v in metrics.items() if k.startswith(("rewards/", "logps/")) and v},
        "precompute_seconds": sum(precompute_seconds) if precompute_seconds else None,
        "reference": "precompute_ref_log_probs=True" if precompute else "adapter disabled per step (use_adapter)",
        "gradient_checkpointing": args.gradient_checkpointing,
        "padding_free": getattr(trainer, "padding_free", None),
        "dtype": str(next(model.parameters()).dtype),
        "base_parameters": base_parameters(model),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer": getattr(args.optim, "value", str(args.optim)),
        "peak_rss_mb": peak_rss_mb(),
        "process_cpu": cpu_usage(),
    }


WORKERS = {
    "tuneforge": run_tuneforge,
    "tuneforge_separate": lambda spec: run_tuneforge(spec, pair_forward="separate"),
    "tuneforge_precomputed": lambda spec: run_tuneforge(spec, reference="precomputed"),
    "tuneforge_gc": lambda spec: run_tuneforge(spec, gradient_checkpointing=True),
    "trl": run_trl,
    "trl_precompute": lambda spec: run_trl(spec, precompute=True),
    "trl_gc": lambda spec: run_trl(spec, gradient_checkpointing=True),
}


def worker_main(setup: str, spec_path: str, result_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    result = WORKERS[setup](spec)
    result["setup"] = setup
    Path(result_path).write_text(json.dumps(result, indent=2))


# ----------------------------------------------------------------------------- orchestration


def derive(r: dict) -> dict:
    s = r["measured_seconds"]
    out = {
        **r,
        "pairs_per_second": round(r["measured_pairs"] / s, 3),
        "tokens_per_second": round(r["measured_tokens"] / s, 1),
        "seconds_per_step": round(s / r["measured_steps"], 3),
        "peak_rss_mb": round(r["peak_rss_mb"], 1),
        "first_loss": r["losses"][0],
        "first_loss_minus_ln2": r["losses"][0] - LN2,
    }
    if r.get("precompute_seconds"):
        per_pair = r["precompute_seconds"] / (r["steps"] * (r["measured_pairs"] // r["measured_steps"]))
        out["pairs_per_second_with_precompute"] = round(1 / (1 / out["pairs_per_second"] + per_pair), 3)
    return out


def ratios(setups: dict) -> dict:
    out = {}
    for mine in ("tuneforge", "tuneforge_separate", "tuneforge_precomputed", "tuneforge_gc"):
        for theirs in ("trl", "trl_precompute", "trl_gc"):
            a, b = setups.get(mine), setups.get(theirs)
            if a and b:
                out[f"{mine}_vs_{theirs}"] = {
                    "pairs_per_second": round(a["pairs_per_second"] / b["pairs_per_second"], 2),
                    "peak_rss": round(a["peak_rss_mb"] / b["peak_rss_mb"], 3),
                }
    return out


def targets(setups: dict, ratio: dict) -> dict:
    out = {}
    if "tuneforge_vs_trl" in ratio:
        value = ratio["tuneforge_vs_trl"]["pairs_per_second"]
        out["pairs_per_second_vs_trl >= 2x"] = {"value": value, "met": value >= TARGET_VS_TRL}
        tf, trl = setups["tuneforge"]["peak_rss_mb"], setups["trl"]["peak_rss_mb"]
        out["peak_rss <= TRL's"] = {"value": tf, "trl": trl, "met": tf <= trl}
    return out


def table(setups: dict) -> str:
    header = (
        "setup",
        "steps",
        "pairs",
        "real tok",
        "computed",
        "pad %",
        "s/step",
        "pairs/s",
        "real tok/s",
        "precompute s",
        "pairs/s incl. precompute",
        "step-1 loss",
        "peak MB",
        "others' CPU",
    )
    lines = [header]
    for name, r in setups.items():
        pad = 1 - r["measured_row_tokens"] / r["measured_slots"]
        pre = r.get("precompute_seconds")
        lines.append(
            (
                LABELS[name],
                str(r["measured_steps"]),
                str(r["measured_pairs"]),
                str(r["measured_tokens"]),
                str(r["measured_slots"]),
                f"{100 * pad:.1f}",
                f"{r['seconds_per_step']:.2f}",
                f"{r['pairs_per_second']:.3f}",
                f"{r['tokens_per_second']:.1f}",
                f"{pre:.1f}" if pre else "–",
                f"{r['pairs_per_second_with_precompute']:.3f}" if pre else "–",
                f"{r['first_loss']:.6f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{100 * r.get('other_processes_cpu_share', float('nan')):.0f}%",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    fmt = lambda row: (  # noqa: E731
        "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
    )
    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(lines[0]), rule] + [fmt(row) for row in lines[1:]])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.worker:
        worker_main(*args.worker)
        return {}
    from tuneforge.models.load import load_tokenizer

    temporary = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="tuneforge-dpo-bench-")) if temporary else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    try:
        pairs = args.steps * args.batch_size  # one epoch exactly: every pair once, precomputation covers them all
        data_path = sft_data.write_jsonl(build_pairs(pairs, load_tokenizer(MODEL), seed=0), work / "pairs.jsonl")
        spec = {
            "data": str(data_path),
            "workdir": str(work),
            "model": MODEL,
            "pairs": pairs,
            "steps": args.steps,
            "warmup": args.warmup,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "learning_rate": LEARNING_RATE,
            "beta": BETA,
            "seed": SEED,
            "threads": THREADS,
            "lora_r": LORA_R,
            "lora_alpha": LORA_ALPHA,
        }
        spec["encoded"] = encoded = encode(spec)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        stats = encoded["stats"]
        print(
            f"Data: {pairs} pairs → {data_path}; tokens per prompt {stats['prompt_tokens']}, per response "
            f"{stats['response_tokens']}, per sequence {stats['sequence_tokens']}",
            flush=True,
        )

        raw = {}
        for setup in args.setups:
            print(f"Running {setup}…", flush=True)
            r = run_setup(
                setup,
                spec_path,
                work,
                args.busy_retries,
                worker=WORKER,
                quiet_wait=None if args.no_wait else QUIET_MAX_WAIT,
            )
            layout = "step_slots_shared" if r.get("pair_forward") == "shared_prompt" else "step_slots"
            slots = encoded[layout][args.warmup : r["steps"]]
            r["measured_slots"] = sum(slots)  # positions the network computed, padding included
            prompts = sum(encoded["step_prompt_tokens"][args.warmup : r["steps"]])
            r["measured_row_tokens"] = r["measured_tokens"] - (prompts if layout == "step_slots_shared" else 0)
            raw[setup] = r
            print(
                f"  {r['measured_pairs']} pairs in {r['measured_seconds']:.1f} s after {args.warmup} warm-up "
                f"step(s) ({r['measured_pairs'] / r['measured_seconds']:.3f} pairs/s), step-1 loss "
                f"{r['losses'][0]:.6f} (ln 2 = {LN2:.6f}), peak {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )

        setups = {name: derive(r) for name, r in raw.items()}
        ratio = ratios(setups)
        report = {
            "command": " ".join(
                [".venv/bin/python", "bench/dpo_throughput.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": machine_info(),
            "settings": {
                "model": MODEL,
                "pairs": pairs,
                "steps": args.steps,
                "warmup_steps_excluded": args.warmup,
                "batch_size_pairs": args.batch_size,
                "max_length": args.max_length,
                "data": "generated from standard-library docstrings (seed 0), chat template of the model",
                "token_stats": stats,
                "loss": f"DPO sigmoid, beta {BETA}",
                "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "dropout": 0.0, "target_modules": "all-linear"},
                "optimizer": "AdamW",
                "learning_rate": LEARNING_RATE,
                "weight_decay": 0.0,
                "scheduler": "cosine",
                "warmup_steps": 0,
                "max_grad_norm": 1.0,
                "seed": SEED,
                "dtype": "float32",
                "threads": THREADS,
                "trl": {
                    "precompute_ref_log_probs": "off (trl) / on (trl_precompute)",
                    "padding_free": False,
                    "gradient_checkpointing": False,
                    "bf16": False,
                    "dataloader_num_workers": 0,
                    "eval_strategy": "no",
                    "logging_strategy": "no",
                    "save_strategy": "no",
                    "report_to": [],
                    "train_sampling_strategy": "sequential",
                    "disable_dropout": True,
                },
            },
            "setups": setups,
            "ratios": ratio,
            "targets": targets(setups, ratio),
        }
        print()
        print(table(setups))
        for name, value in ratio.items():
            print(f"{name}: {value['pairs_per_second']}x pairs/s, {value['peak_rss']}x peak RSS")
        for name, value in report["targets"].items():
            print(f"target {name}: {'met' if value['met'] else 'NOT met'} ({value['value']})")
        if args.update:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2) + "\n")
            print(f"\nResults: {args.output}")
        return report
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
