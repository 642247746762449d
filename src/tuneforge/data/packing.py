"""Pack tokenised examples into rows of at most ``max_length`` tokens.

Placement is best-fit decreasing (Johnson 1973, bin packing; used for LM
packing by Ding et al. 2024, "Fewer Truncations Improve Language Modeling"):
sort examples by length, longest first, and put each into the open row with
the *least* remaining space that still fits it, opening a new row when none
does. It wastes far less padding than concatenating in arrival order and never
splits an example across rows. Ties are broken by original index, so the
result is deterministic.

Isolation. Each example's ``position_ids`` restart at 0. In transformers ≥ 5,
``masking_utils.find_packed_sequence_indices`` turns such position ids into a
block-diagonal causal mask, *but only when the model is called with*
``attention_mask=None`` *and without a KV cache*: pass ``use_cache=False``
(configs default to ``use_cache=True``, which creates a cache even in training
mode and silently turns isolation off; tests/test_data_packing.py shows both).
So packed examples never attend to each other (TRL #1230).

Loss boundary. Labels are unshifted (``labels[i]`` is the target at position
i; the engine compares logits[i-1] with labels[i]). The first token of every
packed example gets label IGNORE_INDEX, so the previous example's last token is
never asked to predict the next example's first token. Unpacked, that label is
never used either (nothing precedes position 0), so packed and unpacked losses
are the same sum.
"""

from __future__ import annotations

import bisect
import warnings

from tuneforge.data.types import IGNORE_INDEX, Example, PackedRow


def truncate(examples: list[Example], max_length: int) -> tuple[list[Example], int]:
    """Cut examples longer than ``max_length`` from the right; return them and how many were cut."""
    out, cut = [], 0
    for example in examples:
        if len(example.input_ids) > max_length:
            cut += 1
            example = Example(example.input_ids[:max_length], example.labels[:max_length], example.where)
        out.append(example)
    return out, cut


def _row(examples: list[Example]) -> PackedRow:
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for example in examples:
        input_ids.extend(example.input_ids)
        labels.append(IGNORE_INDEX)  # see "Loss boundary" above
        labels.extend(example.labels[1:])
        position_ids.extend(range(len(example.input_ids)))
    return PackedRow(input_ids, labels, position_ids, num_examples=len(examples))


def best_fit_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Indices of examples per row, by best-fit decreasing; rows in order of opening."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    # Open rows as a sorted list of (remaining space, row index): the best fit is the
    # first entry whose remaining space is >= the example's length.
    space: list[tuple[int, int]] = []
    for i in order:
        at = bisect.bisect_left(space, (lengths[i], -1))
        if at == len(space):
            rows.append([i])
            remaining, row = max_length - lengths[i], len(rows) - 1
        else:
            remaining, row = space.pop(at)
            rows[row].append(i)
            remaining -= lengths[i]
        if remaining > 0:
            bisect.insort(space, (remaining, row))
    return rows


def pack(examples: list[Example], max_length: int, packing: bool = True) -> list[PackedRow]:
    """Rows of at most ``max_length`` tokens; one example per row when ``packing`` is False.

    Longer examples are truncated (with a warning; the pipeline truncates and
    counts them beforehand, so this is a safety net). Empty examples are skipped.
    """
    examples, cut = truncate([e for e in examples if e.input_ids], max_length)
    if cut:
        warnings.warn(f"{cut} example(s) longer than max_length={max_length} were truncated", stacklevel=2)
    if not packing:
        return [_row([example]) for example in examples]
    groups = best_fit_rows([len(e.input_ids) for e in examples], max_length)
    return [_row([examples[i] for i in group]) for group in groups]
