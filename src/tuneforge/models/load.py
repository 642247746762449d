"""Resolve `model.name` and load tokenizers and causal LMs.

`model.name` may be an embedded model name (the default), a local Hugging Face
folder, a `.gguf` file (converted once into the cache) or a hub id (needs the
network). `trust_remote_code` is only ever passed through from the config.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from pathlib import Path

import torch

from .embedded import ALIASES, DEFAULT_MODEL, EMBEDDED_MODELS, cache_root, convert_gguf, embedded_model_path


class ModelNotFoundError(Exception):
    pass


def resolve_model(name: str | None) -> str:
    """Return something `from_pretrained` accepts: a local folder or a hub id."""
    name = name or DEFAULT_MODEL
    if name in EMBEDDED_MODELS or name in ALIASES:
        return str(embedded_model_path(name))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"model.name: GGUF file not found: {path}")
        return str(_converted_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(
                f"model.name: {path} is a folder but has no config.json; point at a Hugging Face model folder"
            )
        return str(path)
    if not path.exists() and "/" in name:
        # A folder an earlier run writes (configs that chain runs name them): say which step, not "a typo?".
        from ..config.producers import missing_output_hint

        hint = missing_output_hint(path)
        if hint:
            raise ModelNotFoundError(f"model.name: {name} not found; {hint}")
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"model.name: {name} is not a model folder, a .gguf file or a hub id")
    close = _misspelt_embedded(name)
    if close:
        raise ModelNotFoundError(
            f"model.name: '{name}' is not an embedded model, local folder or .gguf file; "
            f"did you mean `{close}`? (`tuneforge models` lists the embedded models)"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        hint = difflib.get_close_matches(name, list(EMBEDDED_MODELS), n=1)
        extra = f" (did you mean the embedded `{hint[0]}`?)" if hint else ""
        raise ModelNotFoundError(
            f"model.name: '{name}' is not an embedded model or a local path, and HF_HUB_OFFLINE=1 "
            f"forbids downloading it{extra}. Embedded models: {', '.join(EMBEDDED_MODELS)}"
        )
    return name  # a hub id; from_pretrained downloads it (or fails with the hub's message)


def _misspelt_embedded(name: str) -> str | None:
    """The embedded model a bare name is a near miss of (a typo, or the wrong case), or None.

    Without this a typo goes to the hub and comes back, after a network timeout or
    an offline error, as a message about downloads. Names with a ``/`` are hub ids
    (``org/model``) and are left alone: ``someorg/smollm2-135m-instruct`` may well be
    a real repository. Bare hub ids that remain (``gpt2``) are nowhere near
    the embedded names.
    """
    if "/" in name:
        return None
    close = difflib.get_close_matches(name.lower(), list(EMBEDDED_MODELS), n=1, cutoff=0.75)
    return close[0] if close else None


def _converted_gguf(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_root() / "models" / f"gguf-{path.stem}-{key}"
    if not (target / "model.safetensors").exists():
        from rich.console import Console

        Console(stderr=True).print(f"[bold]Converting {path.name}[/] into an fp32 folder at {target} (once)…")
        convert_gguf(path, target)
    return target


def load_tokenizer(name: str | None, *, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    # A run's adapter/ folder holds the tokenizer it was trained with, without a config.json.
    folder = Path(name).expanduser() if name else None
    if folder is not None and folder.is_dir() and (folder / "tokenizer_config.json").exists():
        source = str(folder)
    else:
        source = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as exc:
        raise ModelNotFoundError(f"model.name: could not load a tokenizer from '{name}': {exc}") from None
    if tokenizer.pad_token is None:
        # Padding positions never carry loss or attention here (masks come from positions),
        # so reusing EOS as pad is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """`auto` is fp32 on CPU (bf16 on this class of CPU is unusably slow) and bf16 on CUDA."""
    if dtype == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_causal_lm(
    name: str | None,
    *,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    quantization_config=None,
):
    from transformers import AutoModelForCausalLM

    source = resolve_model(name)
    kwargs = {"dtype": dtype, "trust_remote_code": trust_remote_code, "revision": revision}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(f"model.name: could not load '{name}': {exc}") from None


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total), counting tied weights once and 4-bit weights as peft does.

    bitsandbytes packs two 4-bit values per byte of its storage, so a ``Params4bit``
    of ``n`` elements holds ``2 · n · itemsize(quant_storage)`` weights.
    """
    seen: set[int] = set()
    trainable = total = 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        count = param.numel()
        if param.__class__.__name__ == "Params4bit":
            storage = getattr(param, "quant_storage", None)
            count *= 2 * (storage.itemsize if storage is not None else param.element_size())
        total += count
        if param.requires_grad:
            trainable += count
    return trainable, total


def training_state_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Bytes of the trainable weights, their gradients and AdamW's two moments (same dtype as the weights)."""
    seen: set[int] = set()
    weights = 0
    for param in model.parameters():
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            weights += param.numel() * param.element_size()
    return {"trainable_bytes": weights, "gradient_bytes": weights, "optimizer_state_bytes": 2 * weights}


def quantization_config(model_cfg, dtype: torch.dtype):
    """bitsandbytes settings for ``model.quantize`` (None when not quantizing).

    8bit is LLM.int8() (Dettmers et al. 2022, arXiv 2208.07339); 4bit is QLoRA's
    NF4 with double quantisation (Dettmers et al. 2023, arXiv 2305.14314). The
    output head stays unquantized (transformers skips it), as in both papers.
    """
    if model_cfg.quantize is None:
        return None
    import importlib.util

    from transformers import BitsAndBytesConfig

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelNotFoundError("model.quantize needs bitsandbytes: pip install 'tuneforge[quant]'")
    if model_cfg.quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype if model_cfg.compute_dtype == "auto" else getattr(torch, model_cfg.compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=model_cfg.quant_type,
        bnb_4bit_use_double_quant=model_cfg.double_quant,
        bnb_4bit_compute_dtype=compute,
    )


def is_quantized(model: torch.nn.Module) -> bool:
    return bool(
        getattr(model, "is_loaded_in_4bit", False)
        or getattr(model, "is_loaded_in_8bit", False)
        or getattr(model, "hf_quantizer", None) is not None
    )


def enable_activation_checkpointing(model) -> None:
    """transformers 5 renamed gradient checkpointing to activation checkpointing; use whichever exists."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
