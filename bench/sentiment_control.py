"""The DPO paper's controlled sentiment generation (Rafailov et al. 2023, arXiv 2305.18290, §6.1,
Fig. 2), in miniature, on the embedded SmolLM2-135M and 2 CPU cores.

    python bench/sentiment_control.py                                  # every stage
    python bench/sentiment_control.py --stages dpo,eval,report         # some of them (earlier outputs kept)
    python bench/sentiment_control.py --stages ppo --ppo-kl 0.1 --force  # one run again

Stages (each a ``tuneforge`` command or a script in ``examples/sentiment_control/``):

1. ``prompts``    make_prompts.py: comment prefixes (2-4 words), train / held-out from different comments;
2. ``classifier`` ``method: classify``, MiniLM full: p(positive) is the ground-truth reward;
3. ``sft``        ``method: cpt`` (plain text, LoRA) on the training comments, then ``tuneforge merge``;
4. ``pairs``      make_pairs.py: SFT samples per prompt ranked by the classifier → pairs;
5. ``reward``     ``method: reward`` on the pairs (held-out pairwise accuracy);
6. ``dpo``        ``method: dpo`` at several β (+ variants), held-out implicit-reward accuracy;
7. ``ppo``        ``method: ppo`` with the reward model at several KL coefficients;
8. ``eval``       evaluate.py: every policy on the held-out prompts, ground-truth reward, KL to the SFT
                  reference on the policy's own samples, win rate against the SFT policy;
9. ``report``     bench/results/sentiment_control.json, the reward-vs-KL frontier PNG, a markdown table.

Each stage's wall time is recorded. Run folders: ``runs/sentiment_control/``; a run whose
summary.json exists is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "sentiment_control"
CONF = ROOT / "configs" / "sentiment_control"
EX = ROOT / "examples" / "sentiment_control"
RESULTS = ROOT / "bench" / "results" / "sentiment_control.json"
FIGURE = ROOT / "bench" / "results" / "sentiment_control_frontier.png"
STAGES = ["prompts", "classifier", "sft", "pairs", "reward", "dpo", "ppo", "eval", "report"]
SFT_MERGED = RUNS / "sc-sft-merged"
BIN = Path(sys.executable).parent / "tuneforge"


def sh(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root, output to ``log``; its wall time in seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.call(
            cmd,
            cwd=ROOT,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"},
        )
    wall = time.perf_counter() - t0
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"failed ({code}) after {wall:.0f} s: {' '.join(cmd)}\n{tail}")
    return wall


def train(config: str, name: str, overrides: list[str], force: bool) -> tuple[dict, float | None]:
    run = RUNS / name
    if (run / "summary.json").exists() and not force:
        print(f"= {name}: done before, kept (--force to redo)")
        return json.loads((run / "summary.json").read_text()), None
    if run.exists():
        shutil.rmtree(run)
    wall = sh([str(BIN), "train", str(CONF / config), f"name={name}", *overrides], RUNS / "logs" / f"{name}.log")
    return json.loads((run / "summary.json").read_text()), wall


def load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {"stages": {}, "runs": {}}


def save(res: dict) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2, ensure_ascii=False))


def fmt(v: float) -> str:
    return f"{v:g}"


def dpo_runs(args) -> list[tuple[str, list[str], dict]]:
    out = [(f"sc-dpo-b{fmt(b)}", [f"loss.beta={b}"], {"loss": "dpo", "beta": b}) for b in args.dpo_betas]
    for spec in args.dpo_variants:  # e.g. ipo:0.1
        kind, _, beta = spec.partition(":")
        over = [f"loss.type={kind}"] + ([f"loss.beta={beta}"] if beta else [])
        out.append(
            (f"sc-{kind}" + (f"-b{beta}" if beta else ""), over, {"loss": kind, "beta": float(beta) if beta else None})
        )
    return out


def ppo_runs(args) -> list[tuple[str, list[str], dict]]:
    out = [
        (f"sc-ppo-kl{fmt(k)}", [f"ppo.kl_coef={k}", f"training.max_steps={args.ppo_steps}"], {"kl_coef": k})
        for k in args.ppo_kl
    ]
    if args.ppo_target:  # adaptive KL (Ziegler et al. 2019), one run per initial coefficient
        t = args.ppo_target
        out += [
            (
                f"sc-ppo-target{fmt(t)}-b{fmt(init)}",
                [
                    f"ppo.kl_coef={init}",
                    f"ppo.adaptive_kl.target={t}",
                    f"ppo.adaptive_kl.horizon={args.ppo_horizon}",
                    f"training.max_steps={args.ppo_steps}",
                ],
                {"kl_coef": init, "kl_target": t},
            )
            for init in args.ppo_target_init
        ]
    return out


def stage_prompts(args, res):
    cmd = [sys.executable, str(EX / "make_prompts.py"), "--n-train", str(args.n_train), "--n-eval", str(args.n_eval)]
    res["stages"]["prompts"] = {"wall_s": round(sh(cmd, RUNS / "logs" / "prompts.log"), 1)}


def stage_classifier(args, res):
    summary, wall = train("classifier.yaml", "sc-classifier", [], args.force)
    res["runs"]["classifier"] = {
        "macro_f1": summary["after"].get("macro_f1"),
        "accuracy": summary["after"].get("accuracy"),
        "wall_s": round(wall or summary["train"]["run_wall_seconds"], 1),
    }
    res["stages"]["classifier"] = {"wall_s": res["runs"]["classifier"]["wall_s"]}


def stage_sft(args, res):
    summary, wall = train("sft.yaml", "sc-sft", [], args.force)
    merge = 0.0
    if args.force or not (SFT_MERGED / "config.json").exists():
        if SFT_MERGED.exists():
            shutil.rmtree(SFT_MERGED)
        merge = sh([str(BIN), "merge", str(RUNS / "sc-sft"), "--output", str(SFT_MERGED)], RUNS / "logs" / "merge.log")
    total = (wall or summary["train"]["run_wall_seconds"]) + merge
    res["runs"]["sft"] = {
        "eval_loss_before": summary["before"].get("eval_loss"),
        "eval_loss_after": summary["after"].get("eval_loss"),
        "wall_s": round(total, 1),
        "train_tokens_per_s": summary["train"]["tokens_per_second"],
    }
    res["stages"]["sft"] = {"wall_s": round(total, 1)}


def stage_pairs(args, res):
    out = RUNS / "pairs"
    cmd = [
        sys.executable,
        str(EX / "make_pairs.py"),
        "--policy",
        str(SFT_MERGED),
        "--classifier",
        str(RUNS / "sc-classifier"),
        "--out",
        str(out),
        "--n",
        str(args.pair_samples),
        "--min-gap",
        str(args.min_gap),
        "--per-prompt",
        str(args.per_prompt),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--max-prompts",
        str(args.pair_prompts),
    ]
    wall = sh(cmd, RUNS / "logs" / "pairs.log")
    shutil.copy(out / "pairs.jsonl", EX / "pairs.jsonl")  # what the shipped reward / dpo configs read
    res["runs"]["pairs"] = {**json.loads((out / "stats.json").read_text()), "wall_s": round(wall, 1)}
    res["stages"]["pairs"] = {"wall_s": round(wall, 1)}


def stage_reward(args, res):
    summary, wall = train("reward.yaml", "sc-reward", [], args.force)
    res["runs"]["reward"] = {
        "accuracy_before": summary["before"].get("accuracy"),
        "accuracy_after": summary["after"].get("accuracy"),
        "margin_after": summary["after"].get("margin"),
        "eval_pairs": summary["data"].get("eval_pairs", summary["data"].get("eval_examples")),
        "wall_s": round(wall or summary["train"]["run_wall_seconds"], 1),
    }
    res["stages"]["reward"] = {"wall_s": res["runs"]["reward"]["wall_s"]}


def stage_dpo(args, res):
    total = 0.0
    for name, over, meta in dpo_runs(args):
        epochs = [f"training.epochs={args.dpo_epochs}"] if args.dpo_epochs else []
        summary, wall = train("dpo.yaml", name, over + epochs, args.force)
        w = wall or summary["train"]["run_wall_seconds"]
        total += w
        a, b = summary["after"], summary["before"]
        res["runs"][name] = {
            "method": "dpo",
            **meta,
            "accuracy_before": b.get("rewards/accuracies"),
            "accuracy_after": a.get("rewards/accuracies"),
            "margin_after": a.get("rewards/margins"),
            "chosen_after": a.get("rewards/chosen"),
            "rejected_after": a.get("rewards/rejected"),
            "wall_s": round(w, 1),
        }
        save(res)
    res["stages"]["dpo"] = {"wall_s": round(total, 1), "runs": len(dpo_runs(args))}


def stage_ppo(args, res):
    total = 0.0
    for name, over, meta in ppo_runs(args):
        summary, wall = train("ppo.yaml", name, over, args.force)
        w = wall or summary["train"]["run_wall_seconds"]
        total += w
        a, b = summary["after"], summary["before"]
        res["runs"][name] = {
            "method": "ppo",
            **meta,
            "rm_reward_before": b.get("reward"),
            "rm_reward_after": a.get("reward"),
            "kl_after": a.get("kl"),
            "wall_s": round(w, 1),
        }
        save(res)
    res["stages"]["ppo"] = {"wall_s": round(total, 1), "runs": len(ppo_runs(args))}


def stage_eval(args, res):
    policies = [
        f"{name}={RUNS / name}"
        for name, _, _ in dpo_runs(args) + ppo_runs(args)
        if (RUNS / name / "summary.json").exists()
    ]
    out = RUNS / "eval.json"
    cmd = [
        sys.executable,
        str(EX / "evaluate.py"),
        "--base",
        str(SFT_MERGED),
        "--classifier",
        str(RUNS / "sc-classifier"),
        "--out",
        str(out),
        "--samples",
        str(args.eval_samples),
        "--max-new-tokens",
        str(args.max_new_tokens),
    ] + [x for p in policies for x in ("--policy", p)]
    wall = sh(cmd, RUNS / "logs" / "eval.log")
    res["eval"] = json.loads(out.read_text())
    res["stages"]["eval"] = {"wall_s": round(wall, 1)}


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pol = res["eval"]["policies"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    sft = pol["sft"]
    ax.axhline(sft["reward"], color="grey", ls=":", lw=1)
    ax.scatter([0], [sft["reward"]], marker="s", color="grey", s=60, label="SFT (π_ref)", zorder=3)
    groups = {"DPO": ("tab:orange", "o"), "DPO variant": ("tab:red", "D"), "PPO (reward model)": ("tab:blue", "^")}
    for label, (color, marker) in groups.items():
        pts = []
        for name, r in pol.items():
            run = res["runs"].get(name, {})
            kind = (
                "PPO (reward model)"
                if run.get("method") == "ppo"
                else "DPO"
                if run.get("loss") == "dpo"
                else "DPO variant"
                if run.get("method") == "dpo"
                else None
            )
            if kind == label:
                pts.append((r["kl"], r["reward"], name))
        if not pts:
            continue
        pts.sort()
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, marker=marker, s=60, label=label, zorder=3)
        if label != "DPO variant" and len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=1, alpha=0.6)
        for i, (x, y, name) in enumerate(pts):
            run = res["runs"][name]
            tag = (
                (
                    f"KL target {run['kl_target']:g} (β₀ {run['kl_coef']:g})"
                    if run.get("kl_target")
                    else f"kl_coef {run['kl_coef']:g}"
                )
                if run["method"] == "ppo"
                else f"{run['loss']} β {run['beta']:g}"
                if run.get("beta")
                else run["loss"]
            )
            # DPO labels above left of their point, the rest right of it (a variant sits near a DPO point: above it);
            # the two lowest-KL PPO points' labels go left, clear of their neighbours.
            offset, align = {"DPO": ((-6, 6), "right"), "DPO variant": ((6, 6), "left")}.get(
                label, ((-6, -14), "right") if i < 2 else ((6, -10), "left")
            )
            ax.annotate(tag, (x, y), textcoords="offset points", xytext=offset, ha=align, fontsize=8, color=color)
    ax.set_xlabel("KL(π ‖ π_ref), nats per sequence (sampled continuations, held-out prompts)")
    ax.set_ylabel("ground-truth reward: mean p(positive)")
    ax.set_title(
        "Sentiment control, reward vs KL frontier\n(SmolLM2-135M + LoRA, CPU; cf. Rafailov et al. 2023, Fig. 2)",
        fontsize=10,
    )
    ax.set_xlim(-0.3, 1.22 * max(r["kl"] for r in pol.values()) + 0.5)
    ax.set_ylim(min(0.0, sft["reward"] - 0.05), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(res: dict) -> str:
    runs, pol = res["runs"], res.get("eval", {}).get("policies", {})
    lines = ["| stage | wall time |", "|---|---|"]
    for st in STAGES:
        if st in res["stages"]:
            s = res["stages"][st]
            extra = f" ({s['runs']} runs)" if "runs" in s else ""
            lines.append(f"| {st} | {s['wall_s'] / 60:.1f} min{extra} |")
    lines += [
        "",
        "| policy | training | wall | held-out acc. (RM / implicit) | GT reward | KL(π‖π_ref) | win vs SFT |",
        "|---|---|---|---|---|---|---|",
    ]
    if "reward" in runs:
        r = runs["reward"]
        lines.append(
            f"| reward model | reward, LoRA | {r['wall_s'] / 60:.1f} min | {r['accuracy_before']} → "
            f"**{r['accuracy_after']}** | — | — | — |"
        )
    for name, p in pol.items():
        run = runs.get(name, {})
        if name == "sft":
            how, wall, acc = "cpt LoRA (merged)", runs.get("sft", {}).get("wall_s"), "—"
        elif run.get("method") == "dpo":
            how = f"{run['loss']}" + (f", β {run['beta']:g}" if run.get("beta") else "")
            wall, acc = run["wall_s"], f"{run['accuracy_before']} → **{run['accuracy_after']}**"
        else:
            how = f"ppo, kl_coef {run.get('kl_coef'):g}" + (
                f", target {run['kl_target']:g}" if run.get("kl_target") else ""
            )
            wall, acc = run.get("wall_s"), "—"
        w = f"{wall / 60:.1f} min" if wall else "—"
        win = f"{p['win_rate']:.2f}" if "win_rate" in p else "—"
        lines.append(f"| {name} | {how} | {w} | {acc} | {p['reward']:.3f} | {p['kl']:.2f} | {win} |")
    return "\n".join(lines)


def stage_report(args, res):
    if "eval" in res:
        plot(res, FIGURE)
        res["figure"] = str(FIGURE.relative_to(ROOT))
    table = markdown(res)
    res["markdown"] = table
    print(table)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--force", action="store_true", help="redo runs whose summary.json exists")
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-eval", type=int, default=128)
    ap.add_argument("--pair-prompts", type=int, default=320, help="training prompts sampled for pairs")
    ap.add_argument("--pair-samples", type=int, default=8)
    ap.add_argument("--min-gap", type=float, default=0.5)
    ap.add_argument("--per-prompt", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--dpo-betas", type=lambda s: [float(x) for x in s.split(",") if x], default=[0.1, 0.5])
    ap.add_argument("--dpo-variants", type=lambda s: [x for x in s.split(",") if x], default=["ipo:0.1"])
    ap.add_argument("--dpo-epochs", type=int, default=None, help="override dpo.yaml's training.epochs")
    ap.add_argument("--ppo-kl", type=lambda s: [float(x) for x in s.split(",") if x], default=[0.05, 0.3])
    ap.add_argument("--ppo-steps", type=int, default=15)
    ap.add_argument(
        "--ppo-target", type=float, default=6.0, help="also one adaptive-KL run with this target (nats); 0: none"
    )
    ap.add_argument(
        "--ppo-target-init",
        type=lambda s: [float(x) for x in s.split(",") if x],
        default=[0.1, 0.5, 1.0],
        help="initial coefficients of the adaptive-KL runs",
    )
    ap.add_argument(
        "--ppo-horizon",
        type=int,
        default=480,
        help="adaptive KL: samples over which the coefficient reacts (Ziegler et al. 2019)",
    )
    ap.add_argument("--eval-samples", type=int, default=2)
    args = ap.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise SystemExit(f"unknown stages {sorted(unknown)}; pick from {STAGES}")
    res = load()
    res["settings"] = {k: v for k, v in vars(args).items() if k not in ("stages", "force")}
    for st in STAGES:
        if st in stages:
            print(f"== {st} ({time.strftime('%H:%M:%S')})", flush=True)
            globals()[f"stage_{st}"](args, res)
            save(res)


if __name__ == "__main__":
    main()
