"""Greedy generation for held-out prompts, and scoring the answers.

Decoding goes through ``model.generate`` rather than a hand-written loop:
``PeftModel.generate`` and architecture-specific caches (sliding windows,
hybrid layers) keep working. Everything the model's own ``generation_config``
could change about greedy decoding (sampling, beams, repetition penalties) is
pinned here, so before/after scores compare the weights and nothing else.

The one exception is peft's soft prompts (prompt / prefix / p-tuning): their
generate path is rewritten by peft from release to release (0.22 injects the
prefix as ``cache``, which generate then drops after the first step), so they
decode here: the prompt through ``PeftModel.forward`` (the forward training
ran), then token by token through the base model with that KV cache.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tuneforge.adapters import is_prompt_learning
from tuneforge.data.types import GenerationSample
from tuneforge.eval.scorers import best_reference, json_field_errors, resolve_scorer

END_OF_TURN = "<|im_end|>"


def stop_token_ids_for(model, tokenizer, extra: list[int] | None = None) -> list[int]:
    """Token ids that end an answer: the tokenizer's eos, ChatML's end of turn if
    the vocabulary has it, the model's configured eos ids, and ``extra``."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    # get_vocab, not convert_tokens_to_ids: the latter maps a missing token to unk.
    turn_end = tokenizer.get_vocab().get(END_OF_TURN)
    if turn_end is not None:
        ids.append(turn_end)
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.extend(configured if isinstance(configured, (list, tuple)) else [configured])
    ids.extend(extra or [])
    return list(dict.fromkeys(int(i) for i in ids))  # dedupe, keep order


@contextlib.contextmanager
def eval_mode(model):
    """model.eval() for the block (no dropout), then the caller's mode back (training may resume)."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _progress(enabled: bool, description: str) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        # Same switch as the training engine's bar: tests and CI logs turn both off.
        disable=not enabled or os.environ.get("TUNEFORGE_NO_PROGRESS") == "1",
        transient=True,
    )


def _device_of(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def generate(
    model,
    tokenizer,
    prompts_ids: list[list[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    stop_token_ids: list[int] | None = None,
    progress: bool = True,
) -> list[str]:
    """Greedy answers to ``prompts_ids``, in their order, stop tokens stripped.

    Prompts are sorted by length so each batch pads little, LEFT-padded so every
    row's next token sits in the last column, with an attention mask built from
    lengths (pad == eos for many tokenizers, so a mask from ids would hide real
    end-of-turn tokens inside prompts).
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be at least 1")
    if any(len(ids) == 0 for ids in prompts_ids):
        raise ValueError("cannot generate from an empty prompt")
    stops = stop_token_ids_for(model, tokenizer, stop_token_ids)
    soft_prompts = is_prompt_learning(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    device = _device_of(model)
    order = sorted(range(len(prompts_ids)), key=lambda i: len(prompts_ids[i]))
    answers: list[str] = [""] * len(prompts_ids)

    with eval_mode(model), torch.inference_mode(), _progress(progress, "generating") as bar:
        task = bar.add_task("generating", total=(len(order) + batch_size - 1) // batch_size)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            if soft_prompts:
                for i, new in zip(
                    chunk, _greedy_soft_prompt(model, [prompts_ids[i] for i in chunk], max_new_tokens, stops, device)
                ):
                    answers[i] = tokenizer.decode(new, skip_special_tokens=True)
                bar.advance(task)
                continue
            longest = max(len(prompts_ids[i]) for i in chunk)
            input_ids = torch.full((len(chunk), longest), pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(chunk), longest), dtype=torch.long)
            for row, i in enumerate(chunk):
                ids = prompts_ids[i]
                input_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, longest - len(ids) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                repetition_penalty=1.0,
                no_repeat_ngram_size=0,
                min_new_tokens=0,
                eos_token_id=stops,
                pad_token_id=pad_id,
            )  # (B, longest + new)
            for row, i in enumerate(chunk):
                new = output[row, longest:].tolist()
                cut = next((k for k, tok in enumerate(new) if tok in stops), len(new))
                answers[i] = tokenizer.decode(new[:cut], skip_special_tokens=True)
            bar.advance(task)
    return answers


def _greedy_soft_prompt(
    model, prompts_ids: list[list[int]], max_new_tokens: int, stops: list[int], device: torch.device
) -> list[list[int]]:
    """Greedy answers (stop token excluded) for a peft soft-prompt model, one prompt at a time.

    The prompt's forward goes through ``PeftModel.forward``, which prepends the
    virtual tokens (or passes the key/value prefix as the cache) exactly as in
    training; it returns the KV cache of prefix + prompt. Each new token then runs
    through the base model alone with that cache: peft's part is already in it,
    and positions continue from the cache's length, as they would in one full
    forward (a test checks token-for-token equality with full forwards).
    """
    from tuneforge.models.cache_name import cache_name

    base = model.get_base_model()
    answers: list[list[int]] = []
    for ids in prompts_ids:
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
        new: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(out.logits[0, -1].argmax())
            if nxt in stops:
                break
            new.append(nxt)
            if len(new) == max_new_tokens:
                break
            out = base(
                input_ids=torch.tensor([[nxt]], device=device),
                use_cache=True,
                **{cache_name(): getattr(out, cache_name())},
            )
        answers.append(new)
    return answers


@dataclass
class SampleResult:
    prompt: str
    reference: str
    prediction: str
    scores: dict[str, float]
    where: str = ""


@dataclass
class GenerationResult:
    """Mean score per scorer over the samples, and every sample's answer and scores."""

    scores: dict[str, float]
    samples: list[SampleResult] = field(default_factory=list)
    # Only with json_field_accuracy: {field: {"wrong": n, "total": m}}, most often wrong first.
    field_errors: dict[str, dict[str, int]] | None = None


def evaluate_generation(
    model,
    tokenizer,
    samples: list[GenerationSample],
    scorers: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = True,
) -> GenerationResult:
    """Generate greedily for every sample and score each answer with each scorer.

    An answer scores the best it gets against any of the sample's ``references``
    (every acceptable answer; just ``reference`` when there are none), and
    json_field_accuracy's per-field errors count against that best reference.

    Scorers are resolved, and each is run on (reference, reference) for every
    reference before any generation: a typo in a scorer name or a reference that a
    scorer cannot read (json_field_accuracy on non-JSON) fails in a second, not
    after decoding.
    """
    if not scorers:
        raise ValueError("no scorers given; e.g. ['exact_match']")
    funcs = {name: resolve_scorer(name) for name in scorers}
    for sample in samples:
        for name, func in funcs.items():
            for reference in _references(sample):
                try:
                    func(reference, reference)
                except Exception as err:
                    where = f"{sample.where}: " if sample.where else ""
                    raise ValueError(f"{where}scorer '{name}' cannot score this sample's reference: {err}") from err
    if not samples:
        return GenerationResult(scores={})

    predictions = generate(
        model,
        tokenizer,
        [s.prompt_ids for s in samples],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
    )
    results: list[SampleResult] = []
    json_pairs: list[tuple[str, str]] = []  # (prediction, its best-matching reference)
    for s, p in zip(samples, predictions):
        scores: dict[str, float] = {}
        for name, func in funcs.items():
            scores[name], best = best_reference(func, p, _references(s))
            if name == "json_field_accuracy":
                json_pairs.append((p, best))
        results.append(SampleResult(prompt=s.prompt, reference=s.reference, prediction=p, scores=scores, where=s.where))
    means = {name: sum(r.scores[name] for r in results) / len(results) for name in funcs}
    errors = json_field_errors(json_pairs) if "json_field_accuracy" in funcs else None
    return GenerationResult(scores=means, samples=results, field_errors=errors)


def _references(sample: GenerationSample) -> list[str]:
    """Every acceptable answer; samples built without ``references`` have just the one."""
    return sample.references or [sample.reference]
