"""Batched greedy generation equals one-prompt-at-a-time generation; stopping;
evaluate_generation's scores."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny import tiny_model, tiny_tokenizer

from tuneforge.data.types import GenerationSample
from tuneforge.eval.generation import evaluate_generation, generate, stop_token_ids_for

PROMPTS = ["hi", "hello there friend", "a much longer prompt with many bytes in it", "x", "what is 2+2?"]


def chaotic_model(seed: int = 0):
    """The default tiny model mostly repeats its last input byte (tied embeddings,
    small weights), which would hide padding bugs. Large random weights make each
    token depend on the whole context and on positions."""
    model = tiny_model(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matmuls gain nothing from threads, and on a 2-core machine that is busy
    with other work, OpenMP threads waiting on each other made these tests 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _one_by_one(model, tok, prompts, **kw):
    return [generate(model, tok, [p], batch_size=1, progress=False, **kw)[0] for p in prompts]


def test_batched_equals_sequential(tok):
    model = chaotic_model()
    prompts = [tok.encode(p) for p in PROMPTS]
    batched = generate(model, tok, prompts, max_new_tokens=12, batch_size=3, progress=False)
    assert batched == _one_by_one(model, tok, prompts, max_new_tokens=12)
    assert len(set(batched)) == len(batched)  # the outputs really differ per prompt


def test_padding_is_masked(tok):
    """Sanity check of the test above: if the pad positions were attended to,
    the batched answers of the shorter prompts would change."""
    model = chaotic_model()
    prompts = [tok.encode(p) for p in PROMPTS]
    reference = generate(model, tok, prompts, max_new_tokens=12, batch_size=5, progress=False)
    original = model.generate

    def unmasked(**kwargs):
        kwargs["attention_mask"] = torch.ones_like(kwargs["attention_mask"])
        return original(**kwargs)

    model.generate = unmasked
    broken = generate(model, tok, prompts, max_new_tokens=12, batch_size=5, progress=False)
    assert broken != reference


def test_stops_at_stop_token_and_strips_it(tok):
    model = chaotic_model()
    prompt = tok.encode("hello there friend")
    full = model.generate(
        input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=[10**6], pad_token_id=2
    )[0, len(prompt) :].tolist()
    stop = full[3]
    expected = tok.decode(full[: full.index(stop)], skip_special_tokens=True)
    got = generate(model, tok, [prompt], max_new_tokens=12, batch_size=1, stop_token_ids=[stop], progress=False)
    assert got == [expected]
    assert len(expected) < len(tok.decode(full, skip_special_tokens=True))


def test_stop_ids_include_eos_and_end_of_turn(tok):
    model = chaotic_model()
    assert stop_token_ids_for(model, tok, [7]) == [2, 7]  # eos == <|im_end|> == 2, deduplicated


def test_restores_training_mode_and_works_with_peft(tok):
    base = chaotic_model()
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.train()
    prompts = [tok.encode(p) for p in PROMPTS]
    batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=2, progress=False)
    assert model.training
    model.train()
    assert batched == _one_by_one(model, tok, prompts, max_new_tokens=8)
    with model.disable_adapter():  # the adapter is really in the decoding path
        assert generate(model, tok, prompts, max_new_tokens=8, batch_size=2, progress=False) != batched


def test_evaluate_generation_scores_and_order(tok):
    model = chaotic_model()
    prompts = [tok.encode(p) for p in PROMPTS]
    answers = _one_by_one(model, tok, prompts, max_new_tokens=6)
    # references: right for samples 0 and 2, wrong for the others
    refs = [answers[0], "nope", answers[2], "nope", "nope"]
    samples = [GenerationSample(prompt_ids=p, prompt=t, reference=r) for p, t, r in zip(prompts, PROMPTS, refs)]
    result = evaluate_generation(
        model, tok, samples, ["exact_match", "contains"], max_new_tokens=6, batch_size=2, progress=False
    )
    assert result.scores["exact_match"] == pytest.approx(2 / 5)
    assert [s.prediction for s in result.samples] == answers
    assert [s.scores["exact_match"] for s in result.samples] == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert result.field_errors is None


def test_evaluate_generation_checks_references_before_generating(tok):
    model = chaotic_model()
    model.generate = None  # any attempt to decode would fail with TypeError
    samples = [GenerationSample(prompt_ids=[5, 6], prompt="p", reference="not json", where="eval.jsonl:3")]
    with pytest.raises(ValueError, match="eval.jsonl:3: scorer 'json_field_accuracy'"):
        evaluate_generation(model, tok, samples, ["json_field_accuracy"], max_new_tokens=4, batch_size=1)
    with pytest.raises(ValueError, match="Did you mean 'contains'"):
        evaluate_generation(model, tok, samples, ["contain"], max_new_tokens=4, batch_size=1)


def test_evaluate_generation_json_field_errors(tok):
    model = chaotic_model()
    samples = [GenerationSample(prompt_ids=tok.encode("hi"), prompt="hi", reference='{"a": 1, "b": "x"}')]
    result = evaluate_generation(
        model, tok, samples, ["json_field_accuracy"], max_new_tokens=4, batch_size=1, progress=False
    )
    assert result.scores == {"json_field_accuracy": 0.0}  # random bytes are not JSON
    assert result.field_errors == {"a": {"wrong": 1, "total": 1}, "b": {"wrong": 1, "total": 1}}
