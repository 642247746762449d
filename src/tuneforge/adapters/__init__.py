"""Parameter-efficient fine-tuning: attach, load, disable, count.

Every ``adapter.type`` goes through :func:`attach_adapter`, which returns an
:class:`Adapted`: the module to train plus what the runner needs to know about
it (does it save a small adapter folder or a full model, does it need a hook
after each optimizer step). peft does the work wherever it implements the
method (``peft_bridge.py``); bottleneck adapters and the MAM hybrid are ours
(``bottleneck.py``); BitFit and partial fine-tuning select base parameters
(``selective.py``).

Folder formats written here (all safetensors):
- peft types: a standard peft folder (``adapter_config.json`` +
  ``adapter_model.safetensors``); plain ``PeftModel.from_pretrained`` loads it.
- ``bottleneck``: ``tuneforge_adapter.json`` + ``adapter_model.safetensors``.
- ``mam``: the peft prefix-tuning folder plus ``tuneforge_adapter.json`` and
  ``bottleneck_model.safetensors`` (the parallel adapter).
- selective (``bitfit``, ``partial``): a full model folder plus
  ``trained_parameters.json``.

Importing this package does not import torch (it is needed only once a model
is adapted or loaded), so ``adapters.config`` stays as light as the config
classes it holds; ``tests/test_torch_free.py`` checks it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import config as C

if TYPE_CHECKING:  # torch only in annotations (see the docstring's last paragraph)
    import torch

TUNEFORGE_FILE = "tuneforge_adapter.json"
MAM_WEIGHTS = "bottleneck_model.safetensors"
TRAINED_NAMES_FILE = "trained_parameters.json"


class AdapterLoadError(ValueError):
    pass


@dataclass
class Adapted:
    """What :func:`attach_adapter` returns."""

    model: torch.nn.Module  # the module to train (a PeftModel, a BottleneckAdapterModel, or the base itself)
    adapter_type: str
    saves_adapter: bool = True  # False: selective methods, whose output is a full model folder
    saver: object | None = None  # has save_pretrained(dir, safe_serialization=True); None for full folders
    after_optimizer_step: Callable[[int], None] | None = None  # AdaLoRA's budget allocation (needs the gradients)
    trained_names: list[str] = field(default_factory=list)  # selective methods: the parameters trained

    def save(self, output_dir: Path) -> None:
        """Write what the method's own save did not (MAM's bottleneck half, selective's name list)."""
        output_dir = Path(output_dir)
        if isinstance(self.saver, _ConvertingSaver):  # the method saved the residual-base form; convert it
            self.saver.save_pretrained(output_dir)
        if self.adapter_type == "mam":
            _save_mam_extras(self.model, output_dir)
        if self.trained_names:
            (output_dir / TRAINED_NAMES_FILE).write_text(
                json.dumps({"adapter_type": self.adapter_type, "trained_parameters": self.trained_names}, indent=1)
            )


class _MamSaver:
    """Checkpoints write ``adapter_model.save_pretrained(dir)``: for MAM that is peft's half plus ours."""

    def __init__(self, model):
        self.model = model

    def save_pretrained(self, path, safe_serialization: bool = True, **kwargs):
        self.model.save_pretrained(path, safe_serialization=True, **kwargs)
        _save_mam_extras(self.model, Path(path))


class _ConvertingSaver:
    """Save PiSSA / OLoRA adapters as plain LoRA deltas against the *original* base.

    Both inits move the principal part of each weight into A·B and subtract it
    from the base weight in memory, so the trained A·B only makes sense on that
    residual base. peft converts them at save time to a rank-2r LoRA that
    applies to the untouched base (``path_initial_model_for_weight_conversion``);
    that needs the adapter as it was at init, kept here in a temporary folder.
    """

    def __init__(self, model):
        import tempfile

        self.model = model
        self._initial = tempfile.TemporaryDirectory(prefix="tuneforge-init-adapter-")
        config = model.peft_config["default"]
        init = config.init_lora_weights
        config.init_lora_weights = True  # peft's recipe: the saved init must not re-run the decomposition
        model.save_pretrained(self._initial.name, safe_serialization=True)
        config.init_lora_weights = init

    def save_pretrained(self, path, safe_serialization: bool = True, **kwargs):
        # peft's conversion loads the initial adapter, which puts the model in eval mode: a
        # mid-run checkpoint would otherwise switch off dropout and activation checkpointing.
        training = self.model.training
        self.model.save_pretrained(
            path, safe_serialization=True, path_initial_model_for_weight_conversion=self._initial.name, **kwargs
        )
        self.model.train(training)


def attach_adapter(
    model: torch.nn.Module,
    cfg,
    *,
    task_type: str = "CAUSAL_LM",
    total_steps: int | None = None,
    tokenizer_path: str | None = None,
    gradient_checkpointing: bool = False,
) -> Adapted:
    """Adapt ``model`` (changed in place) as ``cfg`` (an ``adapter:`` section) says."""
    from ..models.load import is_quantized
    from .peft_bridge import peft_config

    kind = cfg.type
    if is_quantized(model):
        # QLoRA's preparation: norms (and other non-quantized weights) in fp32, inputs that carry
        # gradients so checkpointed blocks still backpropagate into the adapters.
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if kind in C.SELECTIVE:
        from .selective import apply_selection

        names = apply_selection(model, cfg, also_train=_heads_to_save(task_type))
        return Adapted(model=model, adapter_type=kind, saves_adapter=False, trained_names=names)
    if kind == "bottleneck":
        from .bottleneck import BottleneckAdapterModel

        present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        heads = [head for head in _heads_to_save(task_type) if head in present]
        wrapped = BottleneckAdapterModel(model, cfg, modules_to_save=heads)
        return Adapted(model=wrapped, adapter_type=kind, saver=wrapped)
    from peft import get_peft_model

    if kind == "mam":
        from .bottleneck import inject_bottleneck

        parallel = _mam_bottleneck(cfg)
        inject_bottleneck(model, parallel)
    pconf = peft_config(cfg, task_type=task_type, total_steps=total_steps, tokenizer_path=tokenizer_path)
    peft_model = get_peft_model(model, pconf)
    if kind in ("prefix_tuning", "mam"):
        from .prefix_init import init_prefix_from_tokens, real_token_ids, starts_from_real_tokens

        if starts_from_real_tokens(cfg):
            init_prefix_from_tokens(peft_model, real_token_ids(model, cfg.num_virtual_tokens))
    if kind == "mam":  # peft froze the whole base for prompt learning; the parallel adapter trains too
        peft_model.__dict__["_tuneforge_mam"] = parallel.model_dump(exclude={"type", "init"})
        for name, param in peft_model.named_parameters():
            if ".adapter." in name:
                param.requires_grad_(True)
        return Adapted(model=peft_model, adapter_type=kind, saver=_MamSaver(peft_model))
    if kind == "lora" and cfg.init in ("pissa", "olora"):
        return Adapted(model=peft_model, adapter_type=kind, saver=_ConvertingSaver(peft_model))
    hook = None
    if kind == "adalora":

        def allocate(step: int, _model=peft_model) -> None:
            _model.base_model.update_and_allocate(step)

        hook = allocate
    return Adapted(model=peft_model, adapter_type=kind, saver=peft_model, after_optimizer_step=hook)


def _heads_to_save(task_type: str) -> list[str]:
    # What peft's SEQ_CLS task type puts in modules_to_save: the new label head (named either way).
    return ["score", "classifier"] if task_type == "SEQ_CLS" else []


def _mam_bottleneck(cfg) -> C.BottleneckConfig:
    return C.BottleneckConfig(
        type="bottleneck", placement="parallel", size=cfg.size, activation=cfg.activation, scaling=cfg.scaling
    )


def _save_mam_extras(peft_model, output_dir: Path) -> None:
    from safetensors.torch import save_file

    from .bottleneck import bottleneck_state_dict

    base = peft_model.get_base_model()
    state = {k: v.detach().cpu().contiguous() for k, v in bottleneck_state_dict(base).items()}
    save_file(state, str(output_dir / MAM_WEIGHTS))
    cfg = peft_model.peft_config["default"]
    (output_dir / TUNEFORGE_FILE).write_text(
        json.dumps(
            {
                "type": "mam",
                "format_version": 1,
                "parallel_adapter": _read_mam_settings(peft_model),
                "base_model_name_or_path": cfg.base_model_name_or_path,
                "note": "peft loads the prefix half only; load both with tuneforge.adapters.load_adapter(base, folder)",
            },
            indent=1,
        )
    )


def _read_mam_settings(peft_model) -> dict:
    settings = peft_model.__dict__.get("_tuneforge_mam")
    if settings is None:
        raise AdapterLoadError("this model has no MAM parallel-adapter settings recorded")
    return settings


# ---------------------------------------------------------------------------- loading


def adapter_type_of(folder: str | Path) -> str | None:
    """``lora``, ``prefix_tuning``, ``bottleneck``, ``mam``, ``bitfit``… for an output folder; None if unknown."""
    folder = Path(folder)
    if (folder / TUNEFORGE_FILE).exists():
        return json.loads((folder / TUNEFORGE_FILE).read_text()).get("type")
    if (folder / TRAINED_NAMES_FILE).exists():
        return json.loads((folder / TRAINED_NAMES_FILE).read_text()).get("adapter_type")
    if (folder / "adapter_config.json").exists():
        return _PEFT_TYPES.get(json.loads((folder / "adapter_config.json").read_text()).get("peft_type"), "peft")
    return None


_PEFT_TYPES = {
    "LORA": "lora",
    "LOHA": "loha",
    "LOKR": "lokr",
    "VERA": "vera",
    "ADALORA": "adalora",
    "OFT": "oft",
    "IA3": "ia3",
    "PROMPT_TUNING": "prompt_tuning",
    "PREFIX_TUNING": "prefix_tuning",
    "P_TUNING": "p_tuning",
    "LN_TUNING": "layernorm",
}


def is_adapter_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "adapter_config.json").exists() or (folder / TUNEFORGE_FILE).exists()


def adapter_base_name(folder: str | Path) -> str | None:
    """The base model an adapter folder records (peft's ``base_model_name_or_path`` or ours)."""
    folder = Path(folder)
    for name in ("adapter_config.json", TUNEFORGE_FILE):
        if (folder / name).exists():
            value = json.loads((folder / name).read_text()).get("base_model_name_or_path")
            if value:
                return value
    return None


def load_adapter(
    base: torch.nn.Module, folder: str | Path, *, adapter_name: str = "default", is_trainable: bool = False
) -> torch.nn.Module:
    """Put the adapter saved in ``folder`` on ``base`` (changed in place); returns the adapted model.

    Handles peft folders (any type), our bottleneck folders and MAM. Raises
    :class:`AdapterLoadError` with the reason when the folder is not an adapter.
    """
    folder = Path(folder)
    kind = adapter_type_of(folder)
    if kind is None:
        raise AdapterLoadError(f"{folder}: not an adapter folder (no adapter_config.json or {TUNEFORGE_FILE})")
    if kind == "bottleneck":
        from .bottleneck import BottleneckAdapterModel

        return BottleneckAdapterModel.from_pretrained(base, folder, is_trainable=is_trainable)
    from peft import PeftModel

    if kind == "mam":
        from safetensors.torch import load_file

        from .bottleneck import inject_bottleneck, load_bottleneck_state

        info = json.loads((folder / TUNEFORGE_FILE).read_text())
        inject_bottleneck(base, C.BottleneckConfig(type="bottleneck", **info["parallel_adapter"]))
        load_bottleneck_state(base, load_file(str(folder / MAM_WEIGHTS)))
        model = PeftModel.from_pretrained(base, str(folder), adapter_name=adapter_name, is_trainable=is_trainable)
        model.__dict__["_tuneforge_mam"] = info["parallel_adapter"]
        for name, param in model.named_parameters():
            if ".adapter." in name:
                param.requires_grad_(is_trainable)
        return model
    return PeftModel.from_pretrained(base, str(folder), adapter_name=adapter_name, is_trainable=is_trainable)


@contextlib.contextmanager
def adapters_disabled(model: torch.nn.Module):
    """Inside, ``model`` computes what its base computes: peft adapters and ours switched off."""
    from .bottleneck import bottleneck_disabled

    with contextlib.ExitStack() as stack:
        if hasattr(model, "disable_adapter"):
            stack.enter_context(model.disable_adapter())
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        stack.enter_context(bottleneck_disabled(inner))
        yield model


def is_prompt_learning(model: torch.nn.Module) -> bool:
    """A peft model whose active adapter is a soft prompt / prefix (its forward must run through peft)."""
    config = getattr(model, "active_peft_config", None)
    return bool(getattr(config, "is_prompt_learning", False))


def is_peft_model(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)
