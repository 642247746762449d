"""Switch a decoder to a custom attention function for one call, and refuse models that ignore the switch.

transformers' layers look their attention function up by ``config._attn_implementation`` in
``AttentionInterface`` on every forward. tuneforge's own functions (per-segment attention for packed rows,
the shared-prompt pair attention of DPO) are registered there once and selected only inside
:meth:`AttentionSwitch.active`, so generation and every other forward keep the model's own attention. A
function registered without a mask function gets no mask built for it at all.

A model whose attention layers read another config or dispatch on their own would silently run its usual
attention instead, which for these layouts means attending across examples; the switch counts the calls
that reached the function and raises when a forward inside the block made none.
"""

from __future__ import annotations

import contextlib


class AttentionSwitch:
    def __init__(self, name: str, function, refusal: str):
        self.name = name
        self.function = function
        self.refusal = refusal  # what to tell the user when the layers ignored the switch
        self.calls = 0
        self._registered = False

    def _counted(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)

    @contextlib.contextmanager
    def active(self, config):
        """Within the block, the decoder whose layers share ``config`` attends with this switch's function."""
        if not self._registered:
            from transformers import AttentionInterface

            AttentionInterface.register(self.name, self._counted)
            self._registered = True
        before, calls = config._attn_implementation, self.calls
        config._attn_implementation = self.name
        try:
            yield
        finally:
            config._attn_implementation = before
        if self.calls == calls:
            raise RuntimeError(f"{config.model_type}: its attention layers did not use {self.refusal}")
