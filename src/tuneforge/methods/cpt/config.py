"""The run config of `method: cpt`."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from ...config.schema import RunBase


class CptConfig(RunBase):
    """Continued pretraining: next-token loss on every token of raw text."""

    method: Literal["cpt"]

    @model_validator(mode="after")
    def _text_only(self) -> CptConfig:
        if self.data.format != "text":
            raise ValueError(
                f"method 'cpt' trains on raw text: set data.format to 'text' (got '{self.data.format}'); "
                "for prompt/response data use method 'sft'"
            )
        return self
