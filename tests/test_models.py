"""Model resolution: embedded names, folders, .gguf files, hub ids offline, and clear errors."""

import pytest
import torch

from tuneforge.models.embedded import EMBEDDED_MODELS, package_file
from tuneforge.models.load import ModelNotFoundError, load_causal_lm, load_tokenizer, resolve_model


def test_local_folder_resolves_to_itself(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_missing_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_hub_id_offline_suggests_embedded(monkeypatch):
    # Not close enough to be taken for a typo (see test_loose_ends.py), but worth a hint.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("smollm2-135m")
    assert "HF_HUB_OFFLINE" in str(info.value) and "smollm2-135m-instruct" in str(info.value)


def test_trust_remote_code_is_passed_through_not_assumed(tiny_model_dir, monkeypatch):
    seen = {}
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    load_causal_lm(str(tiny_model_dir))
    assert seen["trust_remote_code"] is False


@pytest.mark.slow
def test_gguf_file_converts_once_to_an_equivalent_fp32_folder(isolated_cache):
    """A .gguf path converts into the cache; the result loads as an ordinary fp32 model and
    gives the same logits as transformers' own GGUF loader."""
    from transformers import AutoModelForCausalLM

    gguf = package_file(EMBEDDED_MODELS["smollm2-135m-instruct"])
    folder = resolve_model(str(gguf))
    assert str(isolated_cache) in folder
    assert resolve_model(str(gguf)) == folder  # cached: same folder, no second conversion
    converted = load_causal_lm(str(gguf)).eval()
    assert next(converted.parameters()).dtype == torch.float32
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 520, 2641, 314, 253, 1345]])
    with torch.no_grad():
        assert torch.allclose(converted(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5)
    tokenizer = load_tokenizer(str(gguf))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
