"""The classifier: a standard ``AutoModelForSequenceClassification`` on the chosen base.

For Llama-family decoders transformers scores the last non-pad token (hence
``pad_token_id`` must be set); for encoders (BERT, MiniLM) the [CLS] token
through the pooler. Either way the saved folder is what plain transformers
loads. With an adapter, peft trains and saves the new head as
``modules_to_save``; beside the adapter, ``classifier.json`` records the label
names, the pad token and a portable base reference, and ``base_config.json`` /
README.md say how plain peft rebuilds the base (portable.py). Full outputs get
``classifier.json`` too, for `predict` (the training ``max_length``).

The base may itself be a classifier (a sentiment model as the start of another
label set): with another label count its head is dropped and a fresh one made
(``ignore_mismatched_sizes``), with a note naming the reset weights.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from rich.console import Console

_console = Console(stderr=True)
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


def inference_loader(adapter_folder: Path):
    """The base loader for an adapter folder with ``classifier.json`` beside it (classify writes one, and
    reward, which shares this head code): ``loader(name, *, trust_remote_code=False)`` builds the base
    with a head of the recorded labels; None for any other folder."""
    info_path = Path(adapter_folder) / INFO_FILE
    if not info_path.exists():
        return None
    info = json.loads(info_path.read_text())

    def load_classifier_base(name: str, *, trust_remote_code: bool = False):
        # the head is the trained adapter's: a reset of the base's own head is not news here
        return load_classifier(
            name,
            info["labels"],
            pad_token_id=info.get("pad_token_id"),
            revision=info.get("revision"),
            trust_remote_code=trust_remote_code,
            announce_head_reset=False,
        )

    return load_classifier_base


def load_classifier(
    name: str,
    labels: list[str],
    *,
    dtype: torch.dtype = torch.float32,
    pad_token_id: int | None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    attn_implementation: str | None = None,
    announce_head_reset: bool = True,
):
    """A base model (embedded name, folder or hub id) with a head of ``len(labels)`` outputs.

    A base without a head gets a fresh one; a classifier with as many labels keeps its head;
    one with another label count gets a fresh head, and a note (``announce_head_reset``)
    names the weights reset. Callers that put a trained adapter's head on top pass False.
    """
    from transformers import AutoModelForSequenceClassification

    from ...models.load import ModelNotFoundError, resolve_model

    source = resolve_model(name)
    previous = classifier_labels(source, revision=revision, trust_remote_code=trust_remote_code)
    head_reset = previous is not None and len(previous) != len(labels)
    try:
        with _quiet_transformers():
            model, loading = AutoModelForSequenceClassification.from_pretrained(
                source,
                **head_config(labels, pad_token_id),
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                revision=revision,
                ignore_mismatched_sizes=head_reset,
                output_loading_info=True,
                **({"attn_implementation": attn_implementation} if attn_implementation else {}),
            )
    except OSError as exc:
        raise ModelNotFoundError(f"model.name: could not load '{name}': {exc}") from None
    if head_reset and announce_head_reset:
        shapes = "; ".join(
            f"{key} {_shape(old)} → {_shape(new)}" for key, old, new in sorted(loading["mismatched_keys"])
        )
        _console.print(
            f"Note: model.name {name} is already a classifier with {len(previous)} labels "
            f"({', '.join(previous)}); its head is reset for the {len(labels)} labels here "
            f"({', '.join(labels)}): {shapes}",
            highlight=False,
        )
    return model


def head_config(labels: list[str], pad_token_id: int | None) -> dict:
    """The config entries of a label head (``id2label`` sets the number of outputs)."""
    out = {
        "id2label": dict(enumerate(labels)),
        "label2id": {n: i for i, n in enumerate(labels)},
        "pad_token_id": pad_token_id,
    }
    if len(labels) > 1:  # one output (a reward model) is a score, not a softmax over labels
        out["problem_type"] = "single_label_classification"
    return out


def classifier_labels(source: str, *, revision: str | None = None, trust_remote_code: bool = False) -> list[str] | None:
    """The label names of ``source`` when it is a saved sequence classifier; None for a plain base."""
    from transformers import AutoConfig

    try:
        with _quiet_transformers():
            config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):
        return None  # from_pretrained reports it
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return None
    return [config.id2label[i] for i in range(config.num_labels)]


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def save_classifier(model, output_dir: Path, tokenizer, *, info: dict, state_dict=None) -> None:
    """The model (full folder or adapter), its tokenizer, ``classifier.json``; for a peft adapter also
    ``base_config.json`` and README.md, and its ``adapter_config.json`` names the portable base.

    ``info``: labels, max_length (so `predict` cuts texts as training did), pad_token_id,
    model_name / revision / trust_remote_code (what tuneforge loads the base from). Added here:
    ``base_model`` (what plain transformers loads it from: a hub id or the embedded name, never
    tuneforge's cache folder; any ``base_model`` given is replaced), ``base_model_note`` and
    ``base_kwargs`` (from_pretrained keywords besides ``config``).
    """
    from ...models.load import resolve_model
    from .portable import write_plain_loading

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(output_dir)
    if info.get("model_name"):  # the base is known: say how plain transformers gets it
        previous = classifier_labels(
            resolve_model(info["model_name"]),
            revision=info.get("revision"),
            trust_remote_code=info.get("trust_remote_code", False),
        )
        head_reset = previous is not None and len(previous) != len(info["labels"])
        info = {**info, **write_plain_loading(model, output_dir, info, head_reset=head_reset)}
    (output_dir / INFO_FILE).write_text(json.dumps(info, indent=2))


def read_info(path: Path) -> dict:
    return json.loads((Path(path) / INFO_FILE).read_text()) if (Path(path) / INFO_FILE).exists() else {}


def load_trained_classifier(path: str | Path, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """(model, tokenizer, labels, info) from a run's ``model/`` or ``adapter/`` folder, or the run folder."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from ...adapters import is_adapter_folder, load_adapter
    from ...models.load import ModelNotFoundError, load_tokenizer

    path = Path(path)
    if not (path / "config.json").exists() and not is_adapter_folder(path):
        for inner in ("adapter", "model"):
            if (path / inner).is_dir():
                path = path / inner
                break
    info = read_info(path)
    if is_adapter_folder(path):
        if not info:
            raise ModelNotFoundError(
                f"{path}: an adapter without {INFO_FILE}; not a classifier written by "
                "`tuneforge train` with method: classify"
            )
        base = load_classifier(
            info.get("model_name") or info["base_model"],
            info["labels"],
            dtype=dtype,
            pad_token_id=info["pad_token_id"],
            revision=info.get("revision"),
            trust_remote_code=trust_remote_code,
            announce_head_reset=False,
        )
        model, labels = load_adapter(base, path), info["labels"]
    elif (path / "config.json").exists():
        architectures = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures):
            raise ModelNotFoundError(
                f"{path}: not a classifier (architectures: {', '.join(architectures) or 'none'}); "
                "give the output of a `method: classify` run"
            )
        with _quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                path, dtype=dtype, trust_remote_code=trust_remote_code
            )
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    else:
        raise ModelNotFoundError(
            f"{path}: not a classifier folder (no config.json or adapter_config.json); "
            "give a run folder or its model/ or adapter/ folder"
        )
    return model.eval(), load_tokenizer(str(path)), labels, info


def load_classifier_adapters(
    adapters: dict[str, str | Path], *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
):
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
            raise ModelNotFoundError(
                f"--adapter {name}={path}: not a classify adapter (a run trained with an "
                "adapter, or its adapter/ folder); full models are predicted one at a time "
                "with --model"
            )
        if len(adapters) > 1 and adapter_type_of(folder) in ("bottleneck", "mam"):
            raise ModelNotFoundError(
                f"--adapter {name}: bottleneck adapters are wired into the base and can't "
                "share it with others; predict with it alone"
            )
        folders[name] = folder
    infos = {name: read_info(folder) for name, folder in folders.items()}
    first = next(iter(infos))
    for name, info in infos.items():
        if info["labels"] != infos[first]["labels"]:
            raise ModelNotFoundError(
                f"--adapter {name}: labels {info['labels']} differ from {first}'s "
                f"{infos[first]['labels']}; predict them in separate calls"
            )
        base_of = (
            info.get("model_name") or info["base_model"],
            infos[first].get("model_name") or infos[first]["base_model"],
        )
        if base_of[0] != base_of[1]:
            raise ModelNotFoundError(
                f"--adapter {name}: trained on {base_of[0]}, but {first} on {base_of[1]}; "
                "adapters on one base must share it"
            )
    info = infos[first]
    base = load_classifier(
        info.get("model_name") or info["base_model"],
        info["labels"],
        dtype=dtype,
        pad_token_id=info["pad_token_id"],
        revision=info.get("revision"),
        trust_remote_code=trust_remote_code,
        announce_head_reset=False,
    )
    model = load_adapter(base, folders[first], adapter_name=first)
    for name, folder in list(folders.items())[1:]:
        model.load_adapter(str(folder), adapter_name=name)
    return model.eval(), load_tokenizer(str(folders[first])), info["labels"], info
