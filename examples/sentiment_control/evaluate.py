"""Held-out evaluation of sentiment-control policies with the ground-truth classifier.

Every policy (the SFT model, or a LoRA adapter trained on top of it by dpo / ppo) continues the same
held-out prompts: ``--samples`` continuations per prompt, sampled at temperature 1 with no truncation
(the DPO paper's setting) and the same seed for every policy. Per policy:

- ``reward``: mean ground-truth reward, p(positive | prompt + continuation);
- ``win_rate``: share of prompts where the policy's mean reward is strictly higher than the SFT
  policy's (``ties`` counted apart);
- ``kl``: KL(π‖π_ref) per sequence, estimated on the policy's own samples as the mean of
  Σ_t log π(y_t|·) − log π_ref(y_t|·) (k1; unbiased, the estimator of tuneforge's ppo eval), with
  π_ref the SFT model (the adapter switched off).

``python examples/sentiment_control/evaluate.py --base runs/.../sc-sft-merged --classifier runs/.../sc-classifier \
    --policy dpo-b0.1=runs/.../sc-dpo-b0.1 --policy ppo-kl0.05=runs/.../sc-ppo-kl0.05 --out eval.json``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SentimentJudge, load_policy, resolve, response_logps, sample  # noqa: E402


def evaluate(base: str, classifier: str, policies: dict[str, str | None], prompts: list[str], *, samples: int,
             max_new_tokens: int, seed: int, batch_size: int = 32, keep_samples: int = 8) -> dict:
    from peft import PeftModel

    judge = SentimentJudge(classifier)
    model, tok = load_policy(base)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    results: dict[str, dict] = {}
    per_prompt: dict[str, list[float]] = {}
    for index, (name, adapter) in enumerate(policies.items()):
        t0 = time.time()
        if adapter is None:
            policy = model
        else:
            policy = PeftModel.from_pretrained(model, str(resolve(adapter, "adapter")), adapter_name=f"policy{index}").eval()
        groups = sample(policy, tok, prompts, n=samples, max_new_tokens=max_new_tokens, seed=seed,
                        batch_size=batch_size)
        flat = [s for g in groups for s in g]
        probs = judge([s.prompt + s.response for s in flat])
        if adapter is None:
            kl = torch.zeros(len(flat))
        else:
            logp = response_logps(policy, flat, pad=pad, batch_size=batch_size)
            with policy.disable_adapter():
                logp_ref = response_logps(policy, flat, pad=pad, batch_size=batch_size)
            kl = logp - logp_ref
            model = policy.unload()  # the plain SFT model back, for the next policy
        per_prompt[name] = [sum(probs[i * samples:(i + 1) * samples]) / samples for i in range(len(prompts))]
        lengths = [len(s.response_ids) for s in flat]
        results[name] = {
            "adapter": adapter, "reward": round(sum(probs) / len(probs), 4),
            "kl": round(float(kl.mean()), 4), "kl_std": round(float(kl.std()), 4) if len(kl) > 1 else 0.0,
            "positive_share": round(sum(p > 0.5 for p in probs) / len(probs), 4),
            "response_tokens": round(sum(lengths) / len(lengths), 2),
            "eval_s": round(time.time() - t0, 1),
            "samples": [{"prompt": s.prompt, "response": s.response, "p_positive": round(p, 4)}
                        for s, p in list(zip(flat, probs))[:keep_samples]],
        }
    ref = per_prompt.get("sft")
    if ref is not None:
        for name, res in results.items():
            if name == "sft":
                continue
            wins = sum(a > b for a, b in zip(per_prompt[name], ref))
            ties = sum(a == b for a, b in zip(per_prompt[name], ref))
            res["win_rate"] = round(wins / len(ref), 4)
            res["ties"] = round(ties / len(ref), 4)
    return {"prompts": len(prompts), "samples_per_prompt": samples, "max_new_tokens": max_new_tokens,
            "seed": seed, "policies": results}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="ground-truth evaluation of sentiment-control policies")
    ap.add_argument("--base", required=True, help="the merged SFT model folder (π_ref)")
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--policy", action="append", default=[], help="NAME=RUN_FOLDER (an adapter run)")
    ap.add_argument("--prompts", default=str(Path(__file__).resolve().parent / "prompts_eval.jsonl"))
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-prompts", type=int, default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    prompts = [json.loads(l)["prompt"] for l in Path(args.prompts).read_text().splitlines() if l.strip()]
    prompts = prompts[:args.max_prompts] if args.max_prompts else prompts
    policies: dict[str, str | None] = {"sft": None}
    for spec in args.policy:
        name, _, path = spec.partition("=")
        policies[name] = path
    result = evaluate(args.base, args.classifier, policies, prompts, samples=args.samples,
                      max_new_tokens=args.max_new_tokens, seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    for name, r in result["policies"].items():
        print(f"{name:16s} reward {r['reward']:.3f}  kl {r['kl']:.3f}  win {r.get('win_rate', '-')}  ({r['eval_s']} s)")


if __name__ == "__main__":
    main()
