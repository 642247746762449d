"""Chat rendering: loss masks from positions, prompts as exact prefixes, template checks."""

import pytest
from tiny import tiny_tokenizer

from tuneforge.data import IGNORE_INDEX, check_template, render_conversation, render_prompt
from tuneforge.data.templates import PLAIN_CHAT_TEMPLATE, TemplateError, boundary_warnings, use_chat_template

ONE_TURN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
TWO_TURNS = ONE_TURN + [{"role": "user", "content": "Again?"}, {"role": "assistant", "content": "Sure thing"}]

# Puts each turn's end marker at the start of the *next* turn's header, so the
# assistant's end-of-turn token lands outside its span: the model would never
# learn to stop.
END_IN_NEXT_HEADER = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_end|>\n<|im_start|>assistant\n' }}{% endif %}"
)
# Writes the number of messages up front: earlier renderings are not prefixes.
REWRITES_HISTORY = (
    "{{ messages | length }}{{ ' messages\n' }}"
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Renders the assistant header but drops the assistant's words: nothing to learn.
DROPS_ASSISTANT = (
    "{% for message in messages %}{% if message['role'] != 'assistant' %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def masked_text(tok, ids, labels):
    return tok.decode([i for i, label in zip(ids, labels) if label != IGNORE_INDEX])


def test_loss_covers_assistant_content_and_end_of_turn_only(tok):
    ids, labels = render_conversation(tok, ONE_TURN)
    assert len(ids) == len(labels)
    assert masked_text(tok, ids, labels) == "Yo<|im_end|>"
    # pad == eos == <|im_end|>: the system and user turns end with the same id and must stay masked.
    eos = tok.eos_token_id
    assert ids.count(eos) == 3
    assert [label for i, label in zip(ids, labels) if i == eos].count(eos) == 1
    # the span is contiguous and ends right at the end-of-turn token (the trailing "\n" is not a target)
    positions = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
    assert positions == list(range(positions[0], positions[-1] + 1))
    assert ids[positions[-1]] == eos and tok.decode(ids[positions[-1] + 1 :]) == "\n"


def test_every_assistant_turn_is_in_the_loss(tok):
    ids, labels = render_conversation(tok, TWO_TURNS)
    assert masked_text(tok, ids, labels) == "Yo<|im_end|>Sure thing<|im_end|>"
    assert "Again?" not in masked_text(tok, ids, labels)


def test_system_message_is_not_in_the_loss(tok):
    messages = [{"role": "system", "content": "Be brief."}] + ONE_TURN
    ids, labels = render_conversation(tok, messages)
    assert "Be brief." in tok.decode(ids)
    assert "tiny test model" not in tok.decode(ids)  # our system prompt replaces the default one
    assert masked_text(tok, ids, labels) == "Yo<|im_end|>"


def test_completion_only_loss_false_targets_every_token(tok):
    ids, labels = render_conversation(tok, TWO_TURNS, completion_only_loss=False)
    assert labels == ids


def test_generation_prompt_is_an_exact_prefix_of_training_ids(tok):
    ids, labels = render_conversation(tok, TWO_TURNS)
    prompt = render_prompt(tok, TWO_TURNS[:3])
    assert ids[: len(prompt)] == prompt
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    # the answer starts exactly where the prompt ends
    assert tok.decode(ids[len(prompt) :]).startswith("Sure thing<|im_end|>")
    assert labels[len(prompt) - 1] == IGNORE_INDEX and labels[len(prompt)] != IGNORE_INDEX


def test_check_template_passes_a_good_template(tok):
    assert check_template(tok, [ONE_TURN, TWO_TURNS]) == []
    assert boundary_warnings(tok, [ONE_TURN, TWO_TURNS]) == []


def test_check_template_catches_a_masked_end_of_turn_token():
    tok = tiny_tokenizer(END_IN_NEXT_HEADER)
    ids, labels = render_conversation(tok, TWO_TURNS)
    assert masked_text(tok, ids, labels) == "YoSure thing"  # the end markers fell outside the spans
    problems = check_template(tok, [TWO_TURNS])
    assert problems and all("end-of-turn token" in p and "not inside the loss mask" in p for p in problems)
    assert len(problems) == 2  # one per assistant turn


def test_check_template_catches_a_template_that_rewrites_history():
    tok = tiny_tokenizer(REWRITES_HISTORY)
    with pytest.raises(TemplateError, match="not a prefix"):
        render_conversation(tok, ONE_TURN)
    problems = check_template(tok, [ONE_TURN])
    assert any("is not a prefix" in p for p in problems)


def test_check_template_reports_zero_loss_tokens():
    tok = tiny_tokenizer(DROPS_ASSISTANT)
    problems = check_template(tok, [ONE_TURN])
    assert any("no loss tokens" in p for p in problems)


def test_plain_fallback_template_masks_content_and_eos():
    tok = tiny_tokenizer(chat_template=None)
    ids, labels = render_conversation(tok, TWO_TURNS, chat_template=PLAIN_CHAT_TEMPLATE)
    assert tok.decode(ids).startswith("User:\nHi\n\nAssistant:\nYo<|im_end|>")
    assert masked_text(tok, ids, labels) == "Yo<|im_end|>Sure thing<|im_end|>"
    assert check_template(tok, [TWO_TURNS], chat_template=PLAIN_CHAT_TEMPLATE) == []
    prompt = render_prompt(tok, TWO_TURNS[:3], chat_template=PLAIN_CHAT_TEMPLATE)
    assert ids[: len(prompt)] == prompt and tok.decode(prompt).endswith("Assistant:\n")


def test_template_mode_resolution():
    with_template, without = tiny_tokenizer(), tiny_tokenizer(chat_template=None)
    assert use_chat_template(with_template, "auto") is True
    assert use_chat_template(without, "auto") is False
    assert use_chat_template(with_template, "plain") is False
    with pytest.raises(TemplateError, match="template: 'chat' needs a tokenizer with a chat template"):
        use_chat_template(without, "chat")
