"""Many task adapters on one base model: load the base once, switch adapters per call.

:class:`AdapterSet` loads a base model and every named adapter onto it (peft
``PeftModel.from_pretrained(..., adapter_name=)`` for the first,
``model.load_adapter(path, adapter_name=)`` for the rest) and switches between
them with peft's ``set_adapter``. What peft cannot hold in one model is refused
up front with the reason: adapters trained on different bases, soft prompts
mixed with weight adapters, several peft types at once, and our bottleneck /
MAM adapters (wired into the base's layers) beside any other adapter.

Folders given here may be an adapter folder or a run folder (``runs/NAME``,
resolved to its ``adapter/``). The base an adapter belongs to is, in order: the
run's ``config.yaml`` ``model.name`` (an embedded name resolves on any
machine), the name in ``classifier.json`` / ``tuneforge_embedding.json``, then
the path peft recorded (``base_model_name_or_path``).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.templates import PromptRendering
from . import adapter_base_name, adapter_type_of, is_adapter_folder
from . import config as C

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]+$")
SINGLE_NAME = "default"  # the name of a lone unnamed --adapter, as peft calls it
WIRED_IN = ("bottleneck", "mam")  # ours: changes to the base's layers that peft's set_adapter cannot switch
CLASSIFIER_INFO = "classifier.json"
EMBEDDING_INFO = "tuneforge_embedding.json"


class AdapterSetError(ValueError):
    """A set of adapters that cannot be loaded together; the message names the argument and the fix."""


@dataclass(frozen=True)
class AdapterSpec:
    """One adapter of a set: its name, folder, type and the base model it was trained on."""

    name: str
    path: Path
    kind: str
    base: str | None


# ---------------------------------------------------------------------------- arguments


def parse_named_paths(values: list[str], *, flag: str = "--adapter", lone: str | None = SINGLE_NAME) -> dict[str, str]:
    """``name=path`` or bare ``path`` values → {name: path}, in the order given.

    A lone unnamed path is called ``lone`` (default: ``default``, peft's name; None: as below);
    other unnamed paths are named after their run folder (``runs/sql/adapter`` → ``sql``).
    """
    named: list[tuple[str | None, str]] = [_split_named(value, flag) for value in values]
    out: dict[str, str] = {}
    for name, path in named:
        if name is None:
            name = lone if len(named) == 1 and lone else derived_name(path)
        if name in out:
            raise AdapterSetError(
                f"{flag}: the name '{name}' is given twice ({out[name]} and {path}); "
                "name each adapter once, as name=path"
            )
        out[name] = path
    return out


def _split_named(value: str, flag: str) -> tuple[str | None, str]:
    if "=" in value and not Path(value).expanduser().exists():
        name, path = value.split("=", 1)
        if not NAME_PATTERN.match(name):
            raise AdapterSetError(
                f"{flag} {value}: the name '{name}' may use letters, digits, '_', '.' and '-' only; write name=path"
            )
        if not path:
            raise AdapterSetError(f"{flag} {value}: no path after '='; write name=path")
        return name, path
    if not value:
        raise AdapterSetError(f"{flag}: empty value; give an adapter folder or name=path")
    return None, value


def derived_name(path: str | Path) -> str:
    """A name for an unnamed adapter: its run's folder name (``runs/sql/adapter`` → ``sql``)."""
    path = Path(path).expanduser()
    name = path.parent.name if path.name in ("adapter", "model") and path.parent.name else path.name
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "adapter"
    return name


# ---------------------------------------------------------------------------- folders


def resolve_adapter_folder(path: str | Path, *, label: str = "--adapter") -> Path:
    """The adapter folder ``path`` names: itself, or a run folder's ``adapter/``.

    Raises :class:`AdapterSetError` for a full-model run (no adapter to load)
    and :class:`FileNotFoundError` for a missing path.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"{label}: {folder} does not exist; give an adapter folder or a run folder (runs/NAME)")
    if is_adapter_folder(folder):
        return folder
    if is_adapter_folder(folder / "adapter"):
        return folder / "adapter"
    full = folder / "model" if (folder / "model" / "config.json").exists() else folder
    if (full / "config.json").exists():
        raise AdapterSetError(f"{label}: {folder} is a full model, not an adapter; load it with --model {full}")
    raise AdapterSetError(
        f"{label}: {folder} holds no adapter (no adapter_config.json, no adapter/ folder); "
        "give runs/NAME or runs/NAME/adapter"
    )


def run_base_name(folder: str | Path) -> str | None:
    """The base model an adapter folder belongs to (see the module docstring for the order)."""
    folder = Path(folder)
    if folder.name == "adapter":
        model = _run_config(folder).get("model")
        name = model.get("name") if isinstance(model, dict) else None
        if name:
            return name
    for info_file in (CLASSIFIER_INFO, EMBEDDING_INFO):
        if (folder / info_file).exists():
            name = json.loads((folder / info_file).read_text()).get("model_name")
            if name:
                return name
    return adapter_base_name(folder)


def run_rendering(folder: str | Path | None) -> PromptRendering:
    """How the run that saved ``folder`` (its ``adapter/`` or ``model/``) rendered prompts in training.

    From the run's saved ``config.yaml``: ``data.template``, ``data.system_prompt``, and whether
    plain prompts were raw text (every data format but ``chat``; DPO / PPO prompts have no format).
    A merged model carries its run's settings in ``merged_from.json`` (``tuneforge merge`` writes
    them). A folder outside a run (a base model, a bare adapter) gets the default: the tokenizer's template.
    """
    if folder is None:
        return PromptRendering()
    recorded = _merged_rendering(Path(folder))
    if recorded is not None:
        return recorded
    data = _run_config(Path(folder)).get("data")
    if not isinstance(data, dict):
        return PromptRendering()
    template = data.get("template", "auto")
    return PromptRendering(
        template=template if template in ("auto", "chat", "plain") else "auto",
        system_prompt=data.get("system_prompt") or None,
        text_prompts=data.get("format") != "chat",
    )


def _merged_rendering(folder: Path) -> PromptRendering | None:
    """The rendering settings ``tuneforge merge`` recorded in a merged folder's merged_from.json."""
    path = folder.expanduser() / "merged_from.json"
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text()).get("rendering")
    except (json.JSONDecodeError, AttributeError):
        return None
    if not isinstance(recorded, dict):
        return None
    known = {k: recorded[k] for k in ("template", "system_prompt", "text_prompts") if k in recorded}
    return PromptRendering(**known)


def _run_config(folder: Path) -> dict:
    """The saved config of the run whose output ``folder`` is (``runs/NAME/adapter`` or ``/model``), else {}."""
    import yaml

    path = folder.expanduser().parent / "config.yaml"
    if folder.name not in ("adapter", "model") or not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) and "method" in data else {}  # a run's config always names its method


def describe(name: str, path: str | Path, *, label: str = "--adapter") -> AdapterSpec:
    """An :class:`AdapterSpec` for one ``name=path`` argument."""
    folder = resolve_adapter_folder(path, label=f"{label} {name}")
    kind = adapter_type_of(folder)
    if kind is None or kind in C.SELECTIVE:
        raise AdapterSetError(f"{label} {name}: {folder} is not an adapter folder")
    return AdapterSpec(name=name, path=folder, kind=kind, base=run_base_name(folder))


def peft_type_of(folder: Path) -> str | None:
    """peft's ``peft_type`` (``LORA``, ``PROMPT_TUNING``…) recorded in ``adapter_config.json``."""
    config = folder / "adapter_config.json"
    return json.loads(config.read_text()).get("peft_type") if config.exists() else None


def task_of(folder: Path) -> str | None:
    """peft's task type of an adapter folder (``CAUSAL_LM``, ``SEQ_CLS``, ``FEATURE_EXTRACTION``); None: unrecorded."""
    if (folder / CLASSIFIER_INFO).exists():
        return "SEQ_CLS"
    if (folder / EMBEDDING_INFO).exists():
        return "FEATURE_EXTRACTION"
    config = folder / "adapter_config.json"
    return json.loads(config.read_text()).get("task_type") if config.exists() else None


TASK_WORDS = {
    "CAUSAL_LM": "a causal-LM adapter",
    "SEQ_CLS": "a classifier or reward model (use `tuneforge predict` / `tuneforge score`)",
    "FEATURE_EXTRACTION": "an embedding model (use `tuneforge embed`)",
}


def tokenizer_folder(folder: Path) -> Path | None:
    """``folder`` if it holds tokenizer files (a run's adapter does), else None."""
    return folder if (folder / "tokenizer_config.json").exists() else None


# ---------------------------------------------------------------------------- compatibility


def check_compatible(specs: list[AdapterSpec], base_override: str | None = None, task: str | None = None) -> None:
    """Refuse, with the reason, a set of adapters one peft model cannot hold (or not for ``task``)."""
    _check_tasks(specs, task)
    if len(specs) > 1:
        _check_kinds(specs)
    _check_same_base(specs, base_override)


def _check_tasks(specs: list[AdapterSpec], task: str | None) -> None:
    tasks = {s.name: task_of(s.path) for s in specs}
    for spec in specs:
        found = tasks[spec.name]
        if task and found and found != task:
            what, wanted = (TASK_WORDS.get(found, f"for task {found}"), TASK_WORDS.get(task, f"for task {task}"))
            raise AdapterSetError(f"--adapter {spec.name}: {spec.path} is {what}, not {wanted}")
    known = {t for t in tasks.values() if t}
    if len(known) > 1:
        shown = ", ".join(f"{name} ({t})" for name, t in tasks.items() if t)
        raise AdapterSetError(f"--adapter: these adapters are for different tasks ({shown}); one model serves one task")


def _check_kinds(specs: list[AdapterSpec]) -> None:
    for spec in specs:
        if spec.kind in WIRED_IN:
            raise AdapterSetError(
                f"--adapter {spec.name}: {spec.kind} adapters are wired into the base model's layers and cannot share "
                f"a model with other adapters; load {spec.path} on its own"
            )
    soft = [s for s in specs if s.kind in C.SOFT_PROMPTS]
    if soft and len(soft) < len(specs):
        weights = [s for s in specs if s.kind not in C.SOFT_PROMPTS]
        raise AdapterSetError(
            f"--adapter: {_listing(soft)} are soft prompts and {_listing(weights)} are weight adapters; peft cannot "
            "hold both kinds in one model: use them in separate commands"
        )
    types = {s.name: peft_type_of(s.path) for s in specs}
    if len(set(types.values())) > 1:
        raise AdapterSetError(
            f"--adapter: peft holds one adapter type per model, and these differ ({_listing(specs)}); "
            "use each type in its own command"
        )


def _listing(specs: list[AdapterSpec]) -> str:
    return ", ".join(f"{s.name} ({s.kind})" for s in specs)


def _check_same_base(specs: list[AdapterSpec], base_override: str | None) -> None:
    if not specs:
        return
    if base_override is None and specs[0].base is None:
        raise AdapterSetError(f"--model: {specs[0].path} records no base model; name it with --model")
    bases = {s.name: s.base for s in specs if s.base}
    canonical = {name: canonical_model_name(base) for name, base in bases.items()}
    if base_override is None and len(set(canonical.values())) > 1:
        shown = "; ".join(f"{name}: {bases[name]}" for name in canonical)
        raise AdapterSetError(
            f"--adapter: the adapters were trained on different base models ({shown}); one model serves adapters "
            "of one base: use them in separate commands (or pass --model if these are the same model)"
        )
    target = _hidden_size(base_override) if base_override else None
    sizes = {name: _hidden_size(base) for name, base in bases.items()}
    if target is None:
        known = [size for size in sizes.values() if size is not None]
        target = known[0] if known else None
    for name, size in sizes.items():
        if target is not None and size is not None and size != target:
            raise AdapterSetError(
                f"--adapter {name}: trained on {bases[name]} (hidden size {size}), which does not fit a base of hidden "
                f"size {target}; use adapters of one base model together"
            )


def canonical_model_name(name: str) -> str:
    """One spelling per model: embedded names (and their cache folders) by name, folders by resolved path."""
    from ..models.embedded import ALIASES, EMBEDDED_MODELS, converted_dir

    if name in EMBEDDED_MODELS or name in ALIASES:
        return ALIASES.get(name, name)
    path = Path(name).expanduser()
    if not path.exists():
        return name
    resolved = path.resolve()
    for model in EMBEDDED_MODELS.values():
        if converted_dir(model).resolve() == resolved:
            return model.name
    return str(resolved)


def _hidden_size(name: str | None) -> int | None:
    """``hidden_size`` from a local model folder's config.json; None where it cannot be read cheaply."""
    if not name:
        return None
    config = Path(name).expanduser() / "config.json"
    if not config.exists():
        return None
    data = json.loads(config.read_text())
    return data.get("hidden_size") or data.get("d_model") or data.get("n_embd")


# ---------------------------------------------------------------------------- loading


def base_loader_for(folder: Path | None) -> Callable[..., torch.nn.Module]:
    """How to load the base an adapter was trained on: the loader of the method that wrote the folder
    (``registry.inference_loader_for``: a classifier, an encoder …), else a causal LM."""
    if folder is None:
        from ..models.load import load_causal_lm

        return load_causal_lm
    from ..registry import inference_loader_for

    return inference_loader_for(folder)


def attach_all(model: torch.nn.Module, specs: list[AdapterSpec], base_name: str) -> torch.nn.Module:
    """Put every adapter of ``specs`` on ``model`` under its own name; the first is active."""
    for spec in specs:
        model = attach_one(model, spec, base_name)
    return model


def attach_one(model: torch.nn.Module, spec: AdapterSpec, base_name: str) -> torch.nn.Module:
    """Put one adapter on ``model`` (a plain base or a peft model already holding others); returns the model.

    Weights of other shapes than the base's are refused with the reason (:class:`AdapterSetError`).
    """
    import warnings

    from . import is_peft_model, load_adapter

    try:
        with warnings.catch_warnings():
            # peft 0.21 warns for names inside its prefix ("a" in "lora_") although loading is exact.
            warnings.filterwarnings("ignore", message="Adapter name .* should not be contained in the prefix")
            if not is_peft_model(model):
                return load_adapter(model, spec.path, adapter_name=spec.name)
            model.load_adapter(str(spec.path), adapter_name=spec.name, is_trainable=False)
            return model
    except RuntimeError as exc:
        if "size mismatch" not in str(exc):
            raise
        raise AdapterSetError(
            f"--adapter {spec.name}: {spec.path} does not fit the base {base_name}: its weights "
            "have other shapes; give the base it was trained on with --model"
        ) from None


class AdapterSet:
    """A base model with named adapters on it, one active at a time.

    >>> adapters = AdapterSet.load(None, {"sql": "runs/sql", "chat": "runs/chat"})
    >>> with adapters.use("sql") as model:
    ...     model.generate(...)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        specs: list[AdapterSpec],
        tokenizers: dict[str, object],
        base_tokenizer,
        base_name: str | None,
        renderings: dict[str, PromptRendering] | None = None,
        base_rendering: PromptRendering | None = None,
    ):
        self.model = model
        self.specs = {spec.name: spec for spec in specs}
        self.tokenizers = tokenizers
        self.base_tokenizer = base_tokenizer
        self.base_name = base_name
        # How each adapter's run (and the base, when it is a run's model/) rendered prompts in training.
        self.renderings = renderings or {}
        self.base_rendering = base_rendering or PromptRendering()
        self.active: str | None = specs[0].name if specs else None

    @classmethod
    def load(
        cls,
        base_name: str | None,
        adapters: Mapping[str, str | Path],
        *,
        trust_remote_code: bool = False,
        loader: Callable[..., torch.nn.Module] | None = None,
        task: str | None = None,
    ) -> AdapterSet:
        """Load ``base_name`` (default: the first adapter's base) once and every adapter onto it.

        ``adapters``: {name: adapter or run folder}, in order; may be empty (the plain base model).
        ``loader(name, trust_remote_code=)``: how to load the base; default from the first adapter's folder.
        ``task``: refuse adapters recorded for another peft task type (e.g. ``CAUSAL_LM`` for generation).
        """
        from ..models.load import load_tokenizer

        specs = [describe(name, path) for name, path in adapters.items()]
        check_compatible(specs, base_name, task)
        base_name = base_name or (specs[0].base if specs else None)
        tokenizers = {
            s.name: load_tokenizer(str(tokenizer_folder(s.path) or base_name), trust_remote_code=trust_remote_code)
            for s in specs
        }
        base_tokenizer = (
            next(iter(tokenizers.values()))
            if tokenizers
            else load_tokenizer(base_name, trust_remote_code=trust_remote_code)
        )
        loader = loader or base_loader_for(specs[0].path if specs else None)
        model = loader(base_name, trust_remote_code=trust_remote_code)
        model = attach_all(model, specs, base_name or "")
        model.eval()
        renderings = {s.name: run_rendering(s.path) for s in specs}
        return cls(
            model,
            specs,
            tokenizers,
            base_tokenizer,
            base_name,
            renderings,
            run_rendering(base_name) if base_name else None,
        )

    @property
    def names(self) -> list[str]:
        """The adapters' names, in the order they were given."""
        return list(self.specs)

    @property
    def tokenizer(self):
        """The active adapter's tokenizer (its own chat template), else the first adapter's / the base's."""
        return self.tokenizers.get(self.active, self.base_tokenizer) if self.active else self.base_tokenizer

    @property
    def rendering(self) -> PromptRendering:
        """How the active adapter's run rendered prompts (``data.run_prompt.render_run_prompt``), else the base's."""
        return self.renderings.get(self.active, self.base_rendering) if self.active else self.base_rendering

    def check_name(self, name: str) -> str:
        """``name`` if it is one of the set, else an :class:`AdapterSetError` listing the names."""
        if name not in self.specs:
            known = ", ".join(self.names) or "none (no --adapter given)"
            raise AdapterSetError(f"--use {name}: no adapter of that name; loaded: {known}")
        return name

    def activate(self, name: str) -> torch.nn.Module:
        """Make ``name`` the active adapter (for the rest of the session); returns the model."""
        from . import is_peft_model

        self.check_name(name)
        if is_peft_model(self.model) and name in self.model.peft_config:
            self.model.set_adapter(name, inference_mode=True)
        self.active = name
        return self.model

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[torch.nn.Module]:
        """Inside, ``name`` is the active adapter; the one active before comes back after."""
        before = self.active
        self.activate(name)
        try:
            yield self.model
        finally:
            if before is not None and before != name:
                self.activate(before)

    @contextlib.contextmanager
    def base(self) -> Iterator[torch.nn.Module]:
        """Inside, the model computes what the base model computes (every adapter switched off)."""
        if not self.specs:
            yield self.model
            return
        if any(spec.kind in WIRED_IN for spec in self.specs.values()):
            from . import adapters_disabled

            with adapters_disabled(self.model):
                yield self.model
            return
        with self.model.disable_adapter():
            yield self.model

    def describe(self, name: str | None) -> str:
        """``name (path)`` for messages and table titles; the base for None."""
        if name is None:
            return f"base ({self.base_name or 'default model'})"
        return f"{name} ({self.specs[name].path})"
