"""`method: cpt`: the causal-LM recipe (``methods/causal_lm/``) with the cpt config."""

from ..causal_lm import CausalLM
from .config import CptConfig

METHOD = CausalLM(name="cpt", config_class=CptConfig)
