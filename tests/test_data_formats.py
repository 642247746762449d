"""Formats: text blocks, prompt/completion (incl. alpaca), chat; masks and row validation."""

import pytest
from conftest import write_jsonl
from tiny import tiny_tokenizer

from tuneforge.config.schema import DataConfig
from tuneforge.data import IGNORE_INDEX, DataError, load_splits, validate_data
from tuneforge.data.formats import RenderSettings, text
from tuneforge.data.formats import prompt_completion as pc
from tuneforge.data.types import Record


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def masked(tok, example):
    return tok.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])


def load(tok, **kw):
    return load_splits(DataConfig(**kw), tok, use_cache=False)


# ---- text -------------------------------------------------------------------------------------


def test_text_blocks_are_full_length_with_eos_between_documents(tok, tmp_path):
    # byte-level tokenizer: a document of n characters is n tokens, plus one EOS
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "abcdef"}, {"text": "ghij"}, {"text": "kl"}])
    splits = load(tok, format="text", train=str(path), max_length=8)
    assert [len(e.input_ids) for e in splits.train] == [8, 7]  # 15 tokens; the partial block (7 >= 8/2) is kept
    assert all(e.labels == e.input_ids for e in splits.train)  # loss on every token
    stream = [i for e in splits.train for i in e.input_ids]
    assert tok.decode(stream) == "abcdef<|im_end|>ghij<|im_end|>kl<|im_end|>"
    assert splits.train[1].where.endswith(":2")  # block 2 starts inside document 2
    assert splits.eval_samples == []


def test_text_drops_a_short_last_block_but_keeps_a_lone_one(tok):
    docs = [("abcdefghijk", "x:1")]  # 12 tokens with EOS
    assert [len(e.input_ids) for e in text.build_blocks(docs, tok, 10)] == [10]  # 2 < 10/2: dropped
    assert [len(e.input_ids) for e in text.build_blocks([("abc", "x:1")], tok, 10)] == [4]  # only block: kept


def test_text_renamed_column_and_missing_field(tok, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"body": "hello world"}, {"other": 1}])
    with pytest.raises(DataError) as err:
        load(tok, format="text", train=str(path), max_length=8, columns={"text": "body"})
    assert err.value.problems == [f"{path}:2: text: missing (fields present: other)"]


# ---- prompt / completion ------------------------------------------------------------------------


def test_prompt_completion_chat_masks_completion_and_end_of_turn(tok, tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2?", "completion": "4"}] * 3)
    splits = load(tok, format="prompt_completion", train=str(path), eval=str(path), system_prompt="Be exact.")
    example = splits.train[0]
    assert masked(tok, example) == "4<|im_end|>"
    assert "Be exact." in tok.decode(example.input_ids)
    sample = splits.eval_samples[0]
    assert example.input_ids[: len(sample.prompt_ids)] == sample.prompt_ids
    assert (sample.prompt, sample.reference, sample.references) == ("2+2?", "4", ["4"])


def test_prompt_completion_plain_is_prompt_completion_eos(tok, tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q: 2+2?\nA:", "completion": " 4"}])
    splits = load(tok, format="prompt_completion", train=str(path), eval=str(path), template="plain")
    example = splits.train[0]
    assert tok.decode(example.input_ids) == "Q: 2+2?\nA: 4<|im_end|>"  # verbatim, no separator added
    assert masked(tok, example) == " 4<|im_end|>"
    assert tok.decode(splits.eval_samples[0].prompt_ids) == "Q: 2+2?\nA:"


def test_completion_only_loss_false_targets_everything(tok, tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "2+2?", "completion": "4"}])
    for template in ("chat", "plain"):
        example = load(
            tok, format="prompt_completion", train=str(path), template=template, completion_only_loss=False
        ).train[0]
        assert example.labels == example.input_ids


def test_alpaca_shape_is_detected_with_and_without_input(tok):
    settings = RenderSettings(chat=True)
    problems: list[str] = []
    with_input = pc.parse(
        Record({"instruction": "Translate to French.", "input": "cat", "output": "chat"}, "a:1"), problems
    )
    no_input = pc.parse(Record({"instruction": "Name a colour.", "input": "", "output": "red"}, "a:2"), problems)
    assert problems == []
    assert (with_input.prompt, with_input.completion) == ("Translate to French.\n\ncat", "chat")
    assert no_input.prompt == "Name a colour."
    assert masked(tok, pc.render(tok, with_input, settings)) == "chat<|im_end|>"
    plain = RenderSettings(chat=False)
    example = pc.render(tok, with_input, plain)
    assert tok.decode(example.input_ids) == "Translate to French.\n\nInput: cat\n\nOutput: chat<|im_end|>"
    assert masked(tok, example) == " chat<|im_end|>"
    sample = pc.sample(tok, with_input, plain)
    assert example.input_ids[: len(sample.prompt_ids)] == sample.prompt_ids and sample.reference == "chat"


def test_prompt_completion_bad_rows_are_listed(tok, tmp_path):
    path = write_jsonl(
        tmp_path / "pc.jsonl",
        [
            {"prompt": "ok", "completion": "fine"},
            {"prompt": "no answer"},
            {"prompt": 3, "completion": "x"},
            {"instruction": "Do it.", "output": ""},
        ],
    )
    with pytest.raises(DataError) as err:
        load(tok, format="prompt_completion", train=str(path))
    assert err.value.problems == [
        f"{path}:2: completion: missing (fields present: prompt)",
        f"{path}:3: prompt: must be a string (got int)",
        f"{path}:4: output: must not be empty",
    ]
    assert f"{path}:2: completion: missing" in str(err.value)


def test_columns_rename_user_fields(tok, tmp_path):
    path = write_jsonl(tmp_path / "pc.jsonl", [{"question": "2+2?", "answer": "4"}])
    splits = load(
        tok, format="prompt_completion", train=str(path), columns={"prompt": "question", "completion": "answer"}
    )
    assert masked(tok, splits.train[0]) == "4<|im_end|>"
    report = validate_data(DataConfig(format="prompt_completion", train=str(path), columns={"promt": "question"}), tok)
    assert any(p.startswith("columns.promt: not a field of format 'prompt_completion'") for p in report.problems)


# ---- chat ---------------------------------------------------------------------------------------

CONVO = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Later"},
    ]
}


def test_chat_masks_every_assistant_turn_and_samples_the_last(tok, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [CONVO])
    splits = load(tok, format="chat", train=str(path), eval=str(path))
    example = splits.train[0]
    assert masked(tok, example) == "Hello<|im_end|>Later<|im_end|>"
    sample = splits.eval_samples[0]
    assert sample.reference == "Later"
    assert tok.decode(sample.prompt_ids).endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert example.input_ids[: len(sample.prompt_ids)] == sample.prompt_ids
    assert sample.prompt == "user: Hi\nassistant: Hello\nuser: Bye"


def test_chat_system_prompt_only_fills_missing_system_messages(tok, tmp_path):
    rows = [CONVO, {"messages": CONVO["messages"][1:3]}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    splits = load(tok, format="chat", train=str(path), system_prompt="Default sys.")
    assert "Default sys." not in tok.decode(splits.train[0].input_ids)
    assert "Default sys." in tok.decode(splits.train[1].input_ids)


def test_chat_without_a_template_uses_the_plain_layout(tmp_path):
    tok = tiny_tokenizer(chat_template=None)
    path = write_jsonl(tmp_path / "c.jsonl", [CONVO])
    example = load(tok, format="chat", train=str(path)).train[0]
    assert tok.decode(example.input_ids).startswith("You are terse.\n\nUser:\nHi\n\nAssistant:\nHello<|im_end|>")
    assert masked(tok, example) == "Hello<|im_end|>Later<|im_end|>"


def test_chat_row_problems_name_file_line_and_field(tok, tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            CONVO,
            {"msgs": []},
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"},
                    {"role": "bot", "content": "c"},
                ]
            },
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "b"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"messages": [{"role": "assistant", "content": "I start"}, {"role": "user", "content": "hm"}]},
        ],
    )
    with pytest.raises(DataError) as err:
        load(tok, format="chat", train=str(path))
    assert err.value.problems == [
        f"{path}:2: messages: missing (fields present: msgs)",
        f"{path}:3: messages[2].role: must be one of system, user, assistant, tool (got 'bot')",
        f"{path}:4: messages[0].content: must be a string (got int)",
        f"{path}:5: messages: needs at least one assistant turn (nothing to learn otherwise)",
        f"{path}:6: messages[0].role: the first non-system message must be from the user (got 'assistant')",
    ]
