"""The value head: one linear layer on the policy's last hidden state, V(s_t) per response token.

It sits on the policy's trunk (METHODS.md: "the value head can sit on the policy
trunk"), as in Ziegler et al. 2019's shared-trunk variant and TRL's
``AutoModelForCausalLMWithValueHead``: one forward gives log-probs and values,
and no second network is held. The value loss (scaled by ``vf_coef``) also
reaches the trunk (or the adapter); ``vf_coef`` = 0.1 keeps it from dominating.

It starts at zero (weights and bias), so V ≡ 0 at the first rollout: the first
advantages are the rewards-to-go themselves, and no random head injects noise
into the trunk's gradient. It runs in float32 whatever the model's dtype: a
value is a regression target, and bf16 rounds returns of a few units badly.
Saved as ``value_head.safetensors`` (``weight`` (1, H), ``bias`` (1,)) in the
output folder, where plain transformers / peft ignore it.
"""

from __future__ import annotations

from pathlib import Path

import torch

FILE = "value_head.safetensors"


class ValueHead(torch.nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear = torch.nn.Linear(hidden_size, 1, dtype=torch.float32)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, H) → values (B, T), float32."""
        return self.linear(hidden.float()).squeeze(-1)


def hidden_size_of(model: torch.nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def save_value_head(head: ValueHead, folder: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(folder) / FILE
    save_file(
        {
            "weight": head.linear.weight.detach().cpu().contiguous(),
            "bias": head.linear.bias.detach().cpu().contiguous(),
        },
        str(path),
    )
    return path


def load_value_head(folder: Path) -> ValueHead:
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / FILE))
    head = ValueHead(state["weight"].shape[1])
    head.linear.load_state_dict(state)
    return head
