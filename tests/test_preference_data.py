"""Feedback data: every form parses, bad rows are named, and tokenised pairs have the layout training relies on."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl
from tiny import tiny_tokenizer

from tuneforge.data.types import IGNORE_INDEX, DataError
from tuneforge.methods.preference import feedback as fb
from tuneforge.methods.preference.data import (
    PairExample,
    RankingExample,
    UnpairedExample,
    collate_pairs,
    collate_pairs_shared,
    collate_rankings,
    collate_unpaired,
    encode_feedback,
    group_scores,
    mismatched,
    truncate,
)
from tuneforge.methods.preference.feedback import PreferencePair, Ranking, Unpaired, read_feedback
from tuneforge.methods.preference.losses import bradley_terry, ranking_loss

USER = {"role": "user", "content": "hi"}


def ask(content: str) -> dict:
    return {"role": "assistant", "content": content}


@pytest.fixture
def tok():
    return tiny_tokenizer()


def read(tmp_path, rows, fmt="auto", name="data.jsonl", **kw):
    return read_feedback(str(write_jsonl(tmp_path / name, rows)), fmt, **kw)


def problems_of(tmp_path, rows, fmt="auto", name="bad.jsonl", **kw) -> list[str]:
    with pytest.raises(DataError) as err:
        read(tmp_path, rows, fmt, name, **kw)
    return err.value.problems


# ----------------------------------------------------------------------------- pairs


def test_text_pairs_parse_with_optional_margin(tmp_path):
    got = read(
        tmp_path,
        [
            {"prompt": "Q", "chosen": "good", "rejected": "bad", "margin": 1.5},
            {"prompt": "R", "chosen": "yes", "rejected": "no"},
        ],
    )
    first, second = got.records
    assert (first.prompt, first.chosen, first.rejected, first.margin) == ("Q", "good", "bad", 1.5)
    assert second.margin is None and first.where.endswith("data.jsonl:1") and second.where.endswith(":2")
    assert got.reports[0].form == "pairs" and got.reports[0].pairs == 2 and got.reports[0].rows == 2


def test_chat_pairs_parse_in_every_shape(tmp_path):
    rows = [
        {"prompt": [USER], "chosen": [ask("a")], "rejected": [ask("b")]},  # TRL's conversational shape
        {"prompt": "hi", "chosen": [ask("a")], "rejected": "b"},  # string prompt, mixed responses
        {
            "chosen": [{"role": "system", "content": "s"}, USER, ask("x"), USER, ask("a")],  # whole conversations
            "rejected": [{"role": "system", "content": "s"}, USER, ask("x"), USER, ask("b")],
        },
    ]
    convo, text, whole = read(tmp_path, rows, "pairs").records
    assert convo.prompt == [USER] and (convo.chosen, convo.rejected) == ("a", "b")
    assert text.prompt == "hi" and (text.chosen, text.rejected) == ("a", "b")
    assert whole.prompt == [{"role": "system", "content": "s"}, USER, ask("x"), USER]
    assert (whole.chosen, whole.rejected) == ("a", "b")


def test_conversations_that_diverge_before_the_last_turn_are_refused(tmp_path):
    rows = [{"chosen": [USER, ask("x"), USER, ask("a")], "rejected": [USER, ask("y"), USER, ask("b")]}]
    (line,) = problems_of(tmp_path, rows)
    assert line.endswith(
        "bad.jsonl:1: rejected[1]: differs from chosen[1]; without a prompt field, chosen and "
        "rejected must share every turn before their last (assistant) message: that is the prompt"
    )


def test_chosen_equal_to_rejected_is_dropped_counted_and_warned(tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "same", "rejected": "same "},
        {"prompt": "Q", "chosen": "a", "rejected": "b"},
        {"chosen": [USER, ask("z")], "rejected": [USER, ask("z")]},
    ]
    got = read(tmp_path, rows)
    report = got.reports[0]
    assert [r.chosen for r in got.records] == ["a"]
    assert report.rows == 3 and report.records == 1 and report.pairs == 1
    assert [w.rsplit(":", 1)[-1] for w in report.dropped[fb.SAME]] == ["1", "3"]
    (warning,) = got.warnings
    assert "2 dropped: chosen == rejected" in warning and "data.jsonl:1" in warning
    assert "dropped 2 chosen == rejected" in report.summary()


# ----------------------------------------------------------------------------- rankings


def test_four_way_ranking_is_one_record_of_six_pairs(tmp_path):
    got = read(tmp_path, [{"prompt": "Q", "responses": ["B", "C", "D", "A"]}])
    (ranking,) = got.records
    assert isinstance(ranking, Ranking) and ranking.responses == ["B", "C", "D", "A"]
    assert ranking.pairs() == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert got.reports[0].records == 1 and got.reports[0].pairs == 6


def test_ranks_order_responses_and_ties_are_refused(tmp_path):
    got = read(tmp_path, [{"prompt": "Q", "responses": ["A", "B", "C", "D"], "ranks": [4, 1, 2, 3]}])
    assert got.records[0].responses == ["B", "C", "D", "A"]
    (line,) = problems_of(tmp_path, [{"prompt": "Q", "responses": ["A", "B", "C"], "ranks": [1, 2, 2]}])
    assert "bad.jsonl:1: ranks: responses[1] and responses[2] share rank 2; ties are refused" in line


def test_a_repeated_ranked_response_keeps_its_best_copy(tmp_path):
    got = read(
        tmp_path,
        [{"prompt": "Q", "responses": ["A", "B", "A", "C"]}, {"prompt": "Q", "responses": ["A", "A"]}],
        "rankings",
    )
    (ranking,) = got.records
    assert ranking.responses == ["A", "B", "C"] and got.reports[0].pairs == 3
    assert len(got.reports[0].dropped[fb.REPEATED]) == 2 and len(got.reports[0].dropped[fb.SAME]) == 1


# ----------------------------------------------------------------------------- ratings


def test_ratings_become_pairs_by_score_difference_with_min_gap(tmp_path):
    rows = [
        {"prompt": "Q", "response": "r5", "score": 5},
        {"prompt": "P", "response": "p1", "score": 1},
        {"prompt": "Q", "response": "r4", "score": 4},
        {"prompt": "Q", "response": "r1", "score": 1},
        {"prompt": "P", "response": "p1b", "score": 1},
        {"prompt": "S", "response": "alone", "score": 3},
    ]
    got = read(tmp_path, rows, min_gap=2)
    assert [(p.chosen, p.rejected) for p in got.records] == [("r5", "r1"), ("r4", "r1")]
    path = tmp_path / "data.jsonl"
    assert [p.where for p in got.records] == [f"{path}:1 ≻ {path}:4", f"{path}:3 ≻ {path}:4"]
    dropped = {reason: len(at) for reason, at in got.reports[0].dropped.items()}
    assert dropped == {fb.BELOW_GAP: 1, fb.TIED: 1, fb.ALONE: 1}
    assert len(read(tmp_path, rows, min_gap=0).records) == 3  # the gap-1 pair comes back; ties never pair


def test_ratings_in_one_row_and_in_csv(tmp_path):
    got = read(tmp_path, [{"prompt": "Q", "responses": ["lo", "hi", "mid"], "scores": [0.1, 0.9, 0.5]}])
    assert [(p.chosen, p.rejected) for p in got.records] == [("hi", "mid"), ("hi", "lo"), ("mid", "lo")]
    got = read(tmp_path, [{"prompt": "Q", "responses": ["a", "b"], "scores": [0.3, 0.1]}], min_gap=0.2)
    assert len(got.records) == 1  # a gap equal to min_gap is kept, float rounding aside
    csv = tmp_path / "r.csv"
    csv.write_text("prompt,response,score\nQ,a,2\nQ,b,1.5\n")
    (pair,) = read_feedback(str(csv)).records
    assert (pair.chosen, pair.rejected, pair.where) == ("a", "b", f"{csv}:2 ≻ {csv}:3")


# ----------------------------------------------------------------------------- thumbs and corrections


def test_thumbs_give_unpaired_records_with_desirable_flags(tmp_path):
    labels = [True, False, "up", "Down", 1, 0, "true", "0"]
    rows = [{"prompt": "Q", ("completion" if i % 2 else "response"): f"r{i}", "label": v} for i, v in enumerate(labels)]
    got = read(tmp_path, rows)
    assert all(isinstance(r, Unpaired) for r in got.records)
    assert [r.desirable for r in got.records] == [True, False, True, False, True, False, True, False]
    assert got.reports[0].desirable == 4 and got.reports[0].pairs == 0
    assert "8 unpaired (4 desirable, 4 undesirable)" in got.reports[0].summary()
    (line,) = problems_of(tmp_path, [{"prompt": "Q", "completion": "x", "label": "meh"}])
    assert line.endswith('bad.jsonl:1: label: must be true/false, "up"/"down" or 1/0 (got \'meh\')')


def test_corrections_prefer_the_corrected_response(tmp_path):
    got = read(
        tmp_path,
        [
            {"prompt": "Q", "response": "wrong", "correction": "right"},
            {"prompt": [USER], "original": "old", "corrected": [ask("new")]},
            {"prompt": "Q", "response": "same", "correction": "same"},
        ],
    )
    assert [(p.chosen, p.rejected) for p in got.records] == [("right", "wrong"), ("new", "old")]
    assert got.reports[0].form == "corrections" and len(got.reports[0].dropped[fb.SAME]) == 1


# ----------------------------------------------------------------------------- errors and detection


def test_malformed_rows_name_file_line_and_field(tmp_path):
    rows = [
        {"prompt": "Q", "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": "a"},
        {"prompt": [{"role": "bot", "content": "x"}], "chosen": "a", "rejected": "b"},
        {"prompt": "Q", "chosen": "", "rejected": [ask("x"), ask("y")]},
        {"prompt": "Q", "chosen": "a", "rejected": "b", "margin": "wide"},
        {"prompt": [USER, ask("x")], "chosen": "a", "rejected": "b"},
    ]
    lines = problems_of(tmp_path, rows)
    path = str(tmp_path / "bad.jsonl")
    assert lines == [
        f"{path}:2: rejected: missing (fields present: prompt, chosen)",
        f"{path}:3: prompt[0].role: must be one of system, user, assistant (got 'bot')",
        f"{path}:4: chosen: must not be empty",
        f"{path}:4: rejected: a response given as messages must be exactly one assistant message "
        "(got roles: assistant, assistant)",
        f"{path}:5: margin: must be a finite number (got 'wide')",
        f"{path}:6: prompt: a chat prompt must start (after any system message) and end with a user turn; "
        "the model writes the next assistant turn (roles: user, assistant)",
    ]


def test_every_malformed_row_of_every_form_is_named(tmp_path):
    cases = {
        "rankings": ({"prompt": "Q", "responses": ["only"]}, "responses: a ranking needs at least 2 responses"),
        "ratings": ({"prompt": "Q", "response": "a"}, "score: missing"),
        "thumbs": ({"prompt": "Q", "label": 1}, "completion (or response): missing"),
        "corrections": (
            {"prompt": "Q", "response": "a", "original": "b", "correction": "c"},
            "original: give one of response or original, not both",
        ),
    }
    for form, (row, expected) in cases.items():
        (line,) = problems_of(tmp_path, [row], form, name=f"{form}.jsonl")
        assert line.startswith(f"{tmp_path / form}.jsonl:1: {expected}"), line


def test_auto_detects_each_form_from_the_first_row(tmp_path):
    firsts = {
        "pairs": {"prompt": "Q", "chosen": "a", "rejected": "b"},
        "rankings": {"prompt": "Q", "responses": ["a", "b"]},
        "ratings": {"prompt": "Q", "responses": ["a", "b"], "scores": [1, 0]},
        "thumbs": {"prompt": "Q", "completion": "a", "label": "up"},
        "corrections": {"prompt": "Q", "response": "a", "corrected": "b"},
    }
    for form, row in firsts.items():
        assert read(tmp_path, [row], name=f"{form}.jsonl").reports[0].form == form
    with pytest.raises(DataError) as err:
        read(tmp_path, [{"prompt": "Q", "completion": "a"}])
    assert err.value.problems == [
        f"{tmp_path / 'data.jsonl'}:1: cannot tell the feedback form from the fields completion, prompt"
    ]
    for form, fields in fb.NEEDS.items():
        assert f"{form}: {fields}" in err.value.hint
    with pytest.raises(ValueError, match="write one of: pairs, rankings"):
        read(tmp_path, [{"prompt": "Q"}], "pair")


def test_sources_are_reported_one_by_one(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "Q", "completion": "a", "label": 0}])
    got = read_feedback([str(a), str(b)])
    assert [(r.source, r.form, r.records) for r in got.reports] == [(str(a), "pairs", 1), (str(b), "thumbs", 1)]
    assert isinstance(got.records[0], PreferencePair) and isinstance(got.records[1], Unpaired)


# ----------------------------------------------------------------------------- tokenisation


def pair(prompt="Q: ", chosen="yes", rejected="no", **kw) -> PreferencePair:
    return PreferencePair(prompt, chosen, rejected, "mem:1", **kw)


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("prompt", ["Q: ", [USER, ask("earlier"), {"role": "user", "content": "again"}]])
def test_prompt_is_a_prefix_and_labels_mask_exactly_the_prompt(tok, chat, prompt):
    (example,), report = encode_feedback(tok, [pair(prompt)], chat=chat, max_length=512)
    p = len(example.prompt_ids)
    for seq, text in ((example.chosen, "yes"), (example.rejected, "no")):
        assert seq.input_ids[:p] == example.prompt_ids
        assert seq.labels == [IGNORE_INDEX] * p + seq.input_ids[p:]
        assert seq.input_ids[-1] == tok.eos_token_id  # the end-of-turn token is the last (scored) token
        assert tok.decode(seq.input_ids[p:-1]) == text  # nothing the template writes after it is kept
    if chat:
        assert tok.decode(example.prompt_ids).endswith("<|im_start|>assistant\n")
    elif isinstance(prompt, str):
        assert example.prompt_ids == tok("Q: ", add_special_tokens=False)["input_ids"]  # plain, verbatim
    else:
        assert tok.decode(example.prompt_ids).endswith("User:\nagain\n\nAssistant:\n")  # PLAIN_CHAT_TEMPLATE
    assert report.examples == 1 and report.loss_tokens == 4 + 3  # "yes"+eos, "no"+eos


def test_truncation_keeps_the_prompt_end_and_the_response_start(tok):
    ids = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731  (one token per byte)
    prompt, responses, cut = truncate(ids("abcdefghij"), [ids("xyz"), ids("uv")], 8)
    assert cut and prompt == ids("fghij") and responses == [ids("xyz"), ids("uv")]  # responses fit: prompt gives way
    prompt, responses, cut = truncate(ids("abcdefghij"), [ids("klmnopqrstuvwxyz")], 8)
    assert prompt == ids("ghij") and responses == [ids("klmn")]  # both long: the prompt keeps half
    assert truncate(ids("ab"), [ids("cd")], 4) == (ids("ab"), [ids("cd")], False)
    (example,), report = encode_feedback(tok, [pair("abcdefghij", "xyz", "uv")], chat=False, max_length=8)
    assert tok.decode(example.chosen.input_ids) == "ghijxyz<|im_end|>" and report.truncated == 1
    assert len(example.rejected.input_ids) == 7 and example.rejected.input_ids[:4] == example.prompt_ids


def test_pairs_identical_after_truncation_are_dropped(tok):
    examples, report = encode_feedback(tok, [pair("Q", "same start A", "same start B")], chat=False, max_length=6)
    assert examples == [] and report.truncated == 1
    assert any("identical responses after truncation" in w for w in report.warnings)


def test_collated_pairs_are_one_tensor_chosen_first_right_padded(tok):
    records = [pair("Q: ", "a", "bbbb", margin=2.0), pair("Q: ", "cc", "d")]
    examples, _ = encode_feedback(tok, records, chat=False, max_length=64)
    batch = collate_pairs(examples, tok.pad_token_id)
    rows = [examples[0].chosen, examples[1].chosen, examples[0].rejected, examples[1].rejected]
    assert batch["input_ids"].shape == (4, 3 + 4 + 1)  # 2B rows; the longest is "Q: bbbb<eos>"
    for b, seq in enumerate(rows):
        n = len(seq.input_ids)
        assert batch["input_ids"][b, :n].tolist() == seq.input_ids and batch["labels"][b, :n].tolist() == seq.labels
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (8 - n)
        assert (batch["input_ids"][b, n:] == tok.pad_token_id).all()
        assert (batch["labels"][b, n:] == IGNORE_INDEX).all()
    assert batch["margin"].tolist() == [2.0, 0.0]


def _hand_pair(prompt: list[int], chosen: list[int], rejected: list[int]) -> PairExample:
    from tuneforge.data.types import Example

    def seq(response):
        return Example(prompt + response, [IGNORE_INDEX] * len(prompt) + response, "")

    return PairExample(prompt, seq(chosen), seq(rejected))


def test_shared_prompt_batch_holds_the_prompt_once_and_scores_what_separate_rows_score():
    """Positions restart for the rejected response; each target comes from the position that predicts it in its
    own sequence (the rejected response's first token from the prompt's last); an empty prompt leaves the first
    response token unscored, as in a separate row."""
    pairs = [_hand_pair([5, 6, 7], [10, 11], [20]), _hand_pair([8], [12], [21, 22, 23]), _hand_pair([], [13, 14], [24])]
    batch = collate_pairs_shared(pairs, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 10, 11, 20], [8, 12, 21, 22, 23, 0], [13, 14, 24, 0, 0, 0]]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 3]
    assert batch["position_ids"][1, :5].tolist() == [0, 1, 1, 2, 3]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 2, 2, 2, -1], [1, 1, 2, -1, -1, -1]]
    width = 6
    flat = batch["score_index"].tolist()
    assert batch["score_counts"].tolist() == [2, 1, 1, 1, 3, 0]  # chosen sequences, then rejected ones
    assert flat == [
        2,
        3,
        width + 0,  # chosen: 10 ← 7, 11 ← 10; 12 ← 8;  row 2's first chosen token unscored
        2 * width + 0,  # 14 ← 13
        2,  # rejected 20 ← the prompt's last (7), not the chosen response's last
        width + 0,
        width + 2,
        width + 3,
    ]  # 21 ← 8, 22 ← 21, 23 ← 22; row 2's rejected 24 unscored
    assert batch["score_targets"].tolist() == [10, 11, 12, 14, 20, 21, 22, 23]
    separate = collate_pairs(pairs, pad_id=0)
    keep = separate["labels"][:, 1:] != IGNORE_INDEX
    assert keep.sum(-1).tolist() == batch["score_counts"].tolist()
    assert separate["labels"][:, 1:][keep].tolist() == batch["score_targets"].tolist()


def test_ranking_batch_is_contiguous_and_regroups_for_the_ranking_loss(tok):
    records = [Ranking("Q", ["A", "B", "C", "D"], "m:1"), Ranking("R", ["x", "y"], "m:2")]
    examples, report = encode_feedback(tok, records, chat=True, max_length=64)
    assert all(isinstance(e, RankingExample) for e in examples) and report.examples == 2
    batch = collate_rankings(examples, tok.pad_token_id)
    assert batch["group"].tolist() == [0, 0, 0, 0, 1, 1] and batch["rank"].tolist() == [0, 1, 2, 3, 0, 1]
    ends = batch["attention_mask"].sum(-1)  # (N,) each row's length; its last token is the end of turn
    assert [tok.decode(row[n - 2 : n]) for row, n in zip(batch["input_ids"], ends)] == [
        f"{c}<|im_end|>" for c in "ABCDxy"
    ]
    scores = torch.tensor([3.0, 1.0, 2.0, 0.5, -1.0, 1.0], requires_grad=True)
    grid, mask = group_scores(scores, batch["group"], batch["rank"])
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
    losses = ranking_loss(grid, mask=mask).losses
    first = bradley_terry(scores[[0, 0, 0, 1, 1, 2]], scores[[1, 2, 3, 2, 3, 3]]).losses.mean()
    second = bradley_terry(scores[[4]], scores[[5]]).losses.mean()
    assert torch.allclose(losses, torch.stack([first, second]))
    losses.sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_thumbs_batch_has_desirable_flags_and_mismatched_rows(tok):
    records = [Unpaired("Q1", "good", True, "m:1"), Unpaired("Q2", "bad", False, "m:2")]
    examples, _ = encode_feedback(tok, records, chat=False, max_length=64)
    assert all(isinstance(e, UnpairedExample) for e in examples)
    batch = collate_unpaired(examples, tok.pad_token_id)
    assert batch["desirable"].dtype == torch.bool and batch["desirable"].tolist() == [True, False]
    assert batch["input_ids"].shape == (2, 2 + 4 + 1)
    kl = mismatched(examples, 64)
    assert [tok.decode(e.response.input_ids) for e in kl] == ["Q1bad<|im_end|>", "Q2good<|im_end|>"]
    assert kl[0].response.labels[:2] == [IGNORE_INDEX] * 2


def test_a_template_that_cannot_mark_responses_is_a_data_error(tok):
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    with pytest.raises(DataError) as err:
        encode_feedback(tok, [pair("Q")], chat=True, max_length=64)
    assert "the end-of-turn token of an assistant turn is not inside the loss mask" in err.value.problems[0]
    examples, _ = encode_feedback(tok, [pair("Q")], chat=False, max_length=64)  # plain text never uses it
    assert isinstance(examples[0], PairExample)


def test_json_array_sources_and_columns(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([{"question": "Q", "good": "a", "bad": "b"}]))
    got = read_feedback(str(path), columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (got.records[0].prompt, got.records[0].chosen, got.records[0].where) == ("Q", "a", f"{path}:1")
