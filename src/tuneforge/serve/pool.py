"""What the server holds in memory: one base model with named adapters, and full models beside it.

Every ``model`` name a request may ask for is a :class:`Target`: the base (by
its own name), an adapter on it, or a full model folder (a full fine-tune or a
merged model, loaded as a model of its own). Adapters are registered at start
(checked: a causal-LM adapter, trained on the served base, of a kind peft can
hold beside the others) and loaded on demand; beyond ``max_loaded`` the least
recently used one is unloaded. Loading checks the weights' shapes against the
base and refuses, with the reason, an adapter that does not fit.

Only the worker thread calls the loading and unloading methods, between
batches: no adapter state changes under a running request.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..adapters import config as C
from ..adapters.inference import (
    AdapterSetError,
    AdapterSpec,
    attach_one,
    canonical_model_name,
    check_compatible,
    describe,
    peft_type_of,
    run_rendering,
    tokenizer_folder,
)
from ..data.templates import PromptRendering

BASE_ROW = "__base__"  # peft's name for "no adapter" in a mixed batch


class UnknownModel(LookupError):
    """A request named a model this server does not serve."""


@dataclass
class Target:
    """What one served ``model`` name runs: a group's base (``adapter=None``) or one of its adapters."""

    name: str
    group: ModelGroup
    adapter: str | None
    tokenizer: object
    path: Path | None = None
    kind: str = "base"  # base | model | an adapter type
    rendering: PromptRendering = field(default_factory=PromptRendering)  # how its run rendered prompts in training


@dataclass
class ModelGroup:
    """One model in memory and the adapters that may be put on it."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    specs: dict[str, AdapterSpec] = field(default_factory=dict)
    max_loaded: int = 8
    loaded: OrderedDict = field(default_factory=OrderedDict)  # adapter name → None, least recently used first
    lock: threading.RLock = field(default_factory=threading.RLock)  # held by the worker for a whole batch
    path: Path | None = None  # a full model's folder (None: the base)

    @property
    def mixed_batches(self) -> bool:
        """Rows for different adapters can share a forward: peft does that for plain LoRA (not DoRA)."""
        return bool(self.specs) and all(_plain_lora(spec) for spec in self.specs.values())

    @property
    def prompt_learning(self) -> bool:
        """Soft prompts: peft's KV-cache path is wrong for them, so they decode without it, one at a time."""
        return any(spec.kind in C.SOFT_PROMPTS or spec.kind == "mam" for spec in self.specs.values())

    def ensure_loaded(self, names: list[str]) -> None:
        """Load every adapter of ``names`` not in memory, unloading the least recently used others.

        The new adapter loads before the old one goes (peft keeps at least one adapter on a model).
        """
        with self.lock:
            for name in names:
                if name in self.loaded:
                    self.loaded.move_to_end(name)
                    continue
                self.model = attach_one(self.model, self.specs[name], self.name)
                self.model.eval()
                self.loaded[name] = None
                self._evict(keep=set(names))

    def _evict(self, keep: set[str]) -> None:
        while len(self.loaded) > self.max_loaded:
            victim = next((n for n in self.loaded if n not in keep), None)
            if victim is None:
                return
            self.unload(victim)

    def unload(self, name: str) -> None:
        """Take an adapter off the model; the active one (peft's) moves to a loaded one."""
        with self.lock:
            if name not in self.loaded:
                return
            del self.loaded[name]
            with warnings.catch_warnings():  # "Adapter X was active which is now deleted": handled just below
                warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
                self.model.delete_adapter(name)
            if self.loaded and getattr(self.model, "active_adapter", None) not in self.loaded:
                self.model.set_adapter(next(reversed(self.loaded)), inference_mode=True)

    def adapter_bytes(self, name: str) -> int:
        """Bytes of the loaded adapter's own tensors (what loading it added)."""
        marker = f".{name}."
        return sum(p.numel() * p.element_size() for n, p in self.model.named_parameters() if marker in f"{n}.")


def _plain_lora(spec: AdapterSpec) -> bool:
    if peft_type_of(spec.path) != "LORA":
        return False
    config = json.loads((spec.path / "adapter_config.json").read_text())
    return not config.get("use_dora")


class ModelPool:
    """Every served name → its :class:`Target`; built once at start by :func:`build_pool`."""

    def __init__(self, base: ModelGroup, base_id: str, others: list[ModelGroup], base_name: str | None = None):
        self.base = base
        self.base_id = base_id
        self.base_name = base_name  # as loaded (embedded name, folder, hub id): what adapters must belong to
        self.tokenizers = TokenizerCache()
        self.groups = [base, *others]
        self.targets: dict[str, Target] = {
            base_id: Target(base_id, base, None, base.tokenizer, rendering=run_rendering(base_name))
        }
        self.lock = threading.Lock()
        for group in others:
            self.targets[group.name] = Target(
                group.name, group, None, group.tokenizer, group.path, kind="model", rendering=run_rendering(group.path)
            )

    def target(self, name: str) -> Target:
        with self.lock:
            if name not in self.targets:
                raise UnknownModel(name)
            return self.targets[name]

    def names(self) -> list[Target]:
        with self.lock:
            return list(self.targets.values())

    def register(self, spec: AdapterSpec, tokenizer, *, base_name: str | None) -> Target:
        """Add an adapter to the base group (not loaded yet), after checking it belongs there."""
        with self.lock:
            if spec.name in self.targets:
                raise AdapterSetError(f"--adapter {spec.name}: that name is already served; pick another")
            check_belongs(spec, base_name, self.base.specs)
            self.base.specs[spec.name] = spec
            target = Target(
                spec.name, self.base, spec.name, tokenizer, spec.path, spec.kind, rendering=run_rendering(spec.path)
            )
            self.targets[spec.name] = target
            return target

    def unregister(self, name: str) -> None:
        """Remove an adapter (runtime unloading); the base and full models stay."""
        with self.lock:
            target = self.targets.get(name)
            if target is None or target.adapter is None:
                raise UnknownModel(name)
            del self.targets[name]
        group = target.group
        with group.lock:
            group.specs.pop(name, None)
            group.unload(name)


def check_belongs(spec: AdapterSpec, base_name: str | None, others: dict[str, AdapterSpec]) -> None:
    """Refuse, with the reason, an adapter that is not a causal-LM adapter of the served base or cannot join ``others``."""
    check_compatible([*others.values(), spec], base_name, task="CAUSAL_LM")
    if spec.kind in C.SELECTIVE:
        raise AdapterSetError(f"--adapter {spec.name}: {spec.path} is a full model; serve it as its own model")
    if base_name and spec.base and canonical_model_name(spec.base) != canonical_model_name(base_name):
        raise AdapterSetError(
            f"--adapter {spec.name}: {spec.path} was trained on {spec.base}, not on the served base {base_name}; "
            f"serve it with --model {spec.base}"
        )


def full_model_folder(path: str | Path) -> Path | None:
    """The model folder ``path`` names when it is a full model (a run's ``model/`` or a merged folder), else None."""
    folder = Path(path).expanduser()
    for candidate in (folder / "model", folder):
        if (candidate / "config.json").exists() and not (candidate / "adapter_config.json").exists():
            return candidate
    return None


def build_pool(
    base_name: str | None,
    entries: dict[str, str],
    *,
    base_id: str | None = None,
    max_loaded: int = 8,
    trust_remote_code: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
) -> ModelPool:
    """Load the base (default: the adapters' base, else the embedded model) and register every entry.

    ``entries``: {name: adapter folder | run folder | full model folder}. Full models load now;
    every adapter is loaded once now, so one that does not fit fails at start; the last ``max_loaded``
    stay in memory, the others load again on first use.
    """
    from ..adapters.inference import AdapterSetError as _Refused
    from ..models.load import load_causal_lm, resolve_dtype

    def load_model(name: str | None) -> torch.nn.Module:
        model = load_causal_lm(name, dtype=resolve_dtype(dtype, device), trust_remote_code=trust_remote_code)
        return model.to(device).eval()

    adapters: dict[str, AdapterSpec] = {}
    fulls: dict[str, Path] = {}
    for name, path in entries.items():
        folder = full_model_folder(path)
        if folder is not None:
            fulls[name] = folder
        else:
            adapters[name] = describe(name, path)
    if max_loaded < 1:
        raise _Refused("max_loaded_adapters must be at least 1")
    first = next(iter(adapters.values()), None)
    base_name = base_name or (first.base if first else None)
    base_model = load_model(base_name)
    tokenizers = TokenizerCache(trust_remote_code)
    base_tokenizer = tokenizers.get(
        tokenizer_folder(first.path) if first and tokenizer_folder(first.path) else base_name
    )
    base_id = base_id or served_base_id(base_name)
    group = ModelGroup(base_id, base_model, base_tokenizer, max_loaded=max_loaded)
    others = []
    for name, folder in fulls.items():
        model = load_model(str(folder))
        others.append(ModelGroup(name, model, tokenizers.get(folder), path=folder))
    pool = ModelPool(group, base_id, others, base_name)
    pool.tokenizers = tokenizers
    for spec in adapters.values():
        pool.register(spec, tokenizers.get(tokenizer_folder(spec.path) or base_name), base_name=base_name)
    for name in adapters:  # every adapter once, so one that does not fit fails now; the last max_loaded stay
        group.ensure_loaded([name])
    return pool


class TokenizerCache:
    """One tokenizer object per distinct set of tokenizer files: adapters saved with the base's share it.

    (A tokenizer is ~14 MB in memory, four times a rank-16 LoRA on SmolLM2's q/v.)
    """

    FILES = (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "tokenizer.model",
    )

    def __init__(self, trust_remote_code: bool = False):
        self.trust_remote_code = trust_remote_code
        self.loaded: dict[str, object] = {}

    def get(self, source: str | Path | None):
        from ..models.load import load_tokenizer

        key = self._key(source)
        if key not in self.loaded:
            self.loaded[key] = load_tokenizer(str(source) if source else None, trust_remote_code=self.trust_remote_code)
        return self.loaded[key]

    def _key(self, source: str | Path | None) -> str:
        import hashlib

        folder = Path(source).expanduser() if source else None
        if folder is None or not folder.is_dir():
            return f"name:{source}"
        digest = hashlib.sha256()
        for name in self.FILES:
            if (folder / name).exists():
                digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
        return f"files:{digest.hexdigest()}"


def served_base_id(base_name: str | None) -> str:
    """The base model's served name: the embedded name, or the model folder's / hub id's last part."""
    from ..models.embedded import ALIASES, DEFAULT_MODEL

    name = base_name or DEFAULT_MODEL
    name = ALIASES.get(name, name)
    return Path(name).name if Path(name).expanduser().exists() else name
