"""Next-token prediction on a causal LM: the recipe (``recipe.py``) that `cpt` and `sft` share, and the
loss (``loss.py``) that DPO and PPO reuse for their policies."""

from .recipe import CausalLM, collate_rows

__all__ = ["CausalLM", "collate_rows"]
