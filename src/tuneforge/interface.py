"""The method interface: what a folder under ``methods/`` supplies to the runner.

The runner (``runner.py``) runs every method through one skeleton:

    checks → data → run folder → model → evaluate "before" → adapter →
    train (shared loop) → save → evaluate "after" → summary + report

and calls the method at each step through the :class:`Method` protocol below.
Nothing here is a base class to inherit from (STYLE.md: no implementation
inheritance); a method is any object with these attributes, usually a small
frozen dataclass instance named ``METHOD`` in ``methods/<name>/recipe.py``.

The loss contract is what keeps gradient accumulation and DDP exact for every
method: ``loss_module(**batch.inputs)`` returns ``(summed_loss, count)`` and
the shared ``training.step.forward_backward`` divides the sum by the count of
the *whole* accumulated batch over all processes (``Batch.count``, known
before the forward). Token-weighted methods count loss tokens, example-weighted
ones count examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from .planning.profile import PlanExtras, PlanInputs, PlanProfile

# Model families a method can declare it accepts (``Method.model_kinds``); see checks.model_kind.
CAUSAL_LM = "causal-lm"
ENCODER = "encoder"


@dataclass
class Batch:
    """One micro-batch: tensors for ``loss_module(**inputs)`` and the counts the engine needs."""

    inputs: dict[str, torch.Tensor]
    count: int  # what the summed loss is normalised by: loss tokens, or examples
    tokens: int  # real (non-padding) tokens, for throughput


@dataclass
class MethodData:
    """A method's prepared data: training rows, held-out rows, and anything its evaluation needs."""

    train: list  # rows the collate function turns into batches (any type; must have ``input_ids``)
    eval: list
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. generation samples, the label set
    facts: dict[str, Any] = field(default_factory=dict)  # about the data; written to summary.json "data"
    # Optional reordering of each epoch's shuffled rows: (order, group, first) -> order; see
    # training.engine.RowOrder. Contrastive training uses it to keep duplicates out of a batch.
    arrange: Callable[[list[int], int, int], list[int]] | None = None
    # Named parts of ``eval`` (a mixture's sources): the held-out loss of each is logged as eval_loss/<name>.
    eval_groups: dict[str, list] = field(default_factory=dict)


@dataclass
class EvalContext:
    """What an evaluation may use; the same object "before" and "after" training."""

    config: Any
    tokenizer: Any
    data: MethodData
    accelerator: Any
    label: str = "before"  # "before" | "after"
    loss_module: torch.nn.Module | None = None  # the (possibly sharded) training loss module, "after" only


class Method(Protocol):
    """What the runner calls. Attributes first, then the steps in the order they run, then the
    optional members, which have defaults here: a method class subclasses ``Method`` to get them
    (``class MyMethod(Method)``; ``registry.register_method`` refuses an object that does not).
    """

    name: str  # the ``method:`` value
    config_class: type  # pydantic run config (extends config.schema.RunBase)
    model_kinds: tuple[str, ...]  # model families it trains (CAUSAL_LM, ENCODER)
    peft_task_type: str  # peft TaskType name for adapters: "CAUSAL_LM", "SEQ_CLS", ...
    count_name: str  # what Batch.count counts, as written to summary.json ("loss_tokens", "examples")
    # The trained output is a causal LM scored by next-token loss (general-text perplexity applies).
    causal_lm_output: bool = False
    # Continual learning (``stages:``) can train it: one loss per row, one model that carries over.
    continual: bool = False

    def check(self, config, tokenizer) -> tuple[list[str], list[str], dict]:
        """Everything method-specific `validate` checks without weights: (errors, warnings, facts)."""
        ...

    def load_data(self, config, tokenizer) -> MethodData:
        """Read, validate and tokenise; raise ``data.types.DataError`` listing bad rows."""
        ...

    def build_model(self, config, data: MethodData, *, dtype: torch.dtype) -> torch.nn.Module:
        """The model to train, before any adapter: a base model plus whatever heads the method needs."""
        ...

    def loss_module(self, config, model: torch.nn.Module, data: MethodData) -> torch.nn.Module:
        """An ``nn.Module`` whose ``forward(**batch.inputs)`` returns (summed loss, count). It must keep
        the trained model as its ``.model`` attribute: the runner saves ``loss_module.model``."""
        ...

    def collate(self, rows: list, tokenizer) -> Batch:
        """Rows of ``MethodData.train`` / ``.eval`` → one padded batch."""
        ...

    def chance_loss(self, config, model: torch.nn.Module, data: MethodData) -> float | None:
        """The loss of a uniform prediction (ln of the number of choices), for divergence detection."""
        ...

    def evaluate(self, model: torch.nn.Module | None, ctx: EvalContext) -> dict:
        """Score the model. Returns a JSON-serialisable dict:
        ``metrics`` ({name: number}, required), ``samples`` (list of {prompt, reference, prediction,
        scores}), and optional report extras: ``baselines`` ({name: {metric: value}}),
        ``field_errors``, ``matrices`` ({title: {"labels": [...], "values": [[...]]}}),
        ``tables`` ({title: {"columns": [...], "rows": [[...]]}}), ``curves`` ({title: {"x": [...],
        "y": [...], "xlabel", "ylabel"}}, drawn before vs after).
        ``model`` is None on processes other than the main one in sharded runs."""
        ...

    def periodic_metrics(self, loss: float) -> dict:
        """Held-out loss (every ``training.eval_every`` steps) → the metrics to log, e.g. {"eval_loss": ...}."""
        ...

    def save(self, config, model: torch.nn.Module, output_dir: Path, tokenizer, *, state_dict=None) -> None:
        """Write the trained model in a standard format (plain transformers / peft load it).

        ``state_dict`` is the gathered full state after a sharded (FSDP / DeepSpeed) run."""
        ...

    def load_output(self, config, output_dir: Path, *, dtype: torch.dtype) -> torch.nn.Module:
        """Load what ``save`` wrote, as an ordinary model (used for evaluation after sharded runs)."""
        ...

    # ------------------------------------------------------------------ optional members (defaults)

    def total_steps(self, config, data: MethodData, processes: int) -> int:
        """Optimizer steps of the run (schedule, progress, checkpoints). Default: global batches of rows
        over ``training.epochs``, capped by ``training.max_steps``. PPO counts rollouts instead."""
        from .training.engine import total_steps

        t = config.training
        global_batch = t.batch_size * t.gradient_accumulation_steps * processes
        return total_steps(len(data.train), global_batch, t.epochs, t.max_steps)

    def describe_step(self, config, processes: int) -> str:
        """How the start-of-run line describes one step ("of 32 rows")."""
        t = config.training
        return f" of {t.batch_size * t.gradient_accumulation_steps * processes} rows"

    def run_training(self, *, config, data: MethodData, tokenizer, **loop) -> Any:
        """Train; ``loop`` holds ``training.loop.train_loop``'s keyword arguments. Default: that loop.

        A method whose step is not "one batch of rows" (PPO: rollout → update) runs its own step inside
        ``training.loop.drive``, which keeps the loop's contract (count-weighted steps, atomic
        checkpoints, SIGINT → ``TrainingInterrupted``); returns a ``training.loop.LoopResult``."""
        from .training.loop import train_loop

        return train_loop(**loop)

    def plan_profile(self, config) -> PlanProfile:
        """The example shape the planner assumes (``planning/profile.py``)."""
        from .planning.profile import PlanProfile

        return PlanProfile(lm_head=self.causal_lm_output)

    def plan_step(self, config, data: MethodData | None, facts: dict | None, processes: int) -> Any:
        """A ``planning.steps.StepShape`` for a step that is not a batch of rows; None: the generic one."""
        return None

    def plan_extras(self, config, inputs: PlanInputs) -> PlanExtras:
        """Memory parts and forward / generation work beyond the generic step (reference models …)."""
        from .planning.profile import PlanExtras

        return PlanExtras()

    def stage_problems(self, config) -> list[str]:
        """Why the stages of this continual config cannot share one model (``continual`` methods only),
        each naming the key and the fix; checked before anything loads."""
        return []

    def inference_loader(self, adapter_folder: Path) -> Callable[..., torch.nn.Module] | None:
        """How to load the base an adapter folder this method wrote sits on, for ``eval`` / ``serve`` /
        ``predict``: ``loader(name, *, trust_remote_code=False) -> model``; None: not this method's
        folder (the caller falls back to a causal LM)."""
        return None
