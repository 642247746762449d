"""Bottleneck adapters, ours: peft does not implement them.

A small two-layer network ``W_up f(W_down ·)`` added to a sublayer's output
(Houlsby et al. 2019, "Parameter-Efficient Transfer Learning for NLP", arXiv
1902.00751), in the two placements that LLM-Adapters (Hu et al. 2023, arXiv
2304.01933) found best on Llama-family models; He et al. 2022 (arXiv 2110.04366)
unify both as a modification of the hidden state:

- series   (after the MLP):  ``m = MLP(x);  h = m + s·W_up drop(f(W_down m))``
- parallel (beside the MLP): ``h = MLP(x) + s·W_up drop(f(W_down x))``

With ``init: identity`` W_up is zero, so the adapted model starts exactly at the
base model. The adapter is saved as ``tuneforge_adapter.json`` (settings, base
model record) plus ``adapter_model.safetensors`` (its weights only).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tuneforge.adapters.config import BottleneckConfig

ADAPTER_FILE = "tuneforge_adapter.json"
WEIGHTS_FILE = "adapter_model.safetensors"
FORMAT_VERSION = 1
_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
_README = """# tuneforge bottleneck adapter

A {placement} bottleneck adapter (size {size}) on `{base}`, written by tuneforge.
It is **not** a peft adapter: plain `peft.PeftModel.from_pretrained` cannot load it.
Load it onto the same base model with

```python
from tuneforge.adapters import load_adapter
model = load_adapter(base_model, "{folder}")
# or: from tuneforge.adapters.bottleneck import BottleneckAdapterModel
#     model = BottleneckAdapterModel.from_pretrained(base_model, "{folder}")
```

It cannot be merged into the base weights (there is a non-linearity between its two matrices).
"""


class BottleneckMergeError(ValueError):
    """A bottleneck adapter cannot be folded into the base model's weights."""


class BottleneckAdapter(nn.Module):
    """``s · W_up drop(f(W_down z))``: the adapter's contribution, added to the wrapped module's output."""

    def __init__(self, width: int, cfg: BottleneckConfig, *, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.down = nn.Linear(width, cfg.size, bias=True, dtype=dtype, device=device)  # nn.Linear's kaiming init
        self.up = nn.Linear(cfg.size, width, bias=True, dtype=dtype, device=device)
        self.act = _ACTIVATIONS[cfg.activation]()
        self.drop = nn.Dropout(cfg.dropout)
        self.scaling = cfg.scaling
        if cfg.init == "identity":
            # W_up = 0 makes the contribution exactly 0 while W_down stays random, so gradients
            # reach W_up from the first step (Houlsby et al. §2.1, near-identity init).
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.drop(self.act(self.down(z.to(self.down.weight.dtype))))) * self.scaling


class BottleneckWrapped(nn.Module):
    """The original module (``base_layer``) with a bottleneck adapter after it (series) or beside it (parallel)."""

    def __init__(self, base_layer: nn.Module, adapter: BottleneckAdapter, placement: str):
        super().__init__()
        self.base_layer = base_layer
        self.adapter = adapter
        self.placement = placement
        self.disabled = False

    def forward(self, x, *args, **kwargs):
        out = self.base_layer(x, *args, **kwargs)
        if self.disabled:
            return out
        # Some MLPs (mixture-of-experts) return (hidden, extras): adapt the hidden state only.
        hidden, rest = (out[0], out[1:]) if isinstance(out, tuple) else (out, None)
        delta = self.adapter(hidden if self.placement == "series" else x).to(hidden.dtype)
        hidden = hidden + delta
        return hidden if rest is None else (hidden, *rest)


def _matches(name: str, suffixes) -> bool:
    """Whether ``name`` ends with a suffix as whole dotted components ('layers.3.mlp' ends with 'mlp', not 'lp')."""
    return any(name == s or name.endswith("." + s) for s in suffixes)


def _hidden_size(model) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def _unwrap(model):
    return model.base_model if isinstance(model, BottleneckAdapterModel) else model


def inject_bottleneck(model: nn.Module, cfg: BottleneckConfig) -> list[str]:
    """Wrap every submodule whose name ends with one of ``cfg.target_modules`` (whole dotted
    components) in a :class:`BottleneckWrapped`, in place. Returns the wrapped names.

    Only the new adapter parameters are trainable; nothing else's ``requires_grad`` changes.
    """
    if any(isinstance(m, BottleneckWrapped) for m in model.modules()):
        raise ValueError("this model already has bottleneck adapters; inject into a fresh base model")
    width = _hidden_size(model)
    names = [n for n, _ in model.named_modules() if n and _matches(n, cfg.target_modules)]
    # A match inside another match (e.g. 'mlp' under an 'mlp') would be adapted twice: keep the outermost.
    names = [n for n in names if not any(n.startswith(o + ".") for o in names)]
    if not names:
        sample = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(
            f"bottleneck target_modules {cfg.target_modules} matched no module of "
            f"{type(model).__name__}; its modules include: {', '.join(sample)}"
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        module = parent.get_submodule(child)
        # Follow the wrapped module's dtype/device (bf16 models stay bf16; quantised weights are not
        # floating point, so those fall back to the model's compute dtype).
        ref = next((p for p in module.parameters() if p.is_floating_point()), None)
        dtype = ref.dtype if ref is not None else getattr(model, "dtype", torch.float32)
        device = ref.device if ref is not None else next(model.parameters()).device
        adapter = BottleneckAdapter(width, cfg, dtype=dtype, device=device)
        setattr(parent, child, BottleneckWrapped(module, adapter, cfg.placement))
    return names


def _adapter_params(model) -> dict[str, nn.Parameter]:
    model = _unwrap(model)
    return {
        f"{name}.adapter.{p_name}": p
        for name, module in model.named_modules()
        if isinstance(module, BottleneckWrapped)
        for p_name, p in module.adapter.named_parameters()
    }


def bottleneck_state_dict(model) -> dict[str, torch.Tensor]:
    """The adapter parameters only, named relative to the (injected) base model."""
    return {k: p.detach() for k, p in _adapter_params(model).items()}


def _load_strict(params: dict[str, nn.Parameter], state: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(params[k].shape)}"
        for k in sorted(set(params) & set(state))
        if state[k].shape != params[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{what} ({len(keys)}): {', '.join(keys[:6])}{' …' if len(keys) > 6 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes))
            if keys
        ]
        raise ValueError("bottleneck adapter weights do not fit this model — " + "; ".join(parts))
    with torch.no_grad():
        for k, p in params.items():
            p.copy_(state[k])  # copy_ converts dtype/device to the model's


def load_bottleneck_state(model, state: dict[str, torch.Tensor]) -> None:
    """Load adapter weights strictly: missing, unexpected or mis-shaped keys raise ValueError naming them."""
    _load_strict(_adapter_params(model), state)


@contextmanager
def bottleneck_disabled(model):
    """Inside, every wrapped module returns its base layer's output only (the base model, exactly)."""
    wrapped = [m for m in _unwrap(model).modules() if isinstance(m, BottleneckWrapped)]
    before = [m.disabled for m in wrapped]
    for m in wrapped:
        m.disabled = True
    try:
        yield
    finally:
        for m, was in zip(wrapped, before):  # restore, so nested uses behave
            m.disabled = was


def is_bottleneck_folder(folder) -> bool:
    path = Path(folder) / ADAPTER_FILE
    try:
        return json.loads(path.read_text()).get("type") == "bottleneck"
    except (OSError, ValueError, AttributeError):
        return False


class BottleneckAdapterModel(nn.Module):
    """A transformers model with bottleneck adapters, shaped like a ``peft.PeftModel`` for the rest of tuneforge.

    The base model's parameters are frozen; the adapters and the ``modules_to_save``
    (found by name suffix, e.g. a classification head ``score``) train. Unlike peft,
    modules_to_save are trained in place, not copies: ``disable_adapter`` turns the
    adapters off but keeps the trained head.
    """

    def __init__(self, model: nn.Module, cfg: BottleneckConfig, *, modules_to_save=()):
        super().__init__()
        for p in model.parameters():
            p.requires_grad_(False)
        self.wrapped = inject_bottleneck(model, cfg)
        self.base_model = model
        self.bottleneck_config = cfg
        self.modules_to_save = list(modules_to_save)
        for suffix in self.modules_to_save:
            found = [m for n, m in model.named_modules() if n and _matches(n, [suffix])]
            if not found:
                raise ValueError(f"modules_to_save: no module of {type(model).__name__} is named '{suffix}'")
            for m in found:
                m.requires_grad_(True)

    def __getattr__(self, name: str):
        # nn.Module keeps submodules in _modules and only calls __getattr__ when normal lookup fails;
        # fall back to the base model (config, generate helpers, base_model_prefix, ...) as peft does.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":  # not registered yet (inside __init__): avoid recursing
                raise
            return getattr(self.base_model, name)

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    @contextmanager
    def disable_adapter(self):
        with bottleneck_disabled(self.base_model):
            yield

    def _saved_params(self) -> dict[str, nn.Parameter]:
        params = _adapter_params(self.base_model)
        for name, module in self.base_model.named_modules():
            if name and _matches(name, self.modules_to_save):
                params.update({f"{name}.{k}": p for k, p in module.named_parameters()})
        return params

    def save_pretrained(self, save_directory, safe_serialization: bool = True, state_dict=None, **kwargs) -> None:
        """Write ADAPTER_FILE, WEIGHTS_FILE (adapter + modules_to_save weights) and a README.

        ``state_dict``: a full state dict gathered from sharded training, keys relative to the
        base model (or to this wrapper, 'base_model.'-prefixed); the saved keys are taken from it.
        Always safetensors: ``safe_serialization`` is accepted for peft's signature only.
        """
        if not kwargs.get("is_main_process", True):
            return
        keys = list(self._saved_params())
        if state_dict is None:
            tensors = {k: p.detach() for k, p in self._saved_params().items()}
        else:
            state = {k.removeprefix("base_model."): v for k, v in state_dict.items()}
            absent = [k for k in keys if k not in state]
            if absent:
                raise ValueError(f"the given state_dict lacks adapter weights: {', '.join(absent[:6])}")
            tensors = {k: state[k] for k in keys}
        # Own contiguous CPU copies: safetensors refuses shared or strided storage.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "type": "bottleneck"})
        base = getattr(self.base_model.config, "_name_or_path", "") or ""
        record = {
            "type": "bottleneck",
            "config": self.bottleneck_config.model_dump(),
            "base_model_name_or_path": base,
            "hidden_size": _hidden_size(self.base_model),
            "num_layers_wrapped": len(self.wrapped),
            "modules_to_save": self.modules_to_save,
            "format_version": FORMAT_VERSION,
        }
        (folder / ADAPTER_FILE).write_text(json.dumps(record, indent=2) + "\n")
        cfg = self.bottleneck_config
        (folder / "README.md").write_text(
            _README.format(placement=cfg.placement, size=cfg.size, base=base or "its base model", folder=folder)
        )

    @classmethod
    def from_pretrained(cls, model: nn.Module, folder, *, is_trainable: bool = False) -> BottleneckAdapterModel:
        """Inject the adapter saved in ``folder`` into ``model`` and load it strictly; frozen unless is_trainable."""
        folder = Path(folder)
        if not (folder / ADAPTER_FILE).is_file():
            hint = (
                " It holds adapter_config.json: a peft adapter, load it with peft."
                if (folder / "adapter_config.json").is_file()
                else ""
            )
            raise FileNotFoundError(f"{folder} is not a tuneforge bottleneck adapter folder: no {ADAPTER_FILE}.{hint}")
        record = json.loads((folder / ADAPTER_FILE).read_text())
        if record.get("type") != "bottleneck":
            raise ValueError(f"{folder / ADAPTER_FILE} holds a '{record.get('type')}' adapter, not a bottleneck one")
        if record.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"{folder} was written by a newer tuneforge (format {record['format_version']}); upgrade")
        ours = _hidden_size(model)
        if record["hidden_size"] != ours:
            raise ValueError(
                f"the adapter in {folder} was trained on a model of hidden size {record['hidden_size']} "
                f"('{record.get('base_model_name_or_path')}'), but this base model's hidden size is "
                f"{ours}: load it onto the base model it was trained on"
            )
        if not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} has {ADAPTER_FILE} but no {WEIGHTS_FILE}")
        cfg = BottleneckConfig.model_validate(record["config"])
        wrapped = cls(model, cfg, modules_to_save=record.get("modules_to_save", []))
        _load_strict(wrapped._saved_params(), load_file(str(folder / WEIGHTS_FILE)))
        if not is_trainable:
            wrapped.requires_grad_(False)
            wrapped.eval()
        return wrapped

    def merge_and_unload(self, *args, **kwargs):
        cfg = self.bottleneck_config
        raise BottleneckMergeError(
            f"cannot merge a bottleneck adapter into the base weights: its {cfg.activation} non-linearity sits "
            "between W_down and W_up, so it is no weight delta ΔW. Keep the adapter folder and load it onto the "
            "base model (tuneforge.adapters.load_adapter), or train a mergeable adapter (e.g. lora, ia3) "
            "if you need one plain model."
        )

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        # parameters() yields each tensor once, so tied embeddings are counted once.
        params = list(self.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(
            f"trainable params: {trainable:,d} || all params: {total:,d} || "
            f"trainable%: {100 * trainable / max(total, 1):.4f}"
        )
