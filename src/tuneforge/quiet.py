"""Silence deprecation warnings that one library raises about another's use of it,
and library output a tuneforge user cannot act on.

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
    (r"`is_gradient_checkpointing` is deprecated and will be removed in v6", FutureWarning, r"transformers\."),
    # transformers 5.24 deprecates passing `past_key_values` to the forward of causal LMs; peft's
    # prefix tuning (peft/peft_model.py, PeftModelForCausalLM.forward) passes its prefixes that way,
    # and the warning prints the whole cache's repr on every run. Remove once peft passes them
    # through transformers' replacement.
    (r"`past_key_values` is deprecated", FutureWarning, r"(transformers|torch)\."),
)


def silence_library_noise() -> None:
    """Install the filters above (idempotent: an identical filter replaces itself)."""
    if sys.warnoptions:
        return
    for message, category, module in _LIBRARY_NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    _once_per_process("bitsandbytes.autograd._functions", ("MatMul8bitLt: inputs will be cast",))
    # bitsandbytes (>= 0.49) tries to fetch a CPU kernel from the Hub when it is imported on a CPU
    # with AVX512-BF16, and logs a warning when that fails (always, offline). peft imports it for
    # every LoRA it creates, quantized or not, so every run printed it. Only a 4-bit run on CPU
    # would use that kernel, and it runs without it (bitsandbytes' own fallback).
    _drop("bitsandbytes.backends.cpu.ops", ("Failed to load CPU gemm_4bit_forward",))
    _transformers_progress_bars_off()


def _transformers_progress_bars_off() -> None:
    """transformers' own bars ("Loading weights", "Writing model shards") flash for a local
    folder and leave carriage-return lines in logs; tuneforge shows its own progress. Hub
    downloads keep theirs (those are huggingface_hub's bars, a separate switch). Applied when
    transformers' logging module is first imported, so importing tuneforge stays light;
    ``HF_HUB_DISABLE_PROGRESS_BARS=0`` in the environment keeps them on."""
    import os

    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "0":
        return
    name = "transformers.utils.logging"
    if name in sys.modules:
        sys.modules[name].disable_progress_bar()
    elif not any(isinstance(f, _AfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, lambda module: module.disable_progress_bar()))


class _AfterImport:
    """A meta-path finder that runs ``then(module)`` once ``name`` has been imported, then leaves."""

    def __init__(self, name: str, then):
        self.name, self.then = name, then

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # find the real spec without us, and never run twice
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        real_exec, then = spec.loader.exec_module, self.then

        def exec_module(module):
            real_exec(module)
            then(module)

        spec.loader.exec_module = exec_module
        return spec


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


class _DropMessages:
    """A logging filter that drops the listed messages (by prefix)."""

    def __init__(self, prefixes: tuple[str, ...]):
        self.prefixes = prefixes

    def filter(self, record) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def _drop(logger_name: str, prefixes: tuple[str, ...]) -> None:
    import logging

    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(prefixes))


def _once_per_process(logger_name: str, prefixes: tuple[str, ...]) -> None:
    import logging

    # A filter on a parent logger does not see its children's records, so it goes on the
    # module logger that emits them.
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _OncePerMessage) for f in logger.filters):
        logger.addFilter(_OncePerMessage(prefixes))
