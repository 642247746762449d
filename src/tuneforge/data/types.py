"""Plain data types that flow between the data pipeline, the engine and evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_INDEX = -100  # label value that carries no loss (PyTorch cross-entropy convention)


@dataclass
class Record:
    """One raw row of a source, with where it came from for error messages."""

    data: dict
    where: str  # "path:line" (JSONL line, CSV row, JSON array index+1) or "dataset[split]:index"


@dataclass
class Example:
    """One tokenised training example. ``labels[i]`` is the target *at* position i
    (unshifted, like Hugging Face ``labels``): IGNORE_INDEX where no loss."""

    input_ids: list[int]
    labels: list[int]
    where: str = ""


@dataclass
class PackedRow:
    """Several examples in one row; ``position_ids`` restart at 0 for each example,
    which is what isolates them in attention (see data/packing.py)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    num_examples: int = 1


@dataclass
class GenerationSample:
    """A held-out prompt to generate from, with its reference answer."""

    prompt_ids: list[int]  # rendered exactly as in training, ending where the answer starts
    prompt: str  # human-readable prompt (for the report)
    reference: str
    where: str = ""
    # Every acceptable answer, ``reference`` first (Natural Instructions instances can
    # have several outputs; other formats have one). Scorers may take the best match.
    references: list[str] = field(default_factory=list)


class DataError(Exception):
    """Bad data. ``problems`` are lines like ``train.jsonl:12: messages[1].role: must be ...``."""

    def __init__(self, problems: list[str], hint: str = ""):
        self.problems = problems
        self.hint = hint
        shown = problems[:10]
        more = f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""
        text = "\n  ".join(shown)
        super().__init__(f"{len(problems)} data problem(s):\n  {text}{more}" + (f"\n{hint}" if hint else ""))


@dataclass
class DataReport:
    """What `tuneforge validate` says about a dataset after rendering it."""

    rows: int = 0
    examples: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    truncated: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def loss_fraction(self) -> float:
        return self.loss_tokens / self.tokens if self.tokens else 0.0


@dataclass
class Splits:
    """What the data pipeline hands to a recipe: tokenised train / eval examples,
    prompts to generate from for evaluation, and the report."""

    train: list[Example]
    eval: list[Example]
    eval_samples: list[GenerationSample]
    report: DataReport
