"""Reward sources: reward models, Python functions, classifiers — and their weighted sum.

The sequence score PPO maximises is ``Σ_i weight_i · source_i(prompt, response)``:

- ``model:`` a reward model (``method: reward`` output, or any
  ``AutoModelForSequenceClassification`` with one label; InstructGPT, Ouyang et
  al. 2022, arXiv 2203.02155). It reads the policy's own ids (prompt + response
  through the stop token) when it shares the policy's vocabulary — exactly the
  sequences preference data renders — and otherwise the texts re-rendered with
  its tokenizer. It is called as plain transformers calls it (right padding,
  attention mask; the score is at its last non-pad token).
- ``function:`` ``module:fn`` / ``file.py:fn`` (resolved as ``eval.scorers``
  resolves plug-ins), called once per batch as ``fn(prompts, responses)`` →
  one finite number per response: rule-based and verifiable rewards.
- ``classifier:`` a ``method: classify`` output; the score is p(label) or
  log p(label) of ``prompt + response`` (the text as continued: the DPO paper's
  sentiment reward, Rafailov et al. 2023, arXiv 2305.18290, §6.1) or of the
  response alone. Chat prompts are read as a text pair (prompt, response).

Models load on first use (``tuneforge validate`` reads no weights: see
:func:`check_sources`), in eval mode, without gradients.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Callable
from pathlib import Path

import torch

from .data import PromptRow


class RewardError(ValueError):
    """A reward source cannot be loaded or returned something unusable."""


def output_folder(path: str | Path) -> Path:
    """A run folder → its ``model/`` or ``adapter/``; any other folder as given."""
    from ...adapters import is_adapter_folder

    path = Path(path)
    if not (path / "config.json").exists() and not is_adapter_folder(path):
        for inner in ("adapter", "model"):
            if (path / inner).is_dir():
                return path / inner
    return path


def load_function(spec: str) -> Callable:
    """``module:fn`` / ``file.py:fn`` → the function, loaded the way scorer plug-ins are."""
    from ...eval.scorers import load_function as load_plugin

    try:
        func = load_plugin(spec, what="reward function")
    except ValueError as err:
        raise RewardError(str(err)) from None
    if not callable(func):
        raise RewardError(f"reward function '{spec}' is a {type(func).__name__}, not a function")
    return func


def _config_json(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}


def _adapter_info(folder: Path) -> dict:
    """``classifier.json``: what classify and reward runs write beside an output (labels, base, pad token)."""
    from ..classify.model import read_info

    return read_info(folder)


def _folder_problem(folder: Path, kind: str) -> str | None:
    """Why ``folder`` is not a sequence-classification output ("model" needs one label), or None."""
    from ...adapters import is_adapter_folder

    if not folder.exists():
        from ...config.producers import missing_output_hint

        hint = missing_output_hint(folder)
        return f"{folder}: no such folder" + (f"; {hint}" if hint else "")
    if is_adapter_folder(folder):
        labels = _adapter_info(folder).get("labels")
        if labels is None:
            return (
                f"{folder}: an adapter without classifier.json; give the output of a `method: reward` or "
                "`method: classify` run"
            )
        if kind == "model" and len(labels) != 1:
            return (
                f"{folder}: a reward model has one output, this one has {len(labels)} labels; use it as "
                "{classifier: ..., label: ...} instead"
            )
        return None
    config = _config_json(folder)
    if not config:
        return (
            f"{folder}: not a model folder (no config.json or adapter_config.json); give a run folder or its "
            "model/ or adapter/ folder"
        )
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return f"{folder}: not a sequence classifier (architectures: {', '.join(config.get('architectures') or [])})"
    labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
    if kind == "model" and labels != 1:
        return (
            f"{folder}: a reward model has one output, this one has {labels} labels; use it as "
            "{classifier: ..., label: ...} instead"
        )
    return None


def check_sources(sources) -> list[str]:
    """Problems with ``reward.sources`` found without loading weights (for ``tuneforge validate``)."""
    problems = []
    for i, source in enumerate(sources):
        key = f"reward.sources[{i}].{source.kind}"
        if source.function:
            try:
                load_function(source.function)
            except RewardError as err:
                problems.append(f"{key}: {err}")
            continue
        folder = output_folder(source.spec)
        problem = _folder_problem(folder, source.kind)
        if problem:
            problems.append(f"{key}: {problem}")
            continue
        if source.classifier:
            labels = _adapter_info(folder).get("labels") or list((_config_json(folder).get("id2label") or {}).values())
            if labels and source.label not in labels:
                problems.append(
                    f"reward.sources[{i}].label: '{source.label}' is not one of the classifier's labels "
                    f"({', '.join(map(str, labels))})"
                )
    return problems


def _finite(values, spec: str, n: int) -> torch.Tensor:
    values = list(values) if not isinstance(values, torch.Tensor) else values.flatten().tolist()
    if len(values) != n:
        raise RewardError(
            f"reward function '{spec}' returned {len(values)} values for {n} responses; return one number per response"
        )
    for v in values:
        if not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise RewardError(f"reward function '{spec}' returned {v!r}; every value must be a finite number")
    return torch.tensor([float(v) for v in values], dtype=torch.float32)


class Rewards:
    """The configured sources, loaded lazily; ``score`` → (weighted total (N,), {source name: raw (N,)})."""

    def __init__(self, sources, *, tokenizer, dtype: str = "auto", batch_size: int = 8):
        self.sources = list(sources)
        self.tokenizer = tokenizer  # the policy's
        self.dtype = dtype
        self.batch_size = batch_size
        self.names = _names(self.sources)
        self._loaded: dict[int, object] = {}

    @torch.no_grad()
    def score(
        self, prompts: list[PromptRow], responses: list[str], sequences: list[list[int]], device: torch.device
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """prompts, responses, policy ids of prompt + response (N each) → (total, per source), on the CPU."""
        parts = {}
        total = torch.zeros(len(responses))
        for i, (source, name) in enumerate(zip(self.sources, self.names)):
            if source.function:
                func = self._get(i, lambda s=source: load_function(s.function))
                raw = _finite(func([p.text for p in prompts], list(responses)), source.function, len(responses))
            elif source.model:
                raw = self._reward_model(i, source, prompts, responses, sequences, device)
            else:
                raw = self._classifier(i, source, prompts, responses, device)
            parts[name] = raw
            total = total + source.weight * raw
        return total, parts

    def _get(self, i: int, load):
        if i not in self._loaded:
            self._loaded[i] = load()
        return self._loaded[i]

    def _load_model(self, source, device):
        """(model, tokenizer, labels, info) of a reward model or classifier output, as classify loads them
        (a full folder, or an adapter with ``classifier.json``, which `method: reward` writes too)."""
        from ...models.load import resolve_dtype
        from ..classify.model import load_trained_classifier

        folder = output_folder(source.spec)
        problem = _folder_problem(folder, source.kind)
        if problem:
            raise RewardError(f"reward source {source.spec}: {problem}")
        model, tokenizer, labels, info = load_trained_classifier(folder, dtype=resolve_dtype(self.dtype, device))
        if source.model and len(labels) != 1:
            raise RewardError(
                f"reward source {source.spec}: a reward model has one output, this one has "
                f"{len(labels)} labels; use it as {{classifier: ..., label: ...}} instead"
            )
        return model.to(device).eval(), tokenizer, labels, info

    def _reward_model(self, i, source, prompts, responses, sequences, device) -> torch.Tensor:
        model, tokenizer, _, _ = self._get(i, lambda: self._load_model(source, device))
        same = self._get(f"same-{i}", lambda: tokenizer.get_vocab() == self.tokenizer.get_vocab())
        rows = sequences if same else [_rerender(tokenizer, p, r) for p, r in zip(prompts, responses)]
        pad = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
        out = []
        for start in range(0, len(rows), self.batch_size):
            ids, mask = _right_pad(rows[start : start + self.batch_size], pad)
            out.append(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, 0].float().cpu())
        return torch.cat(out)

    def _classifier(self, i, source, prompts, responses, device) -> torch.Tensor:
        from ...models.kind import model_kind
        from ..classify.data import LabelledText, encode

        model, tokenizer, labels, info = self._get(i, lambda: self._load_model(source, device))
        index = labels.index(source.label)
        decoder = model_kind(model.config) == "causal-lm"
        max_length = info.get("max_length") or 512
        out = []
        for start in range(0, len(responses), self.batch_size):
            items = []
            for p, r in zip(prompts[start : start + self.batch_size], responses[start : start + self.batch_size]):
                if source.text == "response":
                    items.append(LabelledText(r, None, "", ""))
                elif p.messages is None:  # a continued text: the classifier reads the whole text
                    items.append(LabelledText(p.text + r, None, "", ""))
                else:
                    items.append(LabelledText(p.text, r, "", ""))
            encoded = [encode(tokenizer, item, 0, max_length, decoder)[0] for item in items]
            ids, mask = _right_pad([e.input_ids for e in encoded], tokenizer.pad_token_id)
            extra = {}
            if encoded[0].token_type_ids is not None:
                extra["token_type_ids"] = _right_pad([e.token_type_ids for e in encoded], 0)[0].to(device)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits.float()
            logp = torch.log_softmax(logits, dim=-1)[:, index].cpu()
            out.append(logp if source.score == "logprob" else logp.exp())
        return torch.cat(out)


def _right_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


def _rerender(tokenizer, prompt: PromptRow, response: str) -> list[int]:
    """Prompt + response in a reward model's own tokenizer (when its vocabulary is not the policy's)."""
    if prompt.messages is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            prompt.messages + [{"role": "assistant", "content": response}], tokenize=False
        )
        return tokenizer(text.rstrip(), add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt.display + response)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def _names(sources) -> list[str]:
    names = []
    for source in sources:
        if source.name:
            name = source.name
        elif source.function:
            name = source.function.rpartition(":")[2]
        else:
            folder = Path(source.spec)
            name = folder.parent.name if folder.name in ("model", "adapter") else folder.name
            if source.classifier:
                name = f"{name}:{source.label}"
        while name in names:
            name += "'"
        names.append(name)
    return names
