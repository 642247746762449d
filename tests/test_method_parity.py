"""cpt / sft behave exactly as before the method interface moved them under `methods/`.

The reference values (per-step losses, held-out losses before / after, final
trainable weights) were recorded from the pre-refactor code (commit d032eba) by
running this file with ``TUNEFORGE_RECORD_PARITY=1``. The tiny model starts from
weights stored beside them, so the test does not depend on how a transformers
release initialises a fresh model.

Tolerance: on the machine that recorded them every value matched bit for bit;
the small tolerance below only absorbs CPU kernel differences between machines
(AVX2 vs AVX-512 reduce sums in a different order). A real change of behaviour —
another loss normalisation, an extra step, a different data order — moves the
losses by far more than 1e-6 relative.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from conftest import chat_rows, write_jsonl
from safetensors.torch import load_file, save_file

from tuneforge.config import load_config
from tuneforge.runner import train_from_config

HERE = Path(__file__).parent / "data" / "parity"
RECORD = os.environ.get("TUNEFORGE_RECORD_PARITY") == "1"


@pytest.fixture
def parity_model_dir(tmp_path):
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    init = HERE / "init.safetensors"
    if RECORD and not init.exists():
        HERE.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}, str(init))
    model.load_state_dict(load_file(str(init)), strict=False)
    model.tie_weights()
    path = tmp_path / "parity-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _text_rows(n: int) -> list[dict]:
    words = ["hive", "queen", "drone", "nectar", "comb", "smoke", "frame", "brood", "wax", "swarm"]
    return [{"text": " ".join(words[(i * 3 + k) % len(words)] for k in range(12 + i % 5)) + "."} for i in range(n)]


CASES = {
    "cpt_full": lambda tmp: {
        "method": "cpt",
        "data": {
            "format": "text",
            "train": str(write_jsonl(tmp / "t.jsonl", _text_rows(30))),
            "eval_fraction": 0.2,
            "max_length": 64,
        },
        "training": {
            "max_steps": 4,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "learning_rate": 1e-3,
            "seed": 5,
            "warmup_steps": 1,
        },
        "eval": {"scorers": []},
    },
    "sft_lora": lambda tmp: {
        "method": "sft",
        "data": {
            "format": "chat",
            "train": str(write_jsonl(tmp / "c.jsonl", chat_rows(16, seed=1))),
            "eval": str(write_jsonl(tmp / "e.jsonl", chat_rows(4, seed=2))),
            "max_length": 96,
        },
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.1},
        "training": {
            "max_steps": 4,
            "batch_size": 2,
            "gradient_accumulation_steps": 2,
            "learning_rate": 5e-3,
            "seed": 3,
            "scheduler": "linear",
        },
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 6, "batch_size": 4},
    },
    "sft_full_unpacked": lambda tmp: {
        "method": "sft",
        "data": {
            "format": "chat",
            "train": str(write_jsonl(tmp / "c.jsonl", chat_rows(12, seed=4))),
            "eval": str(write_jsonl(tmp / "e.jsonl", chat_rows(4, seed=6))),
            "max_length": 96,
            "packing": False,
        },
        "training": {"max_steps": 3, "batch_size": 3, "learning_rate": 1e-4, "seed": 7},
        "eval": {"scorers": ["exact_match"], "max_new_tokens": 6, "batch_size": 4},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_run_matches_pre_refactor_reference(case, tmp_path, parity_model_dir, isolated_cache):
    torch.set_num_threads(1)  # one reduction order for the recorded values
    try:
        raw = CASES[case](tmp_path)
        # The reference was recorded with the block-diagonal mask; per-segment attention (the default on CPU
        # since) computes the same function in another summation order — weights then differ by ~2e-7 after
        # 4 AdamW steps, beyond this test's atol. Its equality with the mask is tested in float64 to 1e-10,
        # gradients included (test_segment_attention.py), so this test keeps checking the refactor on the
        # path it was recorded on.
        raw.update(
            name=case,
            output_dir=str(tmp_path / "runs"),
            model={"name": str(parity_model_dir), "packed_attention": "mask"},
        )
        result = train_from_config(load_config(data=raw))
    finally:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    metrics = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    got = {
        "losses": [m["loss"] for m in metrics if "loss" in m],
        "grad_norms": [m["grad_norm"] for m in metrics if "grad_norm" in m],
        "before": result.summary["before"],
        "after": result.summary["after"],
        "tokens": result.summary["train"]["tokens"],
        "loss_tokens": result.summary["train"]["loss_tokens"],
    }
    weights = {n: p.detach().clone().contiguous() for n, p in result.model.named_parameters() if p.requires_grad}
    ref_json, ref_weights = HERE / f"{case}.json", HERE / f"{case}.safetensors"
    if RECORD:
        ref_json.write_text(json.dumps(got, indent=1))
        save_file(weights, str(ref_weights))
        pytest.skip("recorded")
    expected = json.loads(ref_json.read_text())
    assert got["tokens"] == expected["tokens"] and got["loss_tokens"] == expected["loss_tokens"]
    assert got["losses"] == pytest.approx(expected["losses"], rel=1e-6, abs=1e-7)
    assert got["grad_norms"] == pytest.approx(expected["grad_norms"], rel=1e-5, abs=1e-7)
    for phase in ("before", "after"):
        assert got[phase].keys() == expected[phase].keys()
        assert got[phase] == pytest.approx(expected[phase], rel=1e-5, abs=1e-7)
    reference = load_file(str(ref_weights))
    assert weights.keys() == reference.keys()
    for name, tensor in reference.items():
        # Weights are compared at their tensor's scale: AdamW divides by sqrt(v), so a LoRA A matrix whose
        # gradients start near zero (B starts at zero) turns last-bit differences of the gradients into
        # update differences of a few ulps of the tensor's largest entries. On an AVX2-only EPYC the sft_lora
        # case differed by 6.4e-7 in a tensor whose entries reach 0.18 (3.5e-6 of its scale; losses and
        # gradient norms still matched to 1e-6), which an elementwise atol of 1e-7 refused. A real change of
        # behaviour moves these weights by the order of the learning rate (5e-3), far beyond 1e-5 of the scale.
        scale = float(tensor.abs().max())
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=max(1e-7, 1e-5 * scale), msg=name)
    if os.environ.get("TUNEFORGE_PARITY_EXACT") == "1":  # on the recording machine: bit for bit
        assert got["losses"] == expected["losses"]
        assert all(torch.equal(weights[n], t) for n, t in reference.items())
