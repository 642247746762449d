"""One LoRA adapter per stage, frozen once its stage is over (``continual.strategy: adapter``).

Two ways to use them, ``continual.adapter.inference``:

- ``sum`` (O-LoRA, Wang et al. 2023): every adapter so far is active and the model is the base plus the
  sum of their updates; stage t trains only its own adapter, with the orthogonality penalty keeping
  its LoRA A rows away from the earlier adapters' subspaces (``penalties.olora_penalty``);
- ``route``: stage t trains its adapter alone on the base; a task is answered with its own stage's
  adapter (by task name), a task not trained yet with the latest one. No stage can change another's
  weights, so nothing learned is forgotten, at the price of knowing the task at inference.

Adapters are named after their stages inside one peft model, so peft's own multi-adapter machinery
does the arithmetic; each is saved on its own as a standard peft folder.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch


class StageAdapters:
    def __init__(self, base: torch.nn.Module, adapter_cfg, *, task_type: str, inference: str):
        self.base = base
        self.cfg = adapter_cfg
        self.task_type = task_type
        self.inference = inference
        self.model = None  # the PeftModel, once the first stage began
        self.names: list[str] = []

    @property
    def current(self) -> str:
        return self.names[-1]

    def begin(self, name: str) -> torch.nn.Module:
        """Add a fresh adapter for stage ``name``; it alone trains. Returns the model to train."""
        from peft import get_peft_model

        from ..adapters.peft_bridge import peft_config

        pconf = peft_config(self.cfg, task_type=self.task_type)
        if self.model is None:
            self.model = get_peft_model(self.base, pconf, adapter_name=name)
        else:
            self.model.add_adapter(name, pconf)
        self.names.append(name)
        self._activate(self.names if self.inference == "sum" else [name])
        self._train_only(name)
        return self.model

    def _activate(self, names: list[str]) -> None:
        # The tuner's set_adapter takes a list (several adapters active at once); it also marks every
        # active adapter trainable, which _train_only undoes for the frozen ones.
        self.model.base_model.set_adapter(names if len(names) > 1 else names[0])

    def _train_only(self, name: str) -> None:
        for param_name, param in self.model.named_parameters():
            param.requires_grad_(_belongs_to(param_name, name))

    def frozen_names(self) -> list[str]:
        return self.names[:-1] if self.inference == "sum" else []

    @contextmanager
    def for_task(self, index: int):
        """The adapters that answer task ``index`` (0-based stage order) while evaluating."""
        if self.model is None or self.inference == "sum":
            yield
            return
        trained = self.names
        self._activate([trained[min(index, len(trained) - 1)]])
        try:
            yield
        finally:
            self._activate([self.current])
            self._train_only(self.current)

    def save(self, name: str, folder: Path) -> Path:
        """Stage ``name``'s adapter alone, as a standard peft folder: ``folder``."""
        import shutil
        import tempfile

        folder = Path(folder)
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            self.model.save_pretrained(tmp, selected_adapters=[name], safe_serialization=True)
            shutil.move(str(Path(tmp) / name), str(folder))  # peft writes a named adapter to tmp/<name>/
        return folder

    def load_weights(self, name: str, folder: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        state = load_file(str(Path(folder) / "adapter_model.safetensors"))
        set_peft_model_state_dict(self.model, state, adapter_name=name)


def _belongs_to(param_name: str, adapter: str) -> bool:
    return f".{adapter}." in param_name
