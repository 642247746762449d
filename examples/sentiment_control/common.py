"""Sampling, sequence log-probs and ground-truth scoring for the sentiment-control experiment.

Plain ``transformers`` / ``peft`` on purpose (the data scripts and the evaluation are independent of
the training code they measure). A prompt is tokenized as plain text (``add_special_tokens=False``;
SmolLM2 adds no BOS), exactly as tuneforge's ``template: plain`` renders it, and continued by
sampling at temperature 1 with no top-k / top-p truncation (the DPO paper's setting), up to
``max_new_tokens`` or the end-of-sequence token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch


def resolve(folder: str | Path, *names: str) -> Path:
    """A run folder → its model/ or adapter/ (or the folder itself)."""
    folder = Path(folder)
    for name in names or ("model", "adapter"):
        if (folder / name).is_dir():
            return folder / name
    return folder


def load_policy(base: str | Path, adapter: str | Path | None = None):
    """The merged SFT model (``base``), with an adapter on top when given; eval mode, fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(resolve(adapter, "adapter")))
    return model.eval(), tok


@dataclass
class Sample:
    prompt: str
    response: str
    prompt_ids: list[int]
    response_ids: list[int]  # includes the EOS when the model ended


@torch.no_grad()
def sample(model, tok, prompts: list[str], *, n: int = 1, max_new_tokens: int = 24, seed: int = 0,
           batch_size: int = 32, temperature: float = 1.0) -> list[list[Sample]]:
    """``n`` sampled continuations per prompt (pure sampling), seeded."""
    eos = tok.eos_token_id
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos
    torch.manual_seed(seed)
    flat = [p for p in prompts for _ in range(n)]
    out: list[Sample] = []
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in chunk]
        width = max(map(len, ids))
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        gen = model.generate(input_ids=input_ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0,
                             temperature=temperature, max_new_tokens=max_new_tokens, eos_token_id=eos,
                             pad_token_id=pad)
        for p, x, row in zip(chunk, ids, gen[:, width:].tolist()):
            resp = []
            for t in row:
                resp.append(t)
                if t == eos:
                    break
            text = tok.decode([t for t in resp if t != eos], skip_special_tokens=True)
            out.append(Sample(p, text, x, resp))
    return [out[i * n:(i + 1) * n] for i in range(len(prompts))]


@torch.no_grad()
def response_logps(model, samples: list[Sample], *, pad: int, batch_size: int = 32,
                   temperature: float = 1.0) -> torch.Tensor:
    """Σ_t log π(y_t | x, y_<t) over each response's tokens (EOS included when sampled)."""
    out = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        seqs = [s.prompt_ids + s.response_ids for s in chunk]
        width = max(map(len, seqs))
        ids = torch.tensor([x + [pad] * (width - len(x)) for x in seqs])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in seqs])
        logits = model(input_ids=ids, attention_mask=mask).logits.float() / temperature
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]
        for i, s in enumerate(chunk):
            a = len(s.prompt_ids) - 1
            out.append(logp[i, a:a + len(s.response_ids)].sum())
    return torch.stack(out) if out else torch.zeros(0)


class SentimentJudge:
    """The ground-truth reward: p(positive) from the classify run (a full model folder)."""

    def __init__(self, run: str | Path, label: str = "positive"):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = resolve(run, "model")
        self.tok = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
        labels = {v: int(k) for k, v in self.model.config.id2label.items()}
        self.index = labels[label]

    @torch.no_grad()
    def __call__(self, texts: list[str], batch_size: int = 64) -> list[float]:
        scores = []
        for start in range(0, len(texts), batch_size):
            enc = self.tok(texts[start:start + batch_size], padding=True, truncation=True, max_length=128,
                           return_tensors="pt")
            probs = torch.softmax(self.model(**enc).logits.float(), -1)[:, self.index]
            scores.extend(probs.tolist())
        return scores
