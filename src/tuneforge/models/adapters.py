"""Bridge from our adapter config to `peft` (LoRA, rsLoRA, DoRA).

LoRA: Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models".
`h = W0 x + (alpha / r) · B A x`, B = 0 at init so the adapted model starts
exactly at the base model. rsLoRA (Kalajdzievski 2023) scales by alpha/√r;
DoRA (Liu et al. 2024) adds a learned magnitude per output row.
"""

from __future__ import annotations

import torch


def attach_adapter(model: torch.nn.Module, adapter_config, *, task_type: str = "CAUSAL_LM"):
    """Wrap ``model`` with the adapter the config's ``adapter:`` section describes.

    ``task_type`` is peft's TaskType name (the method's ``peft_task_type``); for
    ``SEQ_CLS`` peft also trains and saves the new label head (``modules_to_save``).
    """
    a = adapter_config
    return add_lora(model, r=a.r, alpha=a.alpha, dropout=a.dropout, target_modules=a.target_modules,
                    use_rslora=a.use_rslora, use_dora=a.use_dora, task_type=task_type)


def add_lora(model: torch.nn.Module, *, r: int, alpha: float, dropout: float,
             target_modules: list[str] | str, use_rslora: bool = False, use_dora: bool = False,
             task_type: str = "CAUSAL_LM"):
    """Return a `peft.PeftModel` wrapping ``model``.

    Note: peft injects the adapter layers into ``model`` in place, so the
    argument is changed too; callers must not keep using it as "the base".
    """
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType[task_type],
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        use_rslora=use_rslora,
        use_dora=use_dora,
    )
    return get_peft_model(model, config)


def is_peft_model(model: torch.nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a hard dependency
        return False
    return isinstance(model, PeftModel)
