"""Run the evolving-topics scenario once per strategy and tabulate what each kept and what it cost.

    python examples/evolving_topics/compare.py            # the five default runs, ~43 min on 2 CPU cores
    python examples/evolving_topics/compare.py --strategies naive replay
    python examples/evolving_topics/compare.py --strategies naive replay ewc ewc-100 adapter adapter-route joint

Each strategy (VARIANTS below) is one `tuneforge train configs/continual_evolving_topics.yaml continual.strategy=…`
run (a separate process, so each starts from the same state), named `evo-<strategy>` under
--output-dir. A finished run (its summary.json exists) is not run again, so an interrupted comparison
continues where it stopped; an unfinished one is resumed with --resume. The table goes to
`<output-dir>/comparison.md` and `comparison.json`, with the issue's targets checked at the end.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

CONFIG = "configs/continual_evolving_topics.yaml"
LORA = ["adapter.type=lora", "adapter.r=16", "adapter.alpha=32", "adapter.dropout=0.0",
        "adapter.target_modules=all-linear", "training.learning_rate=2e-3"]
# Each run: its continual.strategy and what else it changes. The adapter strategy trains one LoRA per stage
# (O-LoRA penalty, λ1 = 0.5) at LoRA's usual higher learning rate; "-route" answers each task with its own
# stage's adapter; "ewc-100" is EWC with λ = 100 and a WiSE-FT sweep after the last stage; "joint-long" trains
# the union twice as long (at 3 epochs the union of 18 products is not learned yet).
VARIANTS = {
    "naive": ["continual.strategy=naive"],
    "replay": ["continual.strategy=replay"],
    "l2": ["continual.strategy=l2"],
    "ewc": ["continual.strategy=ewc"],
    "ewc-100": ["continual.strategy=ewc", "continual.ewc.weight=100",
                "continual.wise_ft.alphas=[0, 0.25, 0.5, 0.75, 1]"],
    "adapter": ["continual.strategy=adapter", *LORA],
    "adapter-route": ["continual.strategy=adapter", "continual.adapter.inference=route", *LORA],
    "joint": ["continual.strategy=joint"],
    "joint-long": ["continual.strategy=joint", "training.epochs=6"],
}
STRATEGIES = tuple(VARIANTS)
DEFAULT = ("naive", "replay", "ewc", "adapter", "joint")
PROTECTED = ("replay", "l2", "ewc", "ewc-100", "adapter", "adapter-route")


def run_strategy(strategy: str, args) -> dict:
    run_dir = Path(args.output_dir) / f"evo-{strategy}"
    summary = run_dir / "summary.json"
    if not summary.exists():
        cmd = [sys.executable, "-m", "tuneforge", "train", args.config, f"name=evo-{strategy}",
               f"output_dir={args.output_dir}", *VARIANTS[strategy], *args.set]
        if (run_dir / "continual_state.json").exists():
            cmd.append("--resume")
        print(f"\n$ {shlex.join(cmd)}", flush=True)
        if subprocess.run(cmd).returncode != 0:  # e.g. EWC at λ 100 diverges: report it, go on with the rest
            print(f"! evo-{strategy} stopped before its end; see its output above", flush=True)
            return None
    return json.loads(summary.read_text())


def row_of(strategy: str, summary: dict) -> dict:
    cm = summary["continual_metrics"]
    ppl = (summary.get("general_perplexity") or {}).get("values") or [None]
    change = None
    if ppl[0] and ppl[-1]:
        change = (ppl[-1] - ppl[0]) / ppl[0]
    return {"strategy": strategy, "acc": cm["acc"], "bwt": cm["bwt"], "fwt": cm["fwt"],
            "forgetting": cm["mean_forgetting"], "final_row": summary["matrix"]["values"][-1],
            "general_ppl_base": ppl[0], "general_ppl_final": ppl[-1], "general_ppl_change": change,
            "wall_seconds": summary["wall_seconds"], "metric": summary["metric"]}


def _pct(value, signed=False) -> str:
    if value is None:
        return "—"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def table(rows: list[dict]) -> str:
    lines = ["| strategy | ACC | BWT | FWT | mean forgetting | final row (q1 / q2 / q3) | general ppl (base → final) "
             "| wall time |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        final = " / ".join(f"{100 * v:.0f}" for v in r["final_row"])
        ppl = "—" if r["general_ppl_base"] is None else (
            f"{r['general_ppl_base']:.2f} → {r['general_ppl_final']:.2f} ({_pct(r['general_ppl_change'], True)}%)")
        lines.append(f"| {r['strategy']} | {_pct(r['acc'])} | {_pct(r['bwt'], True)} | {_pct(r['fwt'], True)} | "
                     f"{_pct(r['forgetting'])} | {final} | {ppl} | {r['wall_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def verdict(rows: list[dict]) -> list[str]:
    """The issue's targets: naive forgets; the best protected strategy halves |BWT| at ACC within 5 points of joint."""
    by = {r["strategy"]: r for r in rows}
    out = []
    naive, joint = by.get("naive"), by.get("joint")
    if naive is None or joint is None:
        return ["(targets need both naive and joint)"]
    out.append(f"naive BWT {_pct(naive['bwt'], True)} points: "
               f"{'clearly negative' if naive['bwt'] <= -0.1 else 'NOT clearly negative'}")
    protected = [by[s] for s in PROTECTED if s in by]
    good = [r for r in protected if abs(r["bwt"]) <= abs(naive["bwt"]) / 2 and joint["acc"] - r["acc"] <= 0.05]
    for r in protected:
        out.append(f"{r['strategy']}: |BWT| {_pct(abs(r['bwt']))} vs half of naive's {_pct(abs(naive['bwt']) / 2)}; "
                   f"ACC {_pct(r['acc'])} vs joint {_pct(joint['acc'])} (gap {_pct(joint['acc'] - r['acc'], True)})")
    out.append("target met by: " + (", ".join(r["strategy"] for r in good) if good else "none"))
    total = sum(r["wall_seconds"] for r in rows)
    out.append(f"whole comparison: {total / 60:.1f} min")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(DEFAULT))
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--output-dir", default="runs/evolving_topics")
    parser.add_argument("--set", nargs="*", default=[], help="extra key=value overrides for every run")
    args = parser.parse_args(argv)
    finished = {s: run_strategy(s, args) for s in args.strategies}
    rows = [row_of(s, summary) for s, summary in finished.items() if summary is not None]
    stopped = [f"{s}: the run stopped before its end (no row)" for s, summary in finished.items() if summary is None]
    text = table(rows) + "\n\n" + "\n".join(f"- {line}" for line in [*stopped, *verdict(rows)]) + "\n"
    out = Path(args.output_dir)
    (out / "comparison.md").write_text(text)
    (out / "comparison.json").write_text(json.dumps(rows, indent=1))
    print("\n" + text)
    print(f"Table: {out / 'comparison.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
