"""Multi-task demo: one LoRA adapter per task on one base, served from one model by switching adapters.

    python bench/multitask_demo.py            # the full demo; writes bench/results/multitask_demo.json
    python bench/multitask_demo.py --steps 1 --samples 2 --out /tmp/mt_smoke.json   # a smoke run
    python bench/multitask_demo.py --workdir /tmp/mt   # keep the runs; a rerun reuses finished runs

Tasks (bundled data, chat JSONL; SmolLM2-135M-Instruct): ``notes`` (clinical note → JSON; score: JSON field
accuracy), ``sentiment`` (post → positive / negative / neutral; score: normalized match, so "Positive." counts)
and ``support`` (Lumen bulb questions, last 10 conversations held out; score: ``contains``, the reference
sentence word for word in the answer). Adapters, one recipe (LoRA r=16, alpha=32, all-linear, seed 42): one per
task, ``--steps`` steps of 8 rows; ``mix``: the three training sets concatenated, 3 × ``--steps`` steps (as
many rows in all; tasks sampled in proportion to their sizes, ``mix_rows``); ``combined``: the three task
adapters side by side (peft ``cat``, rank 48: exactly the sum of their weight deltas, checked and reported);
``ties``: TIES at density 0.5 (rank 16; peft applies it to the LoRA factors, so approximate).

The base is then loaded ONCE with all adapters (``AdapterSet``); each task's first ``--samples`` held-out
prompts are answered greedily by the base (adapters off), the task's own adapter (switched in with ``use``),
``mix``, ``combined`` and ``ties``: the table shows each task's primary score. Also reported: disk, each
adapter's ``adapter_model.safetensors`` vs the base's ``model.safetensors`` (3 task adapters vs 3 full
fine-tuned copies); memory, parameters of one base + adapters vs 3 full copies, in MB at fp32; the median
time of one adapter switch; wall seconds per stage; and that switching is real (notes and sentiment adapters
answer a notes prompt differently; notes answers the same again after switching away and back).
On a machine shared with another CPU job, set ``OMP_NUM_THREADS=1``: greedy decoding is many small ops, each
a thread barrier, and stalls whenever one of its threads is descheduled.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
SENTIMENT_PROMPT = (
    "Classify the sentiment of this post as positive, negative or neutral. Answer with one word.\nPost: {text}"
)
# task: (scorers, the first is the primary score; max_new_tokens)
TASKS = {
    "notes": (["json_field_accuracy", "exact_match"], 72),
    "sentiment": (["normalized_match", "exact_match"], 24),
    "support": (["contains"], 24),
}
COLUMNS = ("base", "task", "mix", "combined", "ties")
MB = 1e6


# ---------------------------------------------------------------------------- data


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return path


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def task_rows(samples: int) -> dict[str, tuple[list[dict], list[dict]]]:
    """{task: (train rows, eval rows)}, all chat rows, from the bundled examples."""
    ex = ROOT / "examples"
    sentiment = [
        [chat(SENTIMENT_PROMPT.format(text=r["text"]), r["label"]) for r in read_jsonl(ex / f"sentiment/{s}")]
        for s in ("train.jsonl", "eval.jsonl")
    ]
    support = read_jsonl(ex / "chat/support.jsonl")
    return {
        "notes": (read_jsonl(ex / "clinical_notes/train.jsonl"), read_jsonl(ex / "clinical_notes/eval.jsonl")),
        "sentiment": (sentiment[0][:320], sentiment[1][:samples]),
        "support": (support[:-10], support[-10:]),
    }


def write_data(work: Path, samples: int) -> dict[str, dict[str, Path]]:
    """{run: {"train": file, "eval": file}} for the three tasks and the mix."""
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    files, mix_train, mix_eval = {}, [], []
    for task, (train, held) in task_rows(samples).items():
        files[task] = {
            "train": write_jsonl(data / f"{task}_train.jsonl", train),
            "eval": write_jsonl(data / f"{task}_eval.jsonl", held),
        }
        mix_train += train
        mix_eval += held
    files["mix"] = {
        "train": write_jsonl(data / "mix_train.jsonl", mix_train),
        "eval": write_jsonl(data / "mix_eval.jsonl", mix_eval),
    }
    return files


# ---------------------------------------------------------------------------- training


def run_config(name: str, files: dict[str, Path], *, steps: int, samples: int, out_dir: Path) -> dict:
    scorers, max_new = TASKS.get(name, (["exact_match"], 72))
    return {
        "method": "sft",
        "name": name,
        "output_dir": str(out_dir),
        "model": {"name": MODEL},
        "adapter": {"type": "lora", "r": 16, "alpha": 32, "target_modules": "all-linear"},
        "data": {
            "format": "chat",
            "train": str(files["train"]),
            "eval": str(files["eval"]),
            "max_length": 256,
            "packing": False,
        },
        "training": {
            "max_steps": steps,
            "batch_size": 8,
            "learning_rate": 2e-3,
            "scheduler": "cosine",
            "warmup_ratio": 0.05,
            "max_grad_norm": 1.0,
            "seed": 42,
            "on_divergence": "warn",
        },
        "eval": {
            "scorers": scorers,
            "num_samples": samples,
            "max_new_tokens": max_new,
            "batch_size": samples,
            "before": False,
            "samples_in_report": 2,
        },
    }


def train_all(files: dict, args, runs: Path, timings: dict) -> tuple[dict[str, Path], dict]:
    """Train the three task adapters and the mix adapter; {run: adapter folder}, {run: summary}."""
    from tuneforge.config import load_config
    from tuneforge.runner import train_from_config

    adapters, summaries = {}, {}
    for name in (*TASKS, "mix"):
        done = runs / name / "summary.json"
        if done.exists():  # a --workdir kept from an earlier run: score its adapters again, no retraining
            adapters[name], summaries[name] = runs / name / "adapter", json.loads(done.read_text())
            continue
        steps = args.steps * (len(TASKS) if name == "mix" else 1)
        config = load_config(data=run_config(name, files[name], steps=steps, samples=args.samples, out_dir=runs))
        with stage(timings, f"train_{name}"):
            result = train_from_config(config)
        adapters[name], summaries[name] = result.output_dir, result.summary
        del result  # drops the trained model before the next run loads its own
    return adapters, summaries


def combine_all(adapters: dict[str, Path], work: Path, timings: dict) -> dict[str, Path]:
    from tuneforge.adapters.combine import combine_adapters

    inputs = [f"{task}={adapters[task]}" for task in TASKS]
    out = {}
    for name, method, density in (("combined", "cat", None), ("ties", "ties", 0.5)):
        if (work / "combined" / name / "adapter_model.safetensors").exists():
            out[name] = work / "combined" / name
            continue
        with stage(timings, f"combine_{name}"):
            out[name] = combine_adapters(
                inputs, [1.0] * len(inputs), method=method, density=density, output=work / "combined" / name
            ).output
    return out


# ---------------------------------------------------------------------------- serving from one model


@contextlib.contextmanager
def stage(timings: dict, name: str):
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - started, 2)


def eval_samples(task: str, files: dict[str, Path], samples: int, runs: Path):
    """The task's held-out prompts rendered exactly as the runner renders them for its own eval."""
    from tuneforge.config import load_config
    from tuneforge.data import load_splits
    from tuneforge.models.load import load_tokenizer

    config = load_config(data=run_config(task, files, steps=1, samples=samples, out_dir=runs))
    tokenizer = load_tokenizer(config.model.name)
    return load_splits(config.data, tokenizer).eval_samples[:samples]


def score(aset, column: str, task: str, samples) -> dict:
    from tuneforge.eval.generation import evaluate_generation

    scorers, max_new = TASKS[task]
    name = {"base": None, "task": task}.get(column, column)
    with aset.base() if name is None else aset.use(name) as model:
        tokenizer = aset.base_tokenizer if name is None else aset.tokenizer
        result = evaluate_generation(
            model, tokenizer, samples, scorers, max_new_tokens=max_new, batch_size=len(samples), progress=False
        )
    return {
        "scores": {k: round(v, 4) for k, v in result.scores.items()},
        "predictions": [s.prediction for s in result.samples[:3]],
    }


def switch_check(aset, sample) -> dict:
    """A notes prompt answered by notes, sentiment, notes again: switching must change and restore the answer."""
    from tuneforge.eval.generation import generate

    answers = {}
    for label, name in (("notes", "notes"), ("sentiment", "sentiment"), ("notes_again", "notes")):
        with aset.use(name) as model:
            answers[label] = generate(
                model,
                aset.tokenizer,
                [sample.prompt_ids],
                max_new_tokens=TASKS["notes"][1],
                batch_size=1,
                progress=False,
            )[0]
    return {
        "answers": answers,
        "adapters_differ": answers["notes"] != answers["sentiment"],
        "switch_back_restores": answers["notes"] == answers["notes_again"],
    }


def cat_error(aset) -> float:
    """Largest relative gap, over all LoRA layers, between the combined (cat) delta and the sum of the three."""
    from peft.tuners.lora import LoraLayer

    def delta(layer, name):
        return layer.scaling[name] * (layer.lora_B[name].weight @ layer.lora_A[name].weight)

    worst = 0.0
    for layer in (m for m in aset.model.modules() if isinstance(m, LoraLayer) and "combined" in m.lora_A):
        total = sum(delta(layer, task) for task in TASKS)
        worst = max(worst, float((delta(layer, "combined") - total).abs().max() / total.abs().max().clamp_min(1e-12)))
    return worst


def switch_ms(aset, rounds: int = 20) -> float:
    times = []
    for _ in range(rounds):
        for name in aset.names:
            started = time.perf_counter()
            aset.activate(name)
            times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 3)


# ---------------------------------------------------------------------------- footprint


def footprint(aset, folders: dict[str, Path]) -> dict:
    """Disk (safetensors bytes) and memory (parameters; MB at fp32) of one base + adapters vs full copies."""
    from tuneforge.models.load import count_parameters, resolve_model

    per_adapter: dict[str, int] = {}
    for pname, param in aset.model.named_parameters():
        found = re.search(r"\.lora_(?:A|B|embedding_A|embedding_B|magnitude_vector)\.([^.]+)", pname)
        if found:
            per_adapter[found.group(1)] = per_adapter.get(found.group(1), 0) + param.numel()
    base_params = count_parameters(aset.model)[1] - sum(per_adapter.values())
    tasks = sum(per_adapter[t] for t in TASKS)
    n = len(TASKS)
    base_file = (Path(resolve_model(MODEL)) / "model.safetensors").stat().st_size
    disk = {name: (Path(f) / "adapter_model.safetensors").stat().st_size for name, f in folders.items()}
    task_disk = sum(disk[t] for t in TASKS)
    return {
        "disk_mb": {
            "base_model": round(base_file / MB, 1),
            **{k: round(v / MB, 2) for k, v in disk.items()},
            f"{n}_task_adapters": round(task_disk / MB, 2),
            f"{n}_full_copies": round(n * base_file / MB, 1),
            f"base_plus_{n}_adapters": round((base_file + task_disk) / MB, 1),
            "saved_vs_full_copies": round((n * base_file - base_file - task_disk) / MB, 1),
        },
        "parameters": {"base": base_params, **per_adapter},
        "memory_mb_fp32": {
            "base": round(4 * base_params / MB, 1),
            f"base_plus_{n}_adapters": round(4 * (base_params + tasks) / MB, 1),
            "base_plus_all_loaded": round(4 * (base_params + sum(per_adapter.values())) / MB, 1),
            f"{n}_full_copies": round(4 * n * base_params / MB, 1),
            "saved_vs_full_copies": round(4 * ((n - 1) * base_params - tasks) / MB, 1),
        },
    }


# ---------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    lines = [
        "| task (score) | base | task adapter (switched) | mix adapter | combined (cat) | combined (ties) |",
        "|---|---|---|---|---|---|",
    ]
    for task, row in result["table"].items():
        cells = " | ".join(f"{row[c]['scores'][TASKS[task][0][0]]:.3f}" for c in COLUMNS)
        lines.append(f"| {task} ({TASKS[task][0][0]}, n={result['eval_samples'][task]}) | {cells} |")
    d, m, n = result["footprint"]["disk_mb"], result["footprint"]["memory_mb_fp32"], len(TASKS)
    s = result["switch_check"]
    lines += [
        "",
        f"Disk: {n} task adapters = {d[f'{n}_task_adapters']} MB vs {n} full copies = "
        f"{d[f'{n}_full_copies']} MB (base {d['base_model']} MB + adapters = {d[f'base_plus_{n}_adapters']} MB;"
        f" saved {d['saved_vs_full_copies']} MB).",
        f"Memory (fp32): one base + {n} adapters = {m[f'base_plus_{n}_adapters']} MB vs {n} full copies = "
        f"{m[f'{n}_full_copies']} MB (saved {m['saved_vs_full_copies']} MB; with mix and combined loaded too: "
        f"{m['base_plus_all_loaded']} MB).",
        f"Adapter switch: {result['switch_ms']} ms (median). Switching real: adapters differ = "
        f"{s['adapters_differ']}, switching back restores = {s['switch_back_restores']}; combined (cat) = sum "
        f"of the task deltas to {s['cat_max_relative_error']:.1e} (largest relative error).",
        "Mix adapter's training rows per task (sampled in proportion): "
        + ", ".join(f"{t} {n}" for t, n in result["setup"]["mix_rows"].items())
        + ".",
        "Wall time (s): " + ", ".join(f"{k} {v}" for k, v in result["timings"].items()),
    ]
    return "\n".join(lines)


def run(args, work: Path) -> dict:
    from tuneforge.adapters.inference import AdapterSet

    timings: dict = {}
    runs = work / "runs"
    with stage(timings, "data"):
        files = write_data(work, args.samples)
    adapters, summaries = train_all(files, args, runs, timings)
    folders = {**adapters, **combine_all(adapters, work, timings)}
    with stage(timings, "load_base_and_all_adapters"):
        aset = AdapterSet.load(
            None, {name: folders[name] for name in (*TASKS, "mix", "combined", "ties")}, task="CAUSAL_LM"
        )
    samples = {task: eval_samples(task, files[task], args.samples, runs) for task in TASKS}
    table = {}
    for task in TASKS:
        with stage(timings, f"score_{task}"):
            table[task] = {column: score(aset, column, task, samples[task]) for column in COLUMNS}
    with stage(timings, "switch_check"):
        check = {**switch_check(aset, samples["notes"][0]), "cat_max_relative_error": cat_error(aset)}
    mix_rows = {task: len(read_jsonl(files[task]["train"])) for task in TASKS}
    return {
        "setup": {
            "model": MODEL,
            "steps": {k: v["train"]["steps"] for k, v in summaries.items()},
            "batch_rows": 8,
            "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
            "scorers": {t: s for t, (s, _) in TASKS.items()},
            "mix_rows": mix_rows,
        },
        "eval_samples": {t: len(v) for t, v in samples.items()},
        "table": table,
        "footprint": footprint(aset, folders),
        "switch_ms": switch_ms(aset),
        "switch_check": check,
        "timings": timings,
        "train_summaries": {k: {"train": v["train"], "after": v["after"]} for k, v in summaries.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="training steps per task (the mix: 3×)")
    parser.add_argument("--samples", type=int, default=16, help="held-out prompts per task")
    parser.add_argument("--out", default=str(ROOT / "bench/results/multitask_demo.json"))
    parser.add_argument(
        "--workdir",
        default=None,
        help="keep data, runs and adapters here (default: a temp dir); "
        "finished runs found there are reused, not retrained",
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with contextlib.ExitStack() as stack:
        work = (
            Path(args.workdir)
            if args.workdir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="multitask-demo-")))
        )
        result = run(args, work)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print(markdown(result))
    print(f"\nWritten: {args.out}")


if __name__ == "__main__":
    main()
