"""Preference pairs for the sentiment-control experiment, ranked by the ground-truth classifier.

For every training prompt: ``--n`` continuations sampled from the SFT policy (temperature 1, no
truncation), each scored with the classifier's p(positive | prompt + continuation); pairs are
(chosen = higher p, rejected = lower p) whenever the gap is at least ``--min-gap``, at most
``--per-prompt`` of the widest per prompt. Rows: ``{prompt, chosen, rejected, p_chosen, p_rejected}``
(the extra fields are ignored by tuneforge). Also writes every scored sample to ``samples.jsonl``.

    python examples/sentiment_control/make_pairs.py --policy runs/sentiment_control/sc-sft-merged \
        --classifier runs/sentiment_control/sc-classifier --out runs/sentiment_control/pairs
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SentimentJudge, load_policy, sample  # noqa: E402


def make_pairs(scored: list[tuple[str, list[tuple[str, float]]]], min_gap: float, per_prompt: int) -> list[dict]:
    """``scored``: (prompt, [(response, p_positive), ...]) → pair rows, widest gaps first per prompt.
    Identical responses never make a pair; each response is used at most once per prompt."""
    rows = []
    for prompt, responses in scored:
        cands = []
        for (a, pa), (b, pb) in itertools.combinations(responses, 2):
            if a.strip() == b.strip():
                continue
            if pa < pb:
                (a, pa), (b, pb) = (b, pb), (a, pa)
            if pa - pb >= min_gap:
                cands.append((pa - pb, a, pa, b, pb))
        cands.sort(key=lambda c: -c[0])
        used: set[str] = set()
        kept = 0
        for gap, a, pa, b, pb in cands:
            if kept >= per_prompt:
                break
            if a in used or b in used:
                continue
            used.update((a, b))
            rows.append({"prompt": prompt, "chosen": a, "rejected": b, "p_chosen": round(pa, 4),
                         "p_rejected": round(pb, 4)})
            kept += 1
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="preference pairs from SFT samples ranked by the classifier")
    ap.add_argument("--policy", required=True, help="the merged SFT model folder")
    ap.add_argument("--classifier", required=True, help="the classify run (ground truth)")
    ap.add_argument("--prompts", default=str(Path(__file__).resolve().parent / "prompts_train.jsonl"))
    ap.add_argument("--out", required=True, help="folder: pairs.jsonl, samples.jsonl, stats.json")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--min-gap", type=float, default=0.5)
    ap.add_argument("--per-prompt", type=int, default=2)
    ap.add_argument("--max-prompts", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args(argv)

    t0 = time.time()
    prompts = [json.loads(l)["prompt"] for l in Path(args.prompts).read_text().splitlines() if l.strip()]
    prompts = prompts[:args.max_prompts] if args.max_prompts else prompts
    model, tok = load_policy(args.policy)
    groups = sample(model, tok, prompts, n=args.n, max_new_tokens=args.max_new_tokens, seed=args.seed,
                    batch_size=args.batch_size)
    t_gen = time.time() - t0
    judge = SentimentJudge(args.classifier)
    flat = [s for g in groups for s in g]
    probs = judge([s.prompt + s.response for s in flat])
    scored, k = [], 0
    for prompt, g in zip(prompts, groups):
        scored.append((prompt, [(s.response, probs[k + i]) for i, s in enumerate(g)]))
        k += len(g)
    pairs = make_pairs(scored, args.min_gap, args.per_prompt)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs))
    (out / "samples.jsonl").write_text("".join(
        json.dumps({"prompt": p, "response": r, "p_positive": round(q, 4)}, ensure_ascii=False) + "\n"
        for p, rs in scored for r, q in rs))
    stats = {"prompts": len(prompts), "samples": len(flat), "pairs": len(pairs),
             "prompts_with_pairs": len({r["prompt"] for r in pairs}),
             "mean_p_positive_sft": round(sum(probs) / len(probs), 4),
             "mean_gap": round(sum(r["p_chosen"] - r["p_rejected"] for r in pairs) / max(1, len(pairs)), 4),
             "generation_s": round(t_gen, 1), "total_s": round(time.time() - t0, 1)}
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
