"""Prefix tuning starts from real tokens' keys / values (Li & Liang 2021), not peft's random vectors."""

import pytest
import torch
from pydantic import TypeAdapter, ValidationError
from tiny import tiny_model

from tuneforge.adapters import attach_adapter
from tuneforge.adapters.config import AdapterConfig
from tuneforge.adapters.prefix_init import init_prefix_from_tokens


def _adapter(**section):
    return TypeAdapter(AdapterConfig).validate_python(section)


@pytest.mark.parametrize(
    "section", [{"type": "prefix_tuning", "num_virtual_tokens": 6}, {"type": "mam", "num_virtual_tokens": 6, "size": 8}]
)
def test_a_real_token_prefix_is_the_base_model_after_reading_those_tokens(section):
    """Adapted logits for x == the base model's logits for (tokens, x) at x's positions: the prefix
    holds exactly the keys / values the base computed for those tokens."""
    base = tiny_model(layers=2, hidden=32, seed=0).eval()
    reference = tiny_model(layers=2, hidden=32, seed=0).eval()
    adapted = attach_adapter(base, _adapter(**section)).model.eval()
    prefix_ids = torch.tensor([[11, 23, 35, 47, 59, 71]])
    init_prefix_from_tokens(adapted, prefix_ids)
    x = torch.tensor([[5, 40, 41, 42, 43, 44, 45]])
    with torch.no_grad():
        got = adapted(input_ids=x).logits
        want = reference(input_ids=torch.cat([prefix_ids, x], 1)).logits[:, -x.shape[1] :]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_the_default_start_is_real_tokens_and_random_is_peft_s():
    torch.manual_seed(0)
    real = attach_adapter(tiny_model(layers=2, hidden=32, seed=0), _adapter(type="prefix_tuning")).model
    torch.manual_seed(0)
    rand = attach_adapter(tiny_model(layers=2, hidden=32, seed=0), _adapter(type="prefix_tuning", init="random")).model
    w_real = real.prompt_encoder["default"].embedding.weight.detach()
    w_rand = rand.prompt_encoder["default"].embedding.weight.detach()
    assert not torch.allclose(w_real, w_rand)
    # peft's start: N(0, 1) entries; real keys / values of the tiny model are much smaller
    assert abs(float(w_rand.std()) - 1.0) < 0.1
    assert float(w_real.std()) < 0.5


def test_real_tokens_with_the_projection_mlp_is_refused_and_projection_defaults_to_random():
    with pytest.raises(ValidationError, match="init: real_tokens needs projection: false"):
        _adapter(type="prefix_tuning", projection=True, init="real_tokens")
    attach_adapter(tiny_model(layers=2, hidden=32, seed=0), _adapter(type="prefix_tuning", projection=True))
