"""Where a contrastive training step's time goes: tuneforge's step vs variants, on the same batches.

    python bench/contrastive_step_profile.py            # 10 timed steps per variant (+1 warm-up)

Companion of ``contrastive_throughput.py``. Each variant runs in its own fresh
process on the first 11 global batches (32 pairs each) of tuneforge's own
seed-42 order of the FAQ pairs (no-duplicates arrangement), the first as a
warm-up, and reports the mean seconds per step of each phase (batch building,
forward + loss, backward, gradient clipping, AdamW step + zero_grad) and the
process's peak RSS:

- ``tuneforge``: the step as tuneforge runs it: ``Contrastive.collate`` (every
  text of the batch in one (2B, T) tensor) → ``EmbeddingLoss`` (since b62904e
  it embeds anchors and positives as separate runs, each trimmed to its own
  longest text; before, the whole (2B, T) tensor in one forward) →
  ``training/optim.build_optimizer`` (non-fused AdamW on CPU).
- ``tuneforge_fused_adamw``: the same with ``torch.optim.AdamW(fused=True)``
  (what the HF Trainer uses on CPU: ``adamw_torch_fused``).
- ``per_column``: tuneforge's model and ``EmbeddingLoss.embed``, but anchors and
  positives embedded in two forwards, each padded to its own longest text;
  fused AdamW. This is what sentence-transformers 6.2 does (``embed_columns``:
  the anchor column keeps its own forward).
- ``sentence_transformers``: ``SentenceTransformer`` + ``MultipleNegativesRankingLoss``
  on ``model.preprocess`` features of the same texts; fused AdamW.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

VARIANTS = ("tuneforge", "tuneforge_fused_adamw", "per_column", "sentence_transformers")
THREADS = 2


def _spec(work: Path) -> dict:
    from contrastive_throughput import DATA, SCALE, model_path, write_pairs

    train = work / "train_pairs.jsonl"
    write_pairs(DATA / "train.jsonl", train)
    return {
        "train": str(train),
        "workdir": str(work),
        "model_path": str(model_path()),
        "max_length": 128,
        "batch_size": 32,
        "learning_rate": 5e-5,
        "warmup_steps": 5,
        "scale": SCALE,
        "threads": THREADS,
        "seed": 42,
    }


def run_variant(variant: str, spec: dict, steps: int) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from contrastive_workers import tuneforge_config

    from tuneforge.config import load_config
    from tuneforge.methods import get_method
    from tuneforge.methods.contrastive.losses import info_nce_sum
    from tuneforge.models.load import load_tokenizer
    from tuneforge.training.engine import RowOrder
    from tuneforge.training.optim import build_optimizer

    config = load_config(data=tuneforge_config(spec, "profile"))
    method = get_method("contrastive")
    tokenizer = load_tokenizer(config.model.name)
    data = method.load_data(config, tokenizer)
    order = RowOrder(len(data.train), spec["seed"], arrange=data.arrange, group=spec["batch_size"])
    batches = [
        [data.train[i] for i in order.take(s * spec["batch_size"], spec["batch_size"])] for s in range(steps + 1)
    ]

    if variant == "sentence_transformers":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        model = SentenceTransformer(spec["model_path"], device="cpu")
        model.max_seq_length = spec["max_length"]
        model.train()
        mnrl = MultipleNegativesRankingLoss(model, scale=spec["scale"])

        def build(rows):
            return [model.preprocess([r.texts[j] for r in rows]) for j in (0, 1)]

        def forward(features):
            return mnrl(features, None)  # a mean over anchors
    else:
        model = method.build_model(config, data, dtype=torch.float32)
        model.train()
        loss_model = method.loss_module(config, model, data)
        if variant == "per_column":

            def build(rows):
                out = []
                for j in (0, 1):  # anchors, positives: each padded to its own longest
                    width = max(len(r.ids[j]) for r in rows)
                    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
                    mask = torch.zeros_like(ids)
                    for k, r in enumerate(rows):
                        ids[k, : len(r.ids[j])] = torch.tensor(r.ids[j])
                        mask[k, : len(r.ids[j])] = 1
                    out.append({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
                return out

            def forward(columns):
                a, p = loss_model.embed(**columns[0]), loss_model.embed(**columns[1])
                return info_nce_sum(a, p, None, scale=spec["scale"]) / a.shape[0]
        else:

            def build(rows):
                return method.collate(rows, tokenizer)

            def forward(batch):
                loss_sum, count = loss_model(**batch.inputs)
                return loss_sum / count

    params = [p for p in model.parameters() if p.requires_grad]
    if variant == "tuneforge":
        optimizer = build_optimizer(
            model, learning_rate=spec["learning_rate"], weight_decay=0.0, betas=(0.9, 0.999), eps=1e-8
        )
    else:
        optimizer = torch.optim.AdamW(params, lr=spec["learning_rate"], weight_decay=0.0, fused=True)

    phases = ("build batch", "forward + loss", "backward", "clip", "AdamW + zero_grad")
    totals = dict.fromkeys(phases, 0.0)
    for k, rows in enumerate(batches):
        marks = [time.perf_counter()]
        inputs = build(rows)
        marks.append(time.perf_counter())
        loss = forward(inputs)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if k:  # the first step warms up
            for name, t0, t1 in zip(phases, marks, marks[1:]):
                totals[name] += t1 - t0
    per_step = {name: round(v / steps, 4) for name, v in totals.items()}
    return {
        "variant": variant,
        "steps": steps,
        "seconds_per_step": round(sum(per_step.values()), 4),
        "phases": per_step,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--output", type=Path, default=HERE / "results" / "contrastive_step_profile.json")
    parser.add_argument("--busy-retries", type=int, default=2)
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)  # VARIANT SPEC.json: one variant, here
    args = parser.parse_args(argv)
    if args.worker:
        variant, spec_path = args.worker
        print(json.dumps(run_variant(variant, json.loads(Path(spec_path).read_text()), args.steps)))
        return {}
    from sft_throughput import BUSY_WARNING, _git, busy_cpu_seconds, wait_for_quiet

    commit = _git("rev-parse", "HEAD")

    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TUNEFORGE_NO_PROGRESS="1",
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="tuneforge-contrastive-profile-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(_spec(Path(tmp))))
        for variant in args.variants.split(","):
            for attempt in range(1, args.busy_retries + 2):  # again when others used the CPU meanwhile
                wait_for_quiet()
                busy, started = busy_cpu_seconds(), time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, __file__, "--steps", str(args.steps), "--worker", variant, str(spec_path)],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if proc.returncode:
                    raise SystemExit(f"{variant} failed:\n{proc.stderr[-3000:]}")
                result = json.loads(proc.stdout.strip().splitlines()[-1])
                elapsed = time.perf_counter() - started
                other = busy_cpu_seconds() - busy - result["cpu_seconds"]
                result["other_processes_cpu_share"] = round(max(other, 0.0) / (elapsed * (os.cpu_count() or 1)), 3)
                result["attempt"] = attempt
                if result["other_processes_cpu_share"] <= BUSY_WARNING:
                    break
                print(
                    f"  WARNING: other processes used {100 * result['other_processes_cpu_share']:.0f}% of the CPU "
                    f"during '{variant}' (attempt {attempt})",
                    flush=True,
                )
            results.append(result)
            print(
                f"{variant:24s} {result['seconds_per_step']:.3f} s/step  {result['phases']}  "
                f"peak {result['peak_rss_mb']:.0f} MB  others' CPU {100 * result['other_processes_cpu_share']:.0f}%",
                flush=True,
            )
    report = {
        "command": " ".join(
            ["python", "bench/contrastive_step_profile.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "threads": THREADS,
        "git_commit": commit,
        "variants": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
