"""Divergence that never becomes NaN: a loss that climbs and stays up.

With a learning rate far too high and no gradient clipping, a model is often
destroyed without any non-finite value: its loss jumps, then settles at the
level of a uniform guess (ln of the vocabulary, ≈ 10.8 for a 49k vocabulary) and
the run "finishes". :class:`DivergenceWatch` sees the training loss of every
step and flags a run when, for ``patience`` steps in a row,

- the loss is far above where training started (more than three times the
  lowest loss of the first steps, and at least 2 nats above it), or
- the loss has reached the chance level (≥ 95 % of ln K, K = number of choices)
  although training started clearly below it (< 80 % of ln K).

A single noisy batch never trips it; a model that really was destroyed does
within a few steps. ``mode="stop"`` raises :class:`DivergenceError` before the
next optimizer step; the loop writes no checkpoint while losses are bad and sets
aside any written from the weights that produced the first bad loss on (the
loss of step s is computed with the weights saved as checkpoint s − 1), so
``--resume`` can only continue from good weights. ``"warn"`` prints once and
goes on.
"""

from __future__ import annotations

import math

FIRST_STEPS = 3  # steps whose lowest loss is "where training started" (a bad update can follow step 1)
PATIENCE = 3  # bad steps in a row before it counts


class DivergenceError(RuntimeError):
    def __init__(self, step: int, message: str, first_bad_step: int | None = None):
        self.step = step
        self.first_bad_step = first_bad_step if first_bad_step is not None else step
        super().__init__(message)


class DivergenceWatch:
    def __init__(
        self,
        *,
        chance_loss: float | None,
        mode: str = "stop",
        hint: str = "",
        console=None,
        first_steps: int = FIRST_STEPS,
        patience: int = PATIENCE,
    ):
        self.chance = chance_loss
        self.mode = mode
        self.hint = hint
        self.console = console
        self.first_steps = first_steps
        self.patience = patience
        self.first: list[float] = []
        self.bad_in_a_row = 0
        self.first_bad_step: int | None = None  # the first step of the current run of bad losses
        self.warning: str | None = None  # the message, once flagged in "warn" mode

    @property
    def start(self) -> float | None:
        return min(self.first) if self.first else None

    def _reason(self, loss: float) -> str | None:
        start = self.start
        if start is None:
            return None
        if self.chance and start < 0.8 * self.chance and loss >= 0.95 * self.chance:
            return f"rose from {start:.3f} to {loss:.3f}, the loss of a uniform guess (ln K = {self.chance:.2f})"
        if loss > 3 * start and loss > start + 2.0:
            return f"rose from {start:.3f} at the start to {loss:.3f}"
        return None

    def observe(self, step: int, loss: float) -> None:
        if self.mode == "off" or not math.isfinite(loss):
            return
        reason = self._reason(loss)
        if len(self.first) < self.first_steps:
            self.first.append(loss)
        self.bad_in_a_row = self.bad_in_a_row + 1 if reason else 0
        if self.bad_in_a_row == 1:
            self.first_bad_step = step
        if self.bad_in_a_row < self.patience or self.warning is not None:
            return
        message = (
            f"training diverged at step {step}: the loss {reason} and stayed there for "
            f"{self.patience} steps; the model is being destroyed. {self.hint}"
        ).strip()
        if self.mode == "stop":
            raise DivergenceError(
                step,
                message + " The run stopped and the last good checkpoint was kept; "
                "set training.on_divergence=warn to train on regardless.",
                first_bad_step=self.first_bad_step,
            )
        self.warning = message
        if self.console is not None:
            self.console.print(f"[bold yellow]warning:[/] {message}", highlight=False)


def divergence_hint(learning_rate: float, max_grad_norm: float | None, full_finetune: bool) -> str:
    """The likely cause, from the settings that usually cause it."""
    usual = "1e-5 … 1e-4" if full_finetune else "1e-4 … 2e-3"
    parts = [f"Likely cause: training.learning_rate={learning_rate:g} is too high (usual here: {usual})"]
    if max_grad_norm is None:
        parts.append("and gradient clipping is off (training.max_grad_norm=null; 1.0 is the usual value)")
    return " ".join(parts) + "."
