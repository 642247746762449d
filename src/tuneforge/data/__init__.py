"""The data pipeline: sources → records → rendered, tokenised, masked, packed batches.

Public API::

    read_records(source, *, split=None) -> Iterator[Record]
    load_splits(cfg: DataConfig, tokenizer, *, cache_dir=None, use_cache=True) -> Splits
    validate_data(cfg: DataConfig, tokenizer, *, max_problems=20) -> DataReport
    pack(examples, max_length, packing=True) -> list[PackedRow]
    collate(rows, pad_id) -> {"input_ids", "labels", "position_ids"}  # (B, T) long tensors, + "cu_seq_lens"
    render_conversation(tokenizer, messages, completion_only_loss=True) -> (input_ids, labels)
    render_prompt(tokenizer, messages) -> input_ids
    check_template(tokenizer, sample_conversations) -> list[str]

Feed collated batches as ``model(input_ids=..., position_ids=...,
attention_mask=None, use_cache=False)``; see ``packing.py`` for why.
"""

from tuneforge.data.collate import collate
from tuneforge.data.packing import pack
from tuneforge.data.pipeline import load_splits, validate_data
from tuneforge.data.sources import read_records
from tuneforge.data.templates import check_template, render_conversation, render_prompt
from tuneforge.data.types import (
    IGNORE_INDEX,
    DataError,
    DataReport,
    Example,
    GenerationSample,
    PackedRow,
    Record,
    Splits,
)

__all__ = [
    "IGNORE_INDEX",
    "DataError",
    "DataReport",
    "Example",
    "GenerationSample",
    "PackedRow",
    "Record",
    "Splits",
    "check_template",
    "collate",
    "load_splits",
    "pack",
    "read_records",
    "render_conversation",
    "render_prompt",
    "validate_data",
]
