"""The baseline a user would otherwise use: the base instruct model, prompted zero-shot.

A fresh classification head scores at chance before training, which says
nothing about whether fine-tuning was worth it. So "before" also asks the base
*instruct* model itself: the label set in the prompt, greedy decoding, and the
first word of the answer mapped to a label (exact name, else a label that the
word starts or that starts the word, case-insensitive). An answer that names
no label counts as wrong. Same rendering path as training and `generate`.
"""

from __future__ import annotations

import re

PROMPT = "Classify the text into exactly one of these labels: {labels}.\nAnswer with the label only.\n\nText: {text}"


def first_word_label(answer: str, labels: list[str]) -> int:
    """Index of the label the answer's first word names, or -1."""
    words = re.findall(r"[\w'-]+", answer.lower())
    if not words:
        return -1
    word = words[0]
    lowered = [label.lower() for label in labels]
    if word in lowered:
        return lowered.index(word)
    for i, label in enumerate(lowered):
        first = re.findall(r"[\w'-]+", label)
        if first and (first[0] == word or (len(word) >= 3 and (label.startswith(word) or word.startswith(label)))):
            return i
    return -1


def zero_shot_predictions(
    model, tokenizer, texts: list[str], labels: list[str], *, batch_size: int, max_new_tokens: int = 6
) -> tuple[list[int], list[str]]:
    """(label index or -1, raw answer) for each text."""
    from ...data.templates import render_prompt
    from ...eval.generation import generate

    prompts = [
        render_prompt(tokenizer, [{"role": "user", "content": PROMPT.format(labels=", ".join(labels), text=text)}])
        for text in texts
    ]
    answers = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [first_word_label(a, labels) for a in answers], answers
