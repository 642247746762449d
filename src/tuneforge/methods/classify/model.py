"""The classifier: a standard ``AutoModelForSequenceClassification`` on the chosen base.

For Llama-family decoders transformers scores the last non-pad token (hence
``pad_token_id`` must be set); for encoders (BERT, MiniLM) the [CLS] token
through the pooler. Either way the saved folder is what plain transformers
loads. With an adapter, peft trains and saves the new head as
``modules_to_save``; ``classifier.json`` beside the adapter records the label
names, the base model and the pad token, which a plain ``peft`` user needs to
rebuild the base with the right head shape (see docs/ARCHITECTURE.md). Full
outputs get the same file, for `predict` (the training ``max_length``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

INFO_FILE = "classifier.json"


@contextlib.contextmanager
def _quiet_transformers():
    """transformers prints a load report for the new head ("newly initialized"): expected here."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


def load_classifier(name: str, labels: list[str], *, dtype: torch.dtype = torch.float32, pad_token_id: int | None,
                    trust_remote_code: bool = False, revision: str | None = None,
                    attn_implementation: str | None = None):
    """A base model (embedded name, folder or hub id) with a fresh head of ``len(labels)`` outputs."""
    from transformers import AutoModelForSequenceClassification

    from ...models.load import ModelNotFoundError, resolve_model

    source = resolve_model(name)
    try:
        with _quiet_transformers():
            return AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={n: i for i, n in enumerate(labels)}, pad_token_id=pad_token_id, dtype=dtype,
                trust_remote_code=trust_remote_code, revision=revision,
                **({"attn_implementation": attn_implementation} if attn_implementation else {}),
            )
    except OSError as exc:
        raise ModelNotFoundError(f"model.name: could not load '{name}': {exc}") from None


def save_classifier(model, output_dir: Path, tokenizer, *, info: dict, state_dict=None) -> None:
    """The model (full folder or peft adapter), its tokenizer, and ``classifier.json``.

    ``info``: labels, max_length (so `predict` cuts texts as training did), pad_token_id,
    base_model (what plain peft loads the base from), model_name / revision /
    trust_remote_code (what tuneforge loads it from).
    """
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(output_dir)
    (output_dir / INFO_FILE).write_text(json.dumps(info, indent=2))


def read_info(path: Path) -> dict:
    return json.loads((Path(path) / INFO_FILE).read_text()) if (Path(path) / INFO_FILE).exists() else {}


def load_trained_classifier(path: str | Path, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer, labels, info) from a run's ``model/`` or ``adapter/`` folder, or the run folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ...models.load import ModelNotFoundError, load_tokenizer

    from ...adapters import is_adapter_folder, load_adapter

    path = Path(path)
    if not (path / "config.json").exists() and not is_adapter_folder(path):
        for inner in ("adapter", "model"):
            if (path / inner).is_dir():
                path = path / inner
                break
    info = read_info(path)
    if is_adapter_folder(path):
        if not info:
            raise ModelNotFoundError(f"{path}: an adapter without {INFO_FILE}; not a classifier written by "
                                     "`tuneforge train` with method: classify")
        base = load_classifier(info.get("model_name") or info["base_model"], info["labels"], dtype=dtype,
                               pad_token_id=info["pad_token_id"], revision=info.get("revision"),
                               trust_remote_code=trust_remote_code)
        model, labels = load_adapter(base, path), info["labels"]
    elif (path / "config.json").exists():
        architectures = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ModelNotFoundError(f"{path}: not a classifier (architectures: {', '.join(architectures) or 'none'}); "
                                     "give the output of a `method: classify` run")
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=dtype,
                                                                       trust_remote_code=trust_remote_code)
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    else:
        raise ModelNotFoundError(f"{path}: not a classifier folder (no config.json or adapter_config.json); "
                                 "give a run folder or its model/ or adapter/ folder")
    return model.eval(), load_tokenizer(str(path)), labels, info


def load_classifier_adapters(adapters: dict[str, str | Path], *, dtype: torch.dtype = torch.float32,
                             trust_remote_code: bool = False):
    """(peft model with every adapter under its name, tokenizer, labels, info) on one base.

    Refuses, with the reason, adapters that don't share the base model or the label set
    (each brings a head of its own label count), and full-model folders (nothing to share).
    """
    from ...adapters import adapter_type_of, is_adapter_folder, load_adapter
    from ...models.load import ModelNotFoundError, load_tokenizer

    folders: dict[str, Path] = {}
    for name, path in adapters.items():
        folder = Path(path)
        if not is_adapter_folder(folder) and is_adapter_folder(folder / "adapter"):
            folder = folder / "adapter"
        if not is_adapter_folder(folder) or not read_info(folder):
            raise ModelNotFoundError(f"--adapter {name}={path}: not a classify adapter (a run trained with an "
                                     "adapter, or its adapter/ folder); full models are predicted one at a time "
                                     "with --model")
        if len(adapters) > 1 and adapter_type_of(folder) in ("bottleneck", "mam"):
            raise ModelNotFoundError(f"--adapter {name}: bottleneck adapters are wired into the base and can't "
                                     "share it with others; predict with it alone")
        folders[name] = folder
    infos = {name: read_info(folder) for name, folder in folders.items()}
    first = next(iter(infos))
    for name, info in infos.items():
        if info["labels"] != infos[first]["labels"]:
            raise ModelNotFoundError(f"--adapter {name}: labels {info['labels']} differ from {first}'s "
                                     f"{infos[first]['labels']}; predict them in separate calls")
        base_of = (info.get("model_name") or info["base_model"], infos[first].get("model_name") or infos[first]["base_model"])
        if base_of[0] != base_of[1]:
            raise ModelNotFoundError(f"--adapter {name}: trained on {base_of[0]}, but {first} on {base_of[1]}; "
                                     "adapters on one base must share it")
    info = infos[first]
    base = load_classifier(info.get("model_name") or info["base_model"], info["labels"], dtype=dtype,
                           pad_token_id=info["pad_token_id"], revision=info.get("revision"),
                           trust_remote_code=trust_remote_code)
    model = load_adapter(base, folders[first], adapter_name=first)
    for name, folder in list(folders.items())[1:]:
        model.load_adapter(str(folder), adapter_name=name)
    return model.eval(), load_tokenizer(str(folders[first])), info["labels"], info
