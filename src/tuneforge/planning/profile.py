"""What a method tells the planner about itself (``interface.Method.plan_profile`` / ``plan_extras``).

A leaf module: plain dataclasses, no tuneforge imports, so ``interface.py`` and every method can
name them without pulling the planner in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlanProfile:
    """The shape of one training example, as the generic planner needs it."""

    lm_head: bool = False  # the output projection runs at every loss position (causal-LM losses)
    sequences_per_item: int = 1  # sequences one row becomes (chosen + rejected, anchor + positive: 2)
    shared_prompt: bool = False  # a pair's two sequences share one prompt forward (DPO's shared-prompt path)
    head_outputs: int | None = None  # a classification / score head's outputs; None: the data's label count


@dataclass
class PlanInputs:
    """What a method's ``plan_extras`` may read: the sizes the planner has worked out so far."""

    arch: Any  # planning.shapes.Arch
    params: Any  # planning.shapes.Params
    step: Any  # planning.steps.StepShape
    compute_bytes: int
    notes: list[str]  # append a sentence for every assumption made


@dataclass
class PlanExtras:
    """Work and memory a method adds to the generic training step."""

    parts: list = field(default_factory=list)  # planning.memory.Part: reference / reward models, caches
    forward_tokens: float = 0.0  # forward-only token passes per step (a reference model, old log-probs …)
    generated_tokens: int = 0  # tokens sampled per step (PPO's rollouts)
