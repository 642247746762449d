"""Prompts for the sentiment-control experiment (Rafailov et al. 2023, §6.1, in miniature).

From the bundled sentiment task (``examples/sentiment/{train,eval}.jsonl``):

- ``sft_train.jsonl``: ``{"text"}`` rows, every training comment (the SFT policy learns the domain);
- ``prompts_train.jsonl``: ``{"prompt"}``, the first 2-4 words of training comments (pairs, DPO, PPO);
- ``prompts_eval.jsonl``: ``{"prompt"}``, the first 2-4 words of *held-out* comments, so no comment
  behind a held-out prompt was seen by the classifier, the SFT policy or the preference data.

Seeded; ``python examples/sentiment_control/make_prompts.py [--out DIR] [--n-train N] [--n-eval N]``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def prefix(text: str, rng: random.Random, low: int = 2, high: int = 4) -> str:
    words = text.split()
    k = min(rng.randint(low, high), max(1, len(words) - 2))
    return " ".join(words[:k])


def prompts_from(rows: list[dict], n: int | None, rng: random.Random) -> list[dict]:
    rows = list(rows)
    rng.shuffle(rows)
    seen, out = set(), []
    for row in rows:
        p = prefix(row["text"], rng)
        if p.lower() in seen:  # one row per distinct prefix
            continue
        seen.add(p.lower())
        out.append({"prompt": p})
        if n is not None and len(out) >= n:
            break
    return out


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def make(out: Path, train_src: Path, eval_src: Path, n_train: int | None, n_eval: int | None,
         seed: int = 0) -> dict[str, int]:
    out.mkdir(parents=True, exist_ok=True)
    train, held = read(train_src), read(eval_src)
    rng = random.Random(seed)
    write(out / "sft_train.jsonl", [{"text": r["text"]} for r in train])
    ptrain = prompts_from(train, n_train, rng)
    peval = prompts_from(held, n_eval, rng)
    train_set = {p["prompt"].lower() for p in ptrain}
    peval = [p for p in peval if p["prompt"].lower() not in train_set]  # no prompt on both sides
    write(out / "prompts_train.jsonl", ptrain)
    write(out / "prompts_eval.jsonl", peval)
    return {"sft_train": len(train), "prompts_train": len(ptrain), "prompts_eval": len(peval)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "examples" / "sentiment_control")
    ap.add_argument("--train-src", type=Path, default=REPO / "examples" / "sentiment" / "train.jsonl")
    ap.add_argument("--eval-src", type=Path, default=REPO / "examples" / "sentiment" / "eval.jsonl")
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--n-eval", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(json.dumps(make(args.out, args.train_src, args.eval_src, args.n_train, args.n_eval, args.seed)))


if __name__ == "__main__":
    main()
