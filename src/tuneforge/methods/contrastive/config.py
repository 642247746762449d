"""The run config of `method: contrastive`: data, loss, embedding and eval sections."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...config.schema import ModelConfig, RunBase, Section


class ContrastiveData(Section):
    format: Literal["pairs", "scored_pairs", "text"] = Field(
        "pairs",
        description="pairs: {anchor, positive} with optional negative(s) (triplets); "
        "scored_pairs: {text_a, text_b, score}; text: raw {text} rows for unsupervised SimCSE.",
    )
    train: str | list[str] = Field(description="JSONL/JSON/CSV/Parquet file(s), folder, glob or hub dataset.")
    eval: str | list[str] | None = Field(
        None,
        description="Held-out rows of the same format: for pairs, the anchors are the queries and the "
        "positives the documents to find.",
    )
    eval_fraction: float = Field(0.0, ge=0, lt=1)
    corpus: str | list[str] | None = Field(
        None,
        description="Extra {text} documents to retrieve from besides the held-out positives "
        "(distractors: a realistic retrieval eval searches the whole collection).",
    )
    max_length: int = Field(128, ge=8, description="Tokens per text; longer texts are cut.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map anchor / positive / negative / text_a / text_b / score / text onto your column names.",
    )
    max_examples: int | None = Field(None, ge=1)
    seed: int = 0


class ContrastiveLoss(Section):
    type: Literal["auto", "infonce", "triplet", "cosent", "cosine_mse"] = Field(
        "auto", description="auto: infonce for pairs and text (SimCSE), cosent for scored_pairs."
    )
    scale: float = Field(20.0, gt=0, description="Similarity scale (1 / temperature) for infonce and cosent.")
    symmetric: bool = Field(False, description="infonce: also match each positive to its anchor.")
    margin: float = Field(0.3, gt=0, description="triplet: cosine-distance margin.")
    avoid_duplicates: bool = Field(
        True, description="Never put the same text twice in one batch (a duplicate is a false negative)."
    )
    gradient_cache: int | None = Field(
        None,
        ge=1,
        description="Embed a batch in chunks of this many texts and cache the gradients "
        "(GradCache): batches larger than memory allows, same in-batch negatives and same gradients.",
    )


class EmbeddingOptions(Section):
    pooling: Literal["auto", "mean", "cls", "last"] = Field(
        "auto", description="auto: mean for encoders, last token for decoders."
    )
    normalize: bool = True


class ContrastiveEval(Section):
    batch_size: int = Field(64, ge=1)
    samples_in_report: int = Field(6, ge=0, description="Held-out queries shown with what was found.")


class ContrastiveConfig(RunBase):
    """Contrastive fine-tuning of an embedding model."""

    method: Literal["contrastive"]
    model: ModelConfig = Field(default_factory=lambda: ModelConfig(name="minilm-l6-v2"))
    data: ContrastiveData
    loss: ContrastiveLoss = Field(default_factory=ContrastiveLoss)
    embedding: EmbeddingOptions = Field(default_factory=EmbeddingOptions)
    eval: ContrastiveEval | None = Field(default_factory=ContrastiveEval)

    @model_validator(mode="after")
    def _loss_fits_data(self) -> ContrastiveConfig:
        kind, fmt = self.loss.type, self.data.format
        if fmt == "scored_pairs" and kind in ("infonce", "triplet"):
            raise ValueError(
                f"loss.type '{kind}' needs pairs (anchor, positive); scored_pairs train with 'cosent' or 'cosine_mse'"
            )
        if fmt != "scored_pairs" and kind in ("cosent", "cosine_mse"):
            raise ValueError(
                f"loss.type '{kind}' needs a similarity score per pair: use data.format "
                "'scored_pairs', or loss.type 'infonce' / 'triplet'"
            )
        if fmt == "text" and kind == "triplet":
            raise ValueError("loss.type 'triplet' needs a negative per row; raw text (SimCSE) trains with 'infonce'")
        return self

    @property
    def loss_type(self) -> str:
        if self.loss.type != "auto":
            return self.loss.type
        return "cosent" if self.data.format == "scored_pairs" else "infonce"
