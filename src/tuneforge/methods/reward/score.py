"""`tuneforge score`: score responses, and chosen / rejected pairs, with a trained reward model.

Rows are rendered and cut exactly as in training (``preference.data.encode_record``
with the template choice, system prompt and ``max_length`` saved in
``classifier.json``), so a score here equals the score the model gave the same
response in its held-out evaluation. Row shapes (JSONL / JSON / CSV / Parquet):

- ``{"prompt", "response"}`` (or ``completion``): the prompt a string or messages
  ending with a user turn, the response a string or one assistant message;
- ``{"messages": [..., {"role": "assistant", ...}]}``: the last message is the response;
- ``{"prompt", "chosen", "rejected"}``, in any shape `method: reward` trains on:
  both are scored, and whether chosen wins (strictly) is reported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...data.types import DataError
from ..preference.data import encode_record, pad
from ..preference.feedback import PreferencePair, Unpaired, parse_pair, parse_unpaired


def parse_row(data: dict, where: str, problems: list[str]) -> PreferencePair | Unpaired | None:
    """One row to score: a pair, or a single response (validated as a thumbs row without its label)."""
    if data.get("chosen") is not None or data.get("rejected") is not None:
        return parse_pair(data, where, problems)
    if data.get("prompt") is None and data.get("messages") is not None:
        messages = data["messages"]
        if (
            not isinstance(messages, list)
            or not messages
            or not isinstance(messages[-1], dict)
            or messages[-1].get("role") != "assistant"
        ):
            problems.append(
                f"{where}: messages: must be a list of messages ending with the assistant's response (the one to score)"
            )
            return None
        data = {"prompt": messages[:-1], "response": [messages[-1]]}
    # Missing fields are named here: parse_unpaired's message would list the label we add below.
    present = [str(k) for k, v in data.items() if v is not None]
    for name, keys in (("prompt", ("prompt",)), ("response", ("response", "completion"))):
        if not any(k in present for k in keys):
            problems.append(
                f"{where}: {name}: missing (fields present: {', '.join(present) or 'none'}); "
                "a row to score is {prompt, response}, {messages} or {prompt, chosen, rejected}"
            )
            return None
    return parse_unpaired({**data, "label": True}, where, problems)


def score_file(
    model_path: str | Path, data: str, *, batch_size: int = 16, max_length: int | None = None
) -> tuple[list[dict], dict]:
    """(one output row per input row, summary). ``max_length`` defaults to the training one."""
    from ...data.sources import read_records
    from ...data.templates import use_chat_template
    from .model import load_reward_model

    model, tokenizer, info = load_reward_model(model_path)
    chat = info["chat"] if "chat" in info else use_chat_template(tokenizer, "auto")  # a model trained elsewhere
    max_length = max_length or info.get("max_length") or 1024
    problems: list[str] = []
    records = [parse_row(r.data, r.where, problems) for r in read_records(data, problems=problems)]
    if problems:
        raise DataError(
            problems,
            hint="Rows to score: {prompt, response}, {messages} ending with the assistant's "
            "response, or {prompt, chosen, rejected}.",
        )
    sequences = []  # (row index, which response, token ids)
    for i, record in enumerate(records):
        example, _ = encode_record(
            tokenizer, record, chat=chat, max_length=max_length, system_prompt=info.get("system_prompt")
        )
        if isinstance(record, Unpaired):
            sequences.append((i, "score", example.response.input_ids))
        elif example is None:  # chosen and rejected are identical once cut: one score for both
            one = Unpaired(record.prompt, record.chosen, True, record.where)
            ids = encode_record(
                tokenizer, one, chat=chat, max_length=max_length, system_prompt=info.get("system_prompt")
            )[0].response.input_ids
            sequences += [(i, "chosen_score", ids), (i, "rejected_score", ids)]
        else:
            sequences += [
                (i, "chosen_score", example.chosen.input_ids),
                (i, "rejected_score", example.rejected.input_ids),
            ]
    # Pad with the id the head pools against (the last token that is not the config's pad_token_id).
    scores = _score_sequences(model, model.config.pad_token_id, [ids for _, _, ids in sequences], batch_size)
    out = [_output(r) for r in records]
    for (i, key, _), value in zip(sequences, scores):
        out[i][key] = round(value, 6)
    return out, _summary(out, scores)


@torch.no_grad()
def _score_sequences(model, pad_id: int, sequences: list[list[int]], batch_size: int) -> list[float]:
    from ...data.types import Example
    from .losses import sequence_scores

    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # little padding per batch
    out = [0.0] * len(sequences)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad([Example(sequences[i], sequences[i]) for i in chunk], pad_id)
        values = sequence_scores(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for i, value in zip(chunk, values.tolist()):
            out[i] = value
    return out


def _output(record) -> dict:
    if isinstance(record, Unpaired):
        return {"prompt": record.prompt, "response": record.response}
    return {"prompt": record.prompt, "chosen": record.chosen, "rejected": record.rejected}


def _summary(rows: list[dict], scores: list[float]) -> dict:
    summary: dict = {
        "rows": len(rows),
        "responses": len(scores),
        "mean_score": round(sum(scores) / len(scores), 6) if scores else None,
    }
    pairs = [r for r in rows if "chosen_score" in r]
    for row in pairs:
        row["margin"] = round(row["chosen_score"] - row["rejected_score"], 6)
        row["chosen_wins"] = row["chosen_score"] > row["rejected_score"]  # strict, as in training's accuracy
    if pairs:
        summary.update(
            pairs=len(pairs),
            accuracy=round(sum(r["chosen_wins"] for r in pairs) / len(pairs), 6),
            mean_margin=round(sum(r["margin"] for r in pairs) / len(pairs), 6),
        )
    return summary
