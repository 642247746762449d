"""Selective fine-tuning: train a chosen subset of the base model's own parameters.

BitFit (Ben Zaken et al. 2022, arXiv 2106.10199) trains only biases; partial
fine-tuning trains the top-k transformer blocks and / or parameters matched by
name (Lee et al. 2019, "What Would Elsa Do? Freezing Layers During Transformer
Fine-Tuning", arXiv 1911.03090). Nothing is added to the model, so the output
is an ordinary full model folder (``model/``) that plain ``transformers`` loads,
with ``trained_parameters.json`` beside it naming what changed.
"""

from __future__ import annotations

import fnmatch
import re

import torch

_BLOCK = re.compile(r"^(.*?\.(?:layers|h|layer|blocks))\.(\d+)\.")


def block_indices(model: torch.nn.Module) -> list[int]:
    """Indices of the repeated transformer blocks, from parameter names (``model.layers.N.…``)."""
    found = {int(m.group(2)) for name, _ in model.named_parameters() if (m := _BLOCK.match(name))}
    return sorted(found)


def selected_names(model: torch.nn.Module, cfg) -> list[str]:
    """Names of the parameters a ``bitfit`` or ``partial`` config trains, in model order."""
    names = [name for name, _ in model.named_parameters()]
    if cfg.type == "bitfit":
        return [n for n in names if n.endswith(".bias") or n == "bias"]
    chosen: set[str] = set()
    if cfg.top_k_layers:
        blocks = block_indices(model)
        if not blocks:
            raise ValueError(
                "adapter.top_k_layers: this model has no recognisable repeated blocks "
                "(model.layers.N…); use adapter.patterns instead"
            )
        top = set(blocks[-cfg.top_k_layers :])
        for n in names:
            m = _BLOCK.match(n)
            if m and int(m.group(2)) in top:
                chosen.add(n)
        if cfg.include_final_norm:
            chosen.update(n for n in names if not _BLOCK.match(n) and ".norm." in f".{n}" and "embed" not in n)
    for pattern in cfg.patterns:
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not matched:
            raise ValueError(
                f"adapter.patterns: '{pattern}' matches no parameter; names look like {', '.join(names[:3])}"
            )
        chosen.update(matched)
    return [n for n in names if n in chosen]


def apply_selection(model: torch.nn.Module, cfg, also_train: list[str] = ()) -> list[str]:
    """Freeze everything, then unfreeze the selection; returns the trained names (error if none).

    ``also_train``: module names (last component) trained whatever the selection, e.g. a new
    classification head, which starts random and must learn.
    """
    names = selected_names(model, cfg)
    if not names:
        raise ValueError(nothing_to_train_message(cfg))
    heads = [n for n, _ in model.named_parameters() if any(f".{h}." in f".{n}" for h in also_train)]
    names = [n for n, _ in model.named_parameters() if n in set(names) | set(heads)]
    keep = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in keep)
    return names


def nothing_to_train_message(cfg) -> str:
    if cfg.type == "bitfit":
        return (
            "adapter.type bitfit trains bias terms only, and this model has no biases (Llama-family models "
            "such as the embedded SmolLM2 have none): it would train nothing. Use layernorm or lora instead"
        )
    return "adapter: the selection matches no parameter"
