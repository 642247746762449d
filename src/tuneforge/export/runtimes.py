"""Load an exported artifact the way its users will, and ask it one held-out question at a time.

Each runtime renders a conversation through the *artifact's own* prompt format (never the run's),
tokenizes it with the artifact's own tokenizer, decodes greedily and says whether the answer ended
on the artifact's own stop rule:

- :class:`TransformersFolder` (merged folders): ``tokenizer.apply_chat_template`` and plain
  ``model.generate(do_sample=False)``, which stops on ``generation_config.eos_token_id``.
- :class:`LlamaCpp` (GGUF files, Ollama exports): llama-cpp-python, as its ``create_chat_completion``
  does with a GGUF's template (``Jinja2ChatFormatter``, ``Llama.tokenize(..., special=True)``, stop on
  end-of-generation tokens and on the eos text); for Ollama the Modelfile's TEMPLATE / SYSTEM /
  ``PARAMETER stop`` instead (``template.render_go_template``).
- :class:`GGUFInTransformers`, when llama-cpp-python is not installed (it compiles llama.cpp, which
  takes longer than a 2-core CI allows): the GGUF read back by transformers' GGUF loader (the
  ``gguf`` package's dequantizers, q/k un-permuted), the chat template and stop ids from the file's
  metadata, the template rendered by :func:`template.render_chat` (llama-cpp-python's Jinja settings).
  Weights, template, tokenizer and stop ids all come from the file; the matmuls are torch's.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from . import ExportRefused


@dataclass
class Answer:
    text: str
    stopped: bool  # ended on a stop token / string before max_new_tokens
    new_tokens: int


class Runtime(Protocol):
    name: str

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The ids this artifact's own template and tokenizer make of ``messages`` (a generation prompt)."""
        ...

    def answer(self, messages: list[dict], max_new_tokens: int) -> Answer: ...


def has_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


class TransformersFolder:
    """A merged folder in plain transformers."""

    def __init__(self, folder: Path):
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        eos = self.model.generation_config.eos_token_id
        self.stops = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.name = f"transformers {transformers.__version__} (AutoModelForCausalLM, generate)"

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        encoded = cast(
            dict,
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True),
        )  # a BatchEncoding (transformers 5)
        return [int(i) for i in encoded["input_ids"]]

    def answer(self, messages: list[dict], max_new_tokens: int) -> Answer:
        import torch

        ids = torch.tensor([self.prompt_ids(messages)])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False
            )
        new = out[0, ids.shape[1] :].tolist()
        cut = next((k for k, tok in enumerate(new) if tok in self.stops), None)
        body = new if cut is None else new[:cut]
        return Answer(str(self.tokenizer.decode(body, skip_special_tokens=True)), cut is not None, len(new))


@dataclass
class GGUFPrompting:
    """How prompts are made for a GGUF: its own chat template, or an Ollama Modelfile's."""

    template: str | None = None  # Jinja (GGUF metadata) when no Modelfile
    go_template: str | None = None  # Modelfile TEMPLATE
    system: str | None = None  # Modelfile SYSTEM
    stop_strings: tuple[str, ...] = ()  # Modelfile PARAMETER stop


def _messages_for_go(messages: list[dict], default_system: str | None) -> tuple[str | None, str]:
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) != 1 or turns[0]["role"] != "user":
        raise ExportRefused(
            "verify-export renders Ollama's legacy TEMPLATE for single-turn prompts only; this held-out sample "
            "has several turns"
        )
    system = next((m["content"] for m in messages if m["role"] == "system"), default_system)
    return system, turns[0]["content"]


class LlamaCpp:
    """A GGUF in llama-cpp-python (single sequence, greedy, CPU)."""

    def __init__(self, path: Path, prompting: GGUFPrompting, *, n_ctx: int = 2048, threads: int | None = None):
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count(), n_batch=512, seed=0, verbose=False
        )
        # the file's own template unless a Modelfile gives one (what llama-cpp-python's chat handler uses)
        template = prompting.template or self.llm.metadata.get("tokenizer.chat_template")
        if prompting.go_template is None and not template:
            raise ExportRefused(f"{path}: no tokenizer.chat_template in the GGUF; a chat runtime cannot render prompts")
        self.prompting = GGUFPrompting(template, prompting.go_template, prompting.system, prompting.stop_strings)
        model = self.llm._model
        eos, bos = self.llm.token_eos(), self.llm.token_bos()
        self.eos_text = model.token_get_text(eos) if eos != -1 else ""
        self.bos_text = model.token_get_text(bos) if bos != -1 else ""
        self.add_bos = str(self.llm.metadata.get("tokenizer.ggml.add_bos_token", "false")).lower() == "true"
        self.name = f"llama-cpp-python {llama_cpp.__version__} (llama.cpp, CPU)"

    def _text_and_stops(self, messages: list[dict]) -> tuple[str, list[str], bool]:
        """(prompt text, stop strings, whether the text already holds its special tokens)."""
        p = self.prompting
        if p.go_template is not None:
            from .template import render_go_template

            system, prompt = _messages_for_go(messages, p.system)
            # Ollama adds BOS as the model's add_bos_token says, unless the text starts with it.
            return render_go_template(p.go_template, system=system, prompt=prompt), list(p.stop_strings), False
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        formatter = Jinja2ChatFormatter(
            template=p.template or "", eos_token=self.eos_text, bos_token=self.bos_text, stop_token_ids=None
        )
        result = formatter(messages=messages)
        stops = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return result.prompt, stops, bool(result.added_special)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text, _, added_special = self._text_and_stops(messages)
        add_bos = (not added_special) and self.add_bos and not text.startswith(self.bos_text or "\0")
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def answer(self, messages: list[dict], max_new_tokens: int) -> Answer:
        import llama_cpp

        _, stops, _ = self._text_and_stops(messages)
        # A fresh KV cache per question, as a new request gets: Llama.reset() alone only rewinds the
        # token count, and decoding from position 0 over the last answer's cache is refused by llama.cpp.
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llm._ctx.ctx), True)
        self.llm.reset()
        out = self.llm.create_completion(
            prompt=self.prompt_ids(messages),
            max_tokens=max_new_tokens,
            temperature=0.0,
            top_k=1,
            top_p=1.0,
            min_p=0.0,
            repeat_penalty=1.0,
            stop=[s for s in stops if s] or None,
        )
        choice = out["choices"][0]
        return Answer(choice["text"], choice["finish_reason"] == "stop", int(out["usage"]["completion_tokens"]))


class GGUFInTransformers:
    """A GGUF read back by transformers (the fallback when llama-cpp-python is absent; module docstring)."""

    def __init__(self, path: Path, prompting: GGUFPrompting):
        import gguf
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        reader = gguf.GGUFReader(str(path))
        meta = {
            name: field.contents() for name, field in reader.fields.items() if not name.startswith("tokenizer.ggml.t")
        }
        tokens = reader.fields["tokenizer.ggml.tokens"].contents()
        self.tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        self.model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        self.model.eval()
        eos, bos = meta.get("tokenizer.ggml.eos_token_id"), meta.get("tokenizer.ggml.bos_token_id")
        self.stops = {i for i in (eos, meta.get("tokenizer.ggml.eot_token_id")) if i is not None}
        self.eos_text = tokens[eos] if eos is not None else ""
        self.bos_text = tokens[bos] if bos is not None else ""
        self.bos_id = bos
        self.add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
        self.prompting = GGUFPrompting(
            template=prompting.template or meta.get("tokenizer.chat_template"),
            go_template=prompting.go_template,
            system=prompting.system,
            stop_strings=prompting.stop_strings,
        )
        self.name = (
            f"transformers {transformers.__version__} reading the GGUF (gguf dequantizers; llama-cpp-python absent)"
        )

    def _text(self, messages: list[dict]) -> str:
        from .template import render_chat, render_go_template

        p = self.prompting
        if p.go_template is not None:
            system, prompt = _messages_for_go(messages, p.system)
            return render_go_template(p.go_template, system=system, prompt=prompt)
        return render_chat(p.template or "", messages, bos_token=self.bos_text, eos_token=self.eos_text)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self._text(messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.add_bos and self.bos_id is not None and not text.startswith(self.bos_text or "\0"):
            ids = [self.bos_id] + ids
        return list(ids)

    def answer(self, messages: list[dict], max_new_tokens: int) -> Answer:
        import torch

        ids = torch.tensor([self.prompt_ids(messages)])
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=sorted(self.stops) or None,
            )
        new = out[0, ids.shape[1] :].tolist()
        cut = next((k for k, tok in enumerate(new) if tok in self.stops), None)
        text = str(self.tokenizer.decode(new if cut is None else new[:cut], skip_special_tokens=False))
        hit = [s for s in self.prompting.stop_strings if s and s in text]
        if hit:  # Ollama's string stops: cut at the earliest
            text = text[: min(text.index(s) for s in hit)]
        for special in self.tokenizer.all_special_tokens:
            text = text.replace(special, "")
        return Answer(text, cut is not None or bool(hit), len(new))


def open_runtime(kind: str, path: Path, prompting: GGUFPrompting | None = None, *, runtime: str = "auto") -> Runtime:
    """The runtime for an artifact: ``kind`` merged | gguf | ollama; ``runtime`` auto | llama-cpp | transformers."""
    if kind == "merged":
        return TransformersFolder(path)
    prompting = prompting or GGUFPrompting()
    if runtime == "llama-cpp" and not has_llama_cpp():
        raise ExportRefused("--runtime llama-cpp: llama-cpp-python is not installed: pip install 'tuneforge[gguf]'")
    if runtime in ("auto", "llama-cpp") and has_llama_cpp():
        return LlamaCpp(path, prompting)
    return GGUFInTransformers(path, prompting)
