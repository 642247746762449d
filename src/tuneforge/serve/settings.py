"""The server's settings: command-line flags or a small YAML file, the same keys.

Safe by default: binds 127.0.0.1, no CORS, runtime adapter loading off, no
``trust_remote_code``, bounded bodies, queue and request time. The API key comes
from ``--api-key`` or, better (it does not show in the process list), the
``TUNEFORGE_API_KEY`` environment variable. Binding beyond this machine, or
loading adapters at runtime, without a key is refused at start
(:meth:`ServeSettings.check_safe`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

API_KEY_ENV = "TUNEFORGE_API_KEY"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServeSettingsError(ValueError):
    """A serve config or flag that cannot work; the message names the key."""


class ServeSettings(BaseModel):
    """Everything ``tuneforge serve`` needs; see docs/SERVE.md."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="base: embedded name, folder or hub id (default: the adapters' base)")
    served_name: str | None = Field(None, description="the base's `model` name in requests (default: its own name)")
    adapters: dict[str, str] = Field(
        default_factory=dict, description="name → adapter folder, run folder or full model folder"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_key: str | None = None
    max_prompt_tokens: int = Field(4096, ge=1)
    max_tokens_limit: int = Field(1024, ge=1, description="the most tokens one request may ask for")
    default_max_tokens: int = Field(256, ge=1, description="chat requests without max_tokens")
    queue_size: int = Field(64, ge=1, description="requests waiting beyond this get 429 with Retry-After")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="request bodies above this get 413")
    request_timeout_s: float = Field(
        300.0, gt=0, description="a request not answered within this (queue + decoding) ends: 504"
    )
    drain_timeout_s: int = Field(
        30, ge=0, description="on SIGTERM, seconds requests in flight may still take before they are cut"
    )
    max_batch_size: int = Field(8, ge=1)
    batch_window_ms: float = Field(10.0, ge=0, description="how long the worker waits to fill a batch")
    max_loaded_adapters: int = Field(8, ge=1, description="adapters kept in memory; least recently used unloaded")
    mixed_batches: bool = Field(True, description="rows for different LoRA adapters share one batch")
    adapter_dir: str | None = Field(
        None, description="runtime adapter loading over the API, only from this folder; off when unset"
    )
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; none by default")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: CUDA when available")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: fp32 on CPU, bf16 on CUDA"
    )
    trust_remote_code: bool = False

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def key(self) -> str | None:
        """The API key: the setting, else the environment variable; None: no authentication."""
        return self.api_key or os.environ.get(API_KEY_ENV) or None

    def exposed_without_key(self) -> bool:
        return self.host not in LOCAL_HOSTS and not self.key()

    def check_safe(self) -> None:
        """Refuse, in one line, settings that would let anyone who reaches the server use it unchecked."""
        if self.exposed_without_key():
            raise ServeSettingsError(
                f"host {self.host}: binding beyond this machine needs an API key (anyone who can reach it could "
                f"use the models); set {API_KEY_ENV} (or --api-key), or bind 127.0.0.1"
            )
        if self.adapter_dir and not self.key():
            raise ServeSettingsError(
                f"adapter_dir {self.adapter_dir}: loading adapters at runtime needs an API key (any local client "
                f"could load them); set {API_KEY_ENV} (or --api-key), or leave --adapter-dir out"
            )


def load_settings(path: str | Path | None, **flags) -> ServeSettings:
    """Settings from a YAML file (optional), then flags that were given (None: not given) on top."""
    data: dict = {}
    if path:
        file = Path(path).expanduser()
        if not file.exists():
            raise FileNotFoundError(f"{file}: no such serve config")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ServeSettingsError(f"{file}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ServeSettingsError(f"{file}: expected a mapping of settings (model:, adapters:, port: ...)")
    adapters = flags.pop("adapters", None)
    if adapters:
        data["adapters"] = {**(data.get("adapters") or {}), **adapters}
    data.update({key: value for key, value in flags.items() if value is not None})
    try:
        return ServeSettings(**data)
    except ValidationError as exc:
        where = f"{path}: " if path else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {_plain(e)}" for e in exc.errors())
        raise ServeSettingsError(f"{where}{problems}") from None


def _plain(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        known = ", ".join(ServeSettings.model_fields)
        return f"unknown setting (known: {known})"
    return error["msg"]
