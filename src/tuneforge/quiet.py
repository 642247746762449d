"""Silence deprecation warnings that one library raises about another's use of it.

A user cannot act on these: they come from inside our dependencies, and the
fix is a newer release of the library that triggers them. Each entry names
exactly one warning (message regex, category, module that raises it), says
where it comes from, and when it can go. Anything tuneforge triggers itself is
deliberately left visible, so that it gets fixed at the call site instead:
e.g. ``gradient_checkpointing_enable`` is deprecated in the same transformers
release, but that one is called by tuneforge (``runner.py``), not by peft.

If the user chose warning filters themselves (``python -W ...`` or
``PYTHONWARNINGS``), nothing is touched: they asked to see what they asked for.
"""

from __future__ import annotations

import sys
import warnings

# (message regex, category, module regex of the code that calls warnings.warn)
_LIBRARY_NOISE: tuple[tuple[str, type[Warning], str], ...] = (
    # transformers 5 renamed gradient checkpointing to activation checkpointing and kept
    # `is_gradient_checkpointing` as a property that warns on every read.
    # peft's PeftModel.__init__ (peft/peft_model.py, `_prepare_model_for_gradient_checkpointing`)
    # reads it with getattr(model, "is_gradient_checkpointing", True) on every get_peft_model,
    # so every LoRA run printed it. Remove once peft reads `is_activation_checkpointing`.
    (
        r"`is_gradient_checkpointing` is deprecated and will be removed in v6",
        FutureWarning,
        r"transformers\.",
    ),
    # transformers 5.24 deprecates passing `past_key_values` to the forward of causal LMs; peft's
    # prefix tuning (peft/peft_model.py, PeftModelForCausalLM.forward) passes its prefixes that way,
    # and the warning prints the whole cache's repr on every run. Remove once peft passes them
    # through transformers' replacement.
    (
        r"`past_key_values` is deprecated",
        FutureWarning,
        r"(transformers|torch)\.",
    ),
)


def silence_library_noise() -> None:
    """Install the filters above (idempotent: an identical filter replaces itself)."""
    if sys.warnoptions:
        return
    for message, category, module in _LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    _once_per_process("bitsandbytes.autograd._functions", ("MatMul8bitLt: inputs will be cast",))


class _OncePerMessage:
    """A logging filter that lets each listed message through once, then drops its repeats.

    bitsandbytes' 8-bit matmul logs "inputs will be cast from float32 to float16" on
    every forward of every layer on CPU (its int8 kernels take fp16 inputs): worth
    knowing once, noise after that.
    """

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes
        self.seen: set[str] = set()

    def filter(self, record) -> bool:
        text = str(record.msg)
        for prefix in self.prefixes:
            if text.startswith(prefix):
                if prefix in self.seen:
                    return False
                self.seen.add(prefix)
        return True


def _once_per_process(logger_name: str, prefixes: tuple[str, ...]) -> None:
    import logging

    # A filter on a parent logger does not see its children's records, so it goes on the
    # module logger that emits them.
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _OncePerMessage) for f in logger.filters):
        logger.addFilter(_OncePerMessage(prefixes))
