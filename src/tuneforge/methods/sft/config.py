"""The run config of `method: sft`."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ...config.schema import RunBase


class SftConfig(RunBase):
    """Supervised / instruction fine-tuning: loss on completions."""

    method: Literal["sft"]

    @model_validator(mode="after")
    def _not_text(self) -> SftConfig:
        if self.data.format == "text":
            raise ValueError(
                "method 'sft' needs prompts and completions: data.format 'text' is raw text, "
                "use method 'cpt' for it, or 'prompt_completion' / 'chat' / 'natural_instructions'"
            )
        return self
