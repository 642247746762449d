"""Ollama Modelfiles: write one for an exported GGUF, read one back for verify-export.

Syntax: https://github.com/ollama/ollama/blob/main/docs/modelfile.md. Instructions used here:
``FROM`` (the GGUF, relative to the Modelfile), ``TEMPLATE`` and ``SYSTEM`` (triple-quoted: they span
lines), ``PARAMETER stop`` (one line per stop string). Every value is derived from the run
(``template.py``); nothing is written per model family.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import ExportRefused

MODELFILE = "Modelfile"


@dataclass
class Modelfile:
    model: str  # FROM
    template: str | None = None
    system: str | None = None
    stops: list[str] = field(default_factory=list)
    parameters: dict[str, list[str]] = field(default_factory=dict)  # other PARAMETER lines, as written


def _triple(text: str, what: str) -> str:
    if '"""' in text:
        raise ExportRefused(f'{what}: contains \'"""\', which a Modelfile cannot quote; change it in the run config')
    return f'"""{text}"""'


def format_modelfile(modelfile: Modelfile) -> str:
    lines = [f"FROM {modelfile.model}"]
    if modelfile.template is not None:
        lines.append(f"TEMPLATE {_triple(modelfile.template, 'the chat template')}")
    if modelfile.system:
        lines.append(f"SYSTEM {_triple(modelfile.system, 'data.system_prompt')}")
    # JSON string quoting: Ollama reads a quoted PARAMETER value with Go's strconv-style escapes.
    lines.extend(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}" for stop in modelfile.stops)
    return "\n".join(lines) + "\n"


_INSTRUCTION = re.compile(r"^(FROM|TEMPLATE|SYSTEM|PARAMETER|ADAPTER|LICENSE|MESSAGE)\s+(.*)$", re.I | re.S)


def parse_modelfile(path: Path) -> Modelfile:
    """Read FROM, TEMPLATE, SYSTEM and PARAMETER lines (quoted, triple-quoted or bare values)."""
    text = path.read_text(encoding="utf-8")
    found: dict[str, str] = {}
    stops: list[str] = []
    parameters: dict[str, list[str]] = {}
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        line = text[pos : end if end >= 0 else len(text)]
        if line.strip().startswith('"""') or not line.strip() or line.lstrip().startswith("#"):
            pos = (end if end >= 0 else len(text)) + 1
            continue
        match = _INSTRUCTION.match(line.strip())
        if not match:
            raise ExportRefused(f"{path}: cannot read the line {line.strip()!r}")
        keyword, rest = match.group(1).upper(), match.group(2)
        if rest.startswith('"""'):
            start = pos + line.index('"""') + 3
            close = text.find('"""', start)
            if close < 0:
                raise ExportRefused(f'{path}: {keyword} opens """ and never closes it')
            value, pos = text[start:close], close + 3
        else:
            value, pos = rest.strip(), (end if end >= 0 else len(text)) + 1
        if keyword == "PARAMETER":
            name, _, raw = value.partition(" ")
            raw = raw.strip()
            parsed = json.loads(raw) if raw.startswith('"') else raw
            if name == "stop":
                stops.append(parsed)
            else:
                parameters.setdefault(name, []).append(parsed)
        else:
            found[keyword] = value[1:-1] if value.startswith('"') and value.endswith('"') else value
    if "FROM" not in found:
        raise ExportRefused(f"{path}: no FROM line; a Modelfile names its model file")
    return Modelfile(
        model=found["FROM"],
        template=found.get("TEMPLATE"),
        system=found.get("SYSTEM"),
        stops=stops,
        parameters=parameters,
    )
