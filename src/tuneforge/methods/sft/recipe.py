"""`method: sft`: the causal-LM recipe (``methods/causal_lm/``) with the sft config.

What makes it supervised is in the data: the formats' labels mask prompts, so
only completions / assistant turns (and their end-of-turn token) carry a loss.
"""

from ..causal_lm import CausalLM
from .config import SftConfig

METHOD = CausalLM(name="sft", config_class=SftConfig)
