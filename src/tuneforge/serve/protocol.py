"""The OpenAI API shapes the server speaks: requests, responses, stream chunks and errors.

Requests are validated here, and a bad one becomes a 400 that names the field
(``param``), the way OpenAI's own API answers. Options this server does not
implement (``n`` > 1, log-probs, legacy ``functions``, penalties…) are refused by name when a
request sets them, never silently ignored; fields a client sends with their
default values (many do) pass.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (status, message, type, param, code)
        self.headers = headers  # e.g. Retry-After on a 429

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# Options we do not implement: (field, the value that means "not used").
UNSUPPORTED = {
    "n": 1,
    "logprobs": None,
    "top_logprobs": None,
    "functions": None,  # tools / tool_choice: serve/tools.py
    "function_call": None,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logit_bias": None,
    "best_of": 1,
    "echo": False,
    "suffix": None,
    "audio": None,
    "modalities": None,
    "prediction": None,
}


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # what torch.Generator.manual_seed takes
    stream: bool = False
    stream_options: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        if (isinstance(value, list) and any(not s for s in value)) or value == "":
            raise ValueError("stop sequences must not be empty")
        return value

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def refuse_unsupported(self) -> None:
        extra = self.model_extra or {}
        for name, unused in UNSUPPORTED.items():
            value = extra.get(name, unused)
            if value not in (unused, None, False, [], {}) and not (name == "n" and value == 1):
                raise APIError(
                    400,
                    f"'{name}' is not supported by this server (got {value!r}); leave it out",
                    param=name,
                    code="unsupported_parameter",
                )
        response_format = extra.get("response_format")
        if response_format and (response_format.get("type") if isinstance(response_format, dict) else None) != "text":
            raise APIError(
                400,
                "'response_format' other than text is not supported by this server",
                param="response_format",
                code="unsupported_parameter",
            )


class ContentPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None

    def plain(self) -> dict:
        """The message as the chat template takes it (developer → system, text parts joined)."""
        content = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content or [])
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatRequest(_Request):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("this server takes one prompt per request (a string or a list of one string)")
            value = value[0]
        if not value:
            raise ValueError("the prompt is empty")
        if any("\ud800" <= c <= "\udfff" for c in value):  # JSON allows "\ud800" alone; no tokenizer takes it
            raise ValueError("the prompt holds an unpaired surrogate escape, which is not text")
        return value

    def requested_tokens(self) -> int | None:
        return self.max_tokens


def parse(model: type[_Request], data: Any) -> _Request:
    """A validated request, or an :class:`APIError` 400 naming the first bad field."""
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("str", "list[")))
        message = "missing required field" if first["type"] == "missing" else first["msg"]
        raise APIError(400, f"{param}: {message}", param=param or None) from None
    request.refuse_unsupported()
    return request


# ---------------------------------------------------------------------------- responses


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_response(rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_response(
    rid: str, model: str, text: str, finish: str, prompt_tokens: int, completion_tokens: int
) -> dict:
    return {
        "id": rid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def chat_chunk(
    rid: str, model: str, created: int, *, delta: dict, finish: str | None = None, usage_counts: dict | None = None
) -> dict:
    return _chunk("chat.completion.chunk", rid, model, created, {"delta": delta}, finish, usage_counts)


def completion_chunk(
    rid: str, model: str, created: int, *, text: str, finish: str | None = None, usage_counts: dict | None = None
) -> dict:
    return _chunk("text_completion", rid, model, created, {"text": text}, finish, usage_counts)


def _chunk(
    kind: str, rid: str, model: str, created: int, content: dict, finish: str | None, usage_counts: dict | None
) -> dict:
    """One stream event: a choice with new content, or (OpenAI's include_usage) a last one with usage only."""
    chunk = {"id": rid, "object": kind, "created": created, "model": model, "choices": []}
    if usage_counts is not None:
        chunk["usage"] = usage_counts
    else:
        chunk["choices"] = [{"index": 0, **content, "finish_reason": finish, "logprobs": None}]
    return chunk
