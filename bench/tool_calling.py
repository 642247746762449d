"""Tool calling on the embedded SmolLM2-135M: held-out call accuracy on the test split, before → after.

    python bench/tool_calling.py            # train configs/sft_tool_calling.yaml (unless its run exists), score test
    python bench/tool_calling.py --run DIR  # score a finished run of the config kept elsewhere
    python bench/tool_calling.py --render   # re-render the docs/RESULTS.md section from the JSON alone

1. ``tuneforge train configs/sft_tool_calling.yaml`` (train split; its before / after evaluation is on
   the dev split, the one to tune settings on). A run folder with a summary.json is reused
   unless ``--force``.
2. ``tuneforge eval --adapter runs/tool-calling --with-base --data examples/tool_calling/test.jsonl
   --scorers tool_call_accuracy tool_call_name tool_call_valid --max-new-tokens 64``: the base model and
   the trained adapter on the 100 test requests (unseen phrasings and entities), greedy, each prompt
   rendered exactly as training rendered it (tools in the fallback format).
3. bench/results/tool_calling.json, and the section of docs/RESULTS.md between the ``tool_calling``
   markers rendered from it (never typed by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = "configs/sft_tool_calling.yaml"
TEST = "examples/tool_calling/test.jsonl"
OUT = ROOT / "bench" / "results" / "tool_calling.json"
DOC = ROOT / "docs" / "RESULTS.md"
SCORERS = ["tool_call_accuracy", "tool_call_name", "tool_call_valid"]
BEGIN, END = "<!-- tool_calling:begin (rendered by bench/tool_calling.py) -->", "<!-- tool_calling:end -->"
BIN = Path(sys.executable).parent / "tuneforge"


def sh(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root, output to ``log``; its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.call(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
    if code:
        raise SystemExit(f"{cmd[1]} failed ({code}); see {log}")
    return time.perf_counter() - start


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    import torch

    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def measure(args) -> dict:
    from tuneforge.config import load_config

    config = load_config(str(ROOT / CONFIG))
    run = Path(args.run).resolve() if args.run else ROOT / config.output_dir / (config.name or Path(CONFIG).stem)
    work = Path(args.workdir)
    train_wall = None
    if args.force or not (run / "summary.json").exists():
        if run.exists():
            raise SystemExit(f"{run} exists without a finished run; move it away first")
        train_wall = sh([str(BIN), "train", CONFIG], work / "train.log")
    summary = json.loads((run / "summary.json").read_text())
    scores = work / "test_scores.json"
    shown = str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run)
    command = [str(BIN), "eval", "--adapter", shown, "--with-base", "--data", TEST]
    command += ["--scorers", *SCORERS, "--max-new-tokens", "64", "--batch-size", "20", "--output", str(scores)]
    eval_wall = sh(command, work / "eval.log")
    scored = json.loads(scores.read_text())["by_adapter"]
    before, after = scored["base"], next(v for k, v in scored.items() if k != "base")
    test_n = len(after["samples"])
    wrong = [
        {"prompt": s["prompt"], "reference": s["reference"], "prediction": s["prediction"]}
        for s in after["samples"]
        if s["scores"]["tool_call_accuracy"] < 1
    ]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
        "machine": machine(),
        "config": CONFIG,
        "eval_command": "tuneforge " + " ".join(command[1:-2]),
        "split": "test",
        "n": test_n,
        "before": {k: before["metrics"][k] for k in SCORERS},
        "after": {k: after["metrics"][k] for k in SCORERS},
        "dev": {
            "n": len((ROOT / config.data.eval).read_text().splitlines()),  # eval.num_samples unset: all
            "before": {k: summary["before"].get(k) for k in SCORERS},
            "after": {k: summary["after"].get(k) for k in SCORERS},
        },
        "train": {
            "steps": summary["train"].get("steps"),
            "tokens": summary["train"].get("tokens"),
            "train_seconds": summary["train"].get("wall_seconds"),
            "run_wall_seconds": summary["train"].get("run_wall_seconds", train_wall),
        },
        "eval_wall_seconds": round(eval_wall, 1),
        "wrong_after": wrong,
    }


def markdown(result: dict) -> str:
    m, b, a, d, t = result["machine"], result["before"], result["after"], result["dev"], result["train"]
    gpu = m["gpu"] or "no GPU"
    lines = [
        f"Measured {result['date']} at commit {result['commit']} on {m['cpu']} ({m['cpus']} cores, {gpu}, "
        f"torch {m['torch']}), by `python bench/tool_calling.py` "
        f"(`bench/results/tool_calling.json`):",
        "",
        f"```bash\ntuneforge train {result['config']}\n{result['eval_command']}\n```",
        "",
        "| model | split | n | call accuracy (name + arguments) | right function | valid call |",
        "|---|---|---|---|---|---|",
        f"| SmolLM2-135M-Instruct (base) | test | {result['n']} | {b['tool_call_accuracy']:.2f} | "
        f"{b['tool_call_name']:.2f} | {b['tool_call_valid']:.2f} |",
        f"| **+ LoRA, {t['steps']} steps** | test | {result['n']} | **{a['tool_call_accuracy']:.2f}** | "
        f"{a['tool_call_name']:.2f} | {a['tool_call_valid']:.2f} |",
        f"| base → LoRA (the run's own evaluation) | dev | {d['n']} | "
        f"{_f(d['before']['tool_call_accuracy'])} → {_f(d['after']['tool_call_accuracy'])} | "
        f"{_f(d['before']['tool_call_name'])} → {_f(d['after']['tool_call_name'])} | "
        f"{_f(d['before']['tool_call_valid'])} → {_f(d['after']['tool_call_valid'])} |",
        "",
        f"Training: {t['steps']} steps over {t['tokens']} tokens, whole run (both dev evaluations included) "
        f"{_minutes(t['run_wall_seconds'])}; scoring base and adapter on the test split "
        f"{_minutes(result['eval_wall_seconds'])}. Calls the trained model got wrong on test: "
        f"{len(result['wrong_after'])} (listed in the JSON).",
    ]
    return "\n".join(lines)


def _f(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _minutes(seconds) -> str:
    if seconds is None:
        return "–"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def render(result: dict, doc: Path = DOC) -> None:
    """Replace the text between the markers in ``doc`` with :func:`markdown` of ``result``."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: the {BEGIN!r} … {END!r} markers are missing")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: f"{BEGIN}\n{markdown(result)}\n{END}", text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help=f"render {DOC.relative_to(ROOT)} from {OUT.name}")
    parser.add_argument("--force", action="store_true", help="train again even if the run has a summary.json")
    parser.add_argument("--workdir", default=str(ROOT / "runs" / "bench_tool_calling"), help="logs and raw scores")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--run", default=None, help="a finished run folder of the config to score (default: its own)")
    args = parser.parse_args()
    if not args.render:
        result = measure(args)
        Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")
    render(json.loads(Path(args.out).read_text()))
    print(f"rendered {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
