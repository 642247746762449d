"""Ship what a run trained, and prove the shipped file answers like the run (issue #24).

``tuneforge export RUN --format merged | gguf | ollama`` writes:

- merged: a standalone Hugging Face folder (the adapter folded in, as ``tuneforge merge``) whose
  tokenizer carries the run's chat template (system prompt included) and whose
  ``generation_config.json`` lists the end-of-turn ids training taught the model to stop on;
- gguf: one GGUF file (``gguf_write.py``: llama / mistral / qwen2 shapes, byte-level BPE vocabularies)
  with the tokenizer, that template and those stop ids in its metadata;
- ollama: the GGUF plus a Modelfile whose TEMPLATE, SYSTEM and ``PARAMETER stop`` lines are derived
  from the run's template by rendering it (``template.py``), never written per model family.

``tuneforge verify-export DIR --run RUN`` (``verify.py``) loads the artifact in the runtime its
users run (``runtimes.py``), renders the run's held-out prompts through the artifact's own template,
decodes greedily, scores with the run's scorers and compares with the run's own answers.
docs/EXPORT.md is the user's guide.
"""

from __future__ import annotations

FORMATS = ("merged", "gguf", "ollama")
EXPORT_RECORD = "tuneforge_export.json"  # written into every export: what was exported from which run, and how


class ExportRefused(ValueError):
    """This run cannot be exported this way; the message says why and what to do instead."""
