"""The run config of `method: classify`: its own data, loss and eval sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ...config.schema import RunBase, Section


class ClassificationData(Section):
    format: Literal["classification"] = "classification"
    train: str | list[str] = Field(
        description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset "
        "with {text, label} rows (optional text_pair)."
    )
    eval: str | list[str] | None = None
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="Held-out share of train when no eval source is given.")
    labels: list[str] | None = Field(
        None,
        description="Label names. Required when labels in the data are integers (0 → first name); "
        "with string labels, optional: fixes their order (default: sorted as found in train).",
    )
    max_length: int = Field(256, ge=8, description="Tokens per text (text + text_pair); longer ones are cut.")
    columns: dict[str, str] = Field(
        default_factory=dict, description="Map text / text_pair / label onto your column names, e.g. {text: body}."
    )
    max_examples: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("labels")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if len(value) < 2:
                raise ValueError("needs at least two label names")
            if len(set(value)) != len(value):
                raise ValueError("label names must be distinct")
        return value


class ClassificationLoss(Section):
    class_weights: Literal["balanced"] | dict[str, float] | None = Field(
        None,
        description="None: every example counts the same; 'balanced': n / (K · n_k) from the training "
        "labels; or a weight per label name.",
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ClassificationEval(Section):
    batch_size: int = Field(32, ge=1)
    zero_shot_baseline: bool = Field(
        True,
        description="Also score the base model prompted zero-shot (label set in the prompt, first "
        "word of the answer mapped to a label): the baseline without fine-tuning. Causal LMs with a chat "
        "template only.",
    )
    zero_shot_samples: int | None = Field(
        None, ge=1, description="Held-out texts for the zero-shot baseline (default all)."
    )
    samples_in_report: int = Field(8, ge=0)


class ClassifyConfig(RunBase):
    """Sequence classification: a label head on a causal LM (last token) or an encoder."""

    method: Literal["classify"]
    data: ClassificationData
    loss: ClassificationLoss = Field(default_factory=ClassificationLoss)
    eval: ClassificationEval | None = Field(default_factory=ClassificationEval)
