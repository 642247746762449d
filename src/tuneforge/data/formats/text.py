"""Raw text for continued pretraining: concatenate documents, cut fixed-size blocks.

Each document is tokenized (with the tokenizer's own BOS convention), followed
by EOS so the model sees where documents end, and all documents are
concatenated into one stream cut into blocks of exactly ``max_length`` tokens
(the GPT-2/GPT-3 recipe, Radford et al. 2019; Brown et al. 2020). Labels equal
the inputs: loss on every token. Documents sharing a block attend to each
other, as in that recipe; the EOS between them marks the boundary.

The last, partial block is kept when it has at least ``max_length // 2`` tokens,
or when it is the only block (so a small dataset still trains); otherwise it is
dropped, since a short block would be mostly padding for little signal.

A record needs a string field ``text`` (renameable with ``columns``).
"""

from __future__ import annotations

from collections.abc import Iterable

from tuneforge.data.formats import bos_prefix, eos_id
from tuneforge.data.types import Example, Record

VERSION = 1
FIELDS = ("text",)


def documents(records: Iterable[Record], problems: list[str]) -> list[tuple[str, str]]:
    """``(text, where)`` of every valid record; problems for the rest."""
    docs = []
    for record in records:
        text = record.data.get("text")
        if text is None:
            problems.append(f"{record.where}: text: missing (fields present: {', '.join(record.data) or 'none'})")
        elif not isinstance(text, str):
            problems.append(f"{record.where}: text: must be a string (got {type(text).__name__})")
        elif text.strip():
            docs.append((text, record.where))
    return docs


def build_blocks(
    docs: list[tuple[str, str]], tokenizer, max_length: int, max_blocks: int | None = None
) -> list[Example]:
    """Tokenize documents, join them with EOS and cut blocks of ``max_length``.

    Each block's ``where`` names the document its first token comes from.
    """
    bos, eos = bos_prefix(tokenizer), eos_id(tokenizer)
    stream: list[int] = []
    owners: list[tuple[int, str]] = []  # (start offset in stream, where) per document
    blocks: list[Example] = []
    batch = 256
    for first in range(0, len(docs), batch):
        chunk = docs[first : first + batch]
        for (_, where), ids in zip(chunk, tokenizer([t for t, _ in chunk], add_special_tokens=False)["input_ids"]):
            owners.append((len(stream), where))
            stream.extend(bos + ids + [eos])
        if max_blocks is not None and len(stream) >= max_blocks * max_length:
            break
    owner_index = 0
    for start in range(0, len(stream), max_length):
        block = stream[start : start + max_length]
        if len(block) < max_length and blocks and len(block) < max_length // 2:
            break
        while owner_index + 1 < len(owners) and owners[owner_index + 1][0] <= start:
            owner_index += 1
        blocks.append(Example(block, list(block), owners[owner_index][1]))
        if max_blocks is not None and len(blocks) >= max_blocks:
            break
    return blocks
