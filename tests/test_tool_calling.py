"""Tool-calling chat data: rendering and masks (fallback and native templates), schema checks with
file:line, the call scorers, serving tools / tool_calls through the openai client, and the bundled task."""

from __future__ import annotations

import json

import openai
import pytest
from conftest import write_jsonl
from tiny import tiny_tokenizer

from tuneforge.config.schema import DataConfig
from tuneforge.data import IGNORE_INDEX, load_splits, validate_data
from tuneforge.data.tools import parse_tool_calls, schema_problems, signature
from tuneforge.eval.scorers import resolve_scorer, tool_call_accuracy, tool_call_name, tool_call_valid
from tuneforge.tasks import tool_calling

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIMER = {
    "type": "function",
    "function": {
        "name": "set_timer",
        "description": "Start a timer.",
        "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
    },
}
ROW = {
    "tools": [WEATHER, TIMER],
    "messages": [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}],
        },
        {"role": "tool", "content": '{"temp": 4}'},
        {"role": "assistant", "content": "It is 4 C."},
    ],
}

# A tools-aware ChatML template in the style of Qwen2.5 (tools listed in the system turn as JSON,
# calls as <tool_call> blocks, results as user turns), written with '\n' inside expressions
# because transformers renders templates with trim_blocks.
NATIVE_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\n# Tools\n' }}{% for t in tools %}{{ t | tojson + '\n' }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' and message.get('tool_calls') %}{{ '<|im_start|>assistant\n' }}"
    "{% for c in message['tool_calls'] %}{{ 'CALL ' + c['function']['name'] + ' ' + c['function']['arguments'] | tojson }}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% elif message['role'] == 'tool' %}{{ '<|im_start|>user\nRESULT ' + message['content'] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def load(tok, path, **kw):
    return load_splits(DataConfig(format="chat", train=str(path), max_length=2048, **kw), tok, use_cache=False)


def expected_ids_and_labels(tok, segments: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Token ids and labels built by hand: each segment tokenised, its tokens targets iff it carries loss."""
    ids, labels = [], []
    for text, loss in segments:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if loss else [IGNORE_INDEX] * len(piece)
    return ids, labels


# ---------------------------------------------------------------------------- rendering and masks


def test_fallback_rendering_masks_token_by_token(tok, tmp_path):
    """ChatML without tool support: tools in the system turn, calls as <tool_call> lines, results as a user
    turn; loss on exactly the call line + its <|im_end|> and the answer + its <|im_end|>."""
    splits = load(tok, write_jsonl(tmp_path / "t.jsonl", [ROW]))
    (example,) = splits.train
    system = (
        "You can call these tools:\n"
        'get_weather(city: string, unit?: "celsius"|"fahrenheit") - Current weather in a city.\n'
        "set_timer(minutes: integer) - Start a timer.\n"
        'Call one with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
    )
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    ids, labels = expected_ids_and_labels(
        tok,
        [
            (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            (f"{call}<|im_end|>", True),
            ('\n<|im_start|>user\n<tool_response>\n{"temp": 4}\n</tool_response><|im_end|>\n', False),
            ("<|im_start|>assistant\n", False),
            ("It is 4 C.<|im_end|>", True),
            ("\n", False),
        ],
    )
    assert example.input_ids == ids
    assert example.labels == labels
    # the held-out sample is the last turn; its prompt is the training ids up to that turn
    (sample,) = load(tok, tmp_path / "t.jsonl", eval=str(tmp_path / "t.jsonl")).eval_samples
    assert sample.reference == "It is 4 C."
    assert example.input_ids[: len(sample.prompt_ids)] == sample.prompt_ids


def test_a_call_turn_is_the_reference_in_the_fallback_format(tok, tmp_path):
    row = {"tools": [WEATHER], "messages": ROW["messages"][:2]}
    path = write_jsonl(tmp_path / "t.jsonl", [row])
    (sample,) = load(tok, path, eval=str(path)).eval_samples
    assert sample.reference == '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert tok.decode(sample.prompt_ids).endswith("Weather in Oslo?<|im_end|>\n<|im_start|>assistant\n")


def test_native_template_gets_tools_and_masks_token_by_token(tmp_path):
    """A template that reads `tools` renders them itself (apply_chat_template(..., tools=...)); the
    tools block and the tool result carry no loss, the template's own call text does."""
    tok = tiny_tokenizer(NATIVE_TEMPLATE)
    (example,) = load(tok, write_jsonl(tmp_path / "t.jsonl", [ROW])).train
    tools = "".join(json.dumps(t) + "\n" for t in ROW["tools"])
    ids, labels = expected_ids_and_labels(
        tok,
        [
            (f"<|im_start|>system\n# Tools\n{tools}<|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            ('CALL get_weather {"city": "Oslo"}<|im_end|>', True),
            ('\n<|im_start|>user\nRESULT {"temp": 4}<|im_end|>\n<|im_start|>assistant\n', False),
            ("It is 4 C.<|im_end|>", True),
            ("\n", False),
        ],
    )
    assert example.input_ids == ids
    assert example.labels == labels


def test_rows_without_tools_render_as_before(tok, tmp_path):
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    (example,) = load(tok, write_jsonl(tmp_path / "t.jsonl", [row])).train
    expected = tok.apply_chat_template(row["messages"], tokenize=False)
    assert tok.decode(example.input_ids) == expected


# ---------------------------------------------------------------------------- validation


def test_validate_reports_each_bad_call_with_file_line_and_field(tok, tmp_path):
    def call(name, arguments):
        return {
            "role": "assistant",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
        }

    user = {"role": "user", "content": "?"}
    rows = [
        ROW,
        {"tools": [WEATHER], "messages": [user, call("get_weather", {"unit": "kelvin"})]},
        {"tools": [WEATHER], "messages": [user, call("get_wether", {"city": "Rome"})]},
        {"tools": [TIMER], "messages": [user, call("set_timer", {"minutes": "ten"})]},
        {"tools": [WEATHER], "messages": [user, call("get_weather", '{"city": "Rome",}')]},
        {"tools": [WEATHER], "messages": [user, call("get_weather", {"city": "Rome", "days": 3})]},
        {"messages": [user, call("get_weather", {"city": "Rome"})]},
        {
            "tools": [WEATHER],
            "messages": [user, {"role": "tool", "content": "{}"}, {"role": "assistant", "content": "x"}],
        },
        {"tools": [{"type": "function", "function": {"description": "no name"}}], "messages": ROW["messages"]},
    ]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    report = validate_data(DataConfig(format="chat", train=str(path)), tok)
    f = str(path)
    assert report.problems == [
        f"{f}:2: messages[1].tool_calls[0].function.arguments: missing required key 'city'",
        f'{f}:2: messages[1].tool_calls[0].function.arguments.unit: "kelvin" is not one of "celsius", "fahrenheit"',
        f"{f}:3: messages[1].tool_calls[0].function.name: unknown function 'get_wether' (tools: get_weather); "
        "did you mean 'get_weather'?",
        f'{f}:4: messages[1].tool_calls[0].function.arguments.minutes: must be integer (got string "ten")',
        f"{f}:5: messages[1].tool_calls[0].function.arguments: not valid JSON (Expecting property name enclosed "
        "in double quotes at char 16)",
        f"{f}:6: messages[1].tool_calls[0].function.arguments.days: not a parameter of this function "
        "(parameters: city, unit)",
        f"{f}:7: messages[1].tool_calls: needs the row's tools (a list of function schemas) to check each call against",
        f"{f}:8: messages[1].role: a tool result must follow an assistant turn with tool_calls",
        f"{f}:9: tools[0].function.name: must be 1-64 letters, digits, '_', '.' or '-' (got None)",
    ]


def test_schema_checker_types_enums_and_nesting():
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "x": {"type": "number"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
            "opt": {"type": ["string", "null"]},
        },
        "required": ["n"],
    }
    assert schema_problems({"n": 3.0, "x": 2, "flag": False, "tags": ["a"], "opt": None}, schema, "args") == []
    assert schema_problems({"n": True, "x": "1", "flag": 1, "tags": ["c"]}, schema, "args") == [
        "args.n: must be integer (got boolean true)",
        'args.x: must be number (got string "1")',
        "args.flag: must be boolean (got integer 1)",
        'args.tags[0]: "c" is not one of "a", "b"',
    ]
    assert schema_problems([], schema, "args") == ["args: must be object (got array [])"]
    assert schema_problems({"n": 1}, {"type": "object", "properties": {"n": {"enum": [1.0]}}}, "a") == []
    assert schema_problems({"n": True}, {"type": "object", "properties": {"n": {"enum": [1]}}}, "a") == [
        "a.n: true is not one of 1"
    ]


def test_signature_lists_required_optional_enums_and_arrays():
    function = {
        "name": "f",
        "description": "Do it.",
        "parameters": {
            "type": "object",
            "properties": {
                "a": {"type": "string", "description": "YYYY-MM-DD"},
                "b": {"type": "array", "items": {"type": "integer"}},
                "c": {"enum": ["x", 2]},
            },
            "required": ["a"],
        },
    }
    assert signature(function) == 'f(a: string (YYYY-MM-DD), b?: integer[], c?: "x"|2) - Do it.'


# ---------------------------------------------------------------------------- parsing and scoring

REF = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}</tool_call>'


def test_parse_tool_calls():
    parsed = parse_tool_calls(
        'Sure.\n<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>\n<tool_call>{"name": "b"}</tool_call>'
    )
    assert (parsed.content, parsed.calls, parsed.broken) == (
        "Sure.",
        [{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}],
        False,
    )
    assert parse_tool_calls('{"name": "a", "parameters": {"x": 1}}').calls == [{"name": "a", "arguments": {"x": 1}}]
    assert parse_tool_calls('{"name": "a", "arguments": "{\\"x\\": 1}"}').calls == [
        {"name": "a", "arguments": {"x": 1}}
    ]
    assert parse_tool_calls('<tool_call>{"name": "a", "arguments": {"x": 1}').broken  # cut short
    assert parse_tool_calls("<tool_call>{'name': 'a'}</tool_call>").broken  # not JSON
    plain = parse_tool_calls("It is sunny {really}.")
    assert (plain.content, plain.calls, plain.broken) == ("It is sunny {really}.", [], False)


@pytest.mark.parametrize(
    "prediction, accuracy, name, valid",
    [
        (REF, 1, 1, 1),
        # argument order, key order, case and spacing of strings do not matter; a bare JSON call is read too
        ('{"name": "get_weather", "arguments": {"unit": "Celsius", "city": "oslo"}}', 1, 1, 1),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>', 0, 1, 1),  # missing unit
        (
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "fahrenheit"}}</tool_call>',
            0,
            1,
            1,
        ),
        ('<tool_call>{"name": "set_timer", "arguments": {"city": "Oslo", "unit": "celsius"}}</tool_call>', 0, 0, 1),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}</tool_call>', 0, 0, 0),
        (REF + "\n" + REF, 0, 0, 1),  # one call too many
        ("It is 4 degrees in Oslo.", 0, 0, 0),
    ],
)
def test_tool_call_scorers_on_hand_made_cases(prediction, accuracy, name, valid):
    assert (tool_call_accuracy(prediction, REF), tool_call_name(prediction, REF), tool_call_valid(prediction, REF)) == (
        accuracy,
        name,
        valid,
    )


def test_a_plain_reference_wants_no_call_and_scorers_resolve_by_name():
    assert tool_call_accuracy("Hello!", "Hi there.") == 1.0
    assert tool_call_accuracy(REF, "Hi there.") == 0.0
    two = '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>'
    swapped = '<tool_call>{"name": "b", "arguments": {"x": 1.0}}</tool_call><tool_call>{"name": "a", "arguments": {}}</tool_call>'
    assert tool_call_accuracy(swapped, two) == 1.0  # parallel calls: order free, 1 == 1.0
    assert resolve_scorer("tool_call_accuracy") is tool_call_accuracy


# ---------------------------------------------------------------------------- serving


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory):
    from test_serve import lively_model_dir

    from tuneforge.serve import ServerThread, build
    from tuneforge.serve.settings import ServeSettings

    base = lively_model_dir(tmp_path_factory.mktemp("tools") / "base")
    app, _, worker = build(ServeSettings(model=str(base), served_name="base"))
    with ServerThread(app) as url:
        yield {"worker": worker, "client": openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)}


@pytest.fixture
def scripted(tool_server, monkeypatch):
    """The worker answers every job with a set text at once (a tiny model never writes a call), and keeps the jobs."""
    jobs, reply = [], {"text": ""}

    def submit(job):
        jobs.append(job)
        job.on_text(reply["text"])
        job.on_done("stop", len(job.prompt_ids), 7)

    monkeypatch.setattr(tool_server["worker"], "submit", submit)
    return jobs, reply


def ask(client, messages, **kwargs):
    return client.chat.completions.create(model="base", messages=messages, max_tokens=32, **kwargs)


def test_serve_returns_openai_tool_calls(tool_server, scripted):
    jobs, reply = scripted
    reply["text"] = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    response = ask(tool_server["client"], [{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER, TIMER])
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
        "function",
        "get_weather",
        {"city": "Oslo"},
    )
    assert call.id.startswith("call-")
    tokenizer = tiny_tokenizer()
    prompt = tokenizer.decode(jobs[-1].prompt_ids)
    assert 'get_weather(city: string, unit?: "celsius"|"fahrenheit") - Current weather in a city.' in prompt

    # the call and its result go back in the next request, rendered as training renders them
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 4}'},
    ]
    reply["text"] = "It is 4 C in Oslo."
    response = ask(tool_server["client"], history, tools=[WEATHER])
    assert (response.choices[0].finish_reason, response.choices[0].message.content) == ("stop", "It is 4 C in Oslo.")
    assert response.choices[0].message.tool_calls is None
    prompt = tokenizer.decode(jobs[-1].prompt_ids)
    assert prompt.endswith(
        '<|im_start|>assistant\n<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|im_end|>\n'
        '<|im_start|>user\n<tool_response>\n{"temp": 4}\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )


def test_serve_returns_text_when_the_answer_is_no_valid_call(tool_server, scripted):
    _, reply = scripted
    for text in (
        "Hello there.",
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}',  # cut short
        '<tool_call>{"name": "book_flight", "arguments": {}}</tool_call>',  # not one of the request's tools
    ):
        reply["text"] = text
        choice = ask(tool_server["client"], [{"role": "user", "content": "hi"}], tools=[WEATHER]).choices[0]
        assert (choice.finish_reason, choice.message.content, choice.message.tool_calls) == ("stop", text, None)


def test_serve_tool_choice_none_renders_no_tools_and_reads_no_calls(tool_server, scripted):
    jobs, reply = scripted
    reply["text"] = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    choice = ask(
        tool_server["client"], [{"role": "user", "content": "hi"}], tools=[WEATHER], tool_choice="none"
    ).choices[0]
    assert (choice.finish_reason, choice.message.content) == ("stop", reply["text"])
    assert "You can call these tools" not in tiny_tokenizer().decode(jobs[-1].prompt_ids)


@pytest.mark.parametrize(
    "extra, param, says",
    [
        ({"tool_choice": "required"}, "tool_choice", 'tool_choice "required" is not supported'),
        ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice", "not supported"),
        ({"stream": True}, "stream", "stream together with tools is not supported"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools", "tools[0].function.name"),
    ],
)
def test_serve_refuses_what_it_cannot_do_by_name(tool_server, scripted, extra, param, says):
    with pytest.raises(openai.BadRequestError) as caught:
        ask(tool_server["client"], [{"role": "user", "content": "hi"}], **{"tools": [WEATHER], **extra})
    error = caught.value.body
    assert error["param"] == param and says in error["message"], error
    assert scripted[0] == []  # refused before any work


def test_serve_a_history_call_that_is_not_json_is_a_400_naming_messages(tool_server, scripted):
    history = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{city"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        ask(tool_server["client"], history, tools=[WEATHER])
    error = caught.value.body
    assert error["param"] == "messages"
    assert error["message"].startswith("messages[1].tool_calls[0].function.arguments: not valid JSON")
    assert scripted[0] == []


# ---------------------------------------------------------------------------- the bundled task


def test_task_is_deterministic_valid_and_splits_share_no_frame_or_entity(tok, tmp_path):
    a = tool_calling.write_task_files(tmp_path / "a", sizes={"train": 40, "dev": 10, "test": 10})
    b = tool_calling.write_task_files(tmp_path / "b", sizes={"train": 40, "dev": 10, "test": 10})
    assert all(a[s].read_bytes() == b[s].read_bytes() for s in tool_calling.SPLITS)
    for path in a.values():  # every row passes the schema checks
        assert validate_data(DataConfig(format="chat", train=str(path), max_length=4096), tok).problems == []
    for pools in (tool_calling.CITIES, tool_calling.TITLES, tool_calling.TIMER_LABELS):
        sets = [set(pools[s].split("|")) for s in tool_calling.SPLITS]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    for frames in tool_calling.FRAMES.values():
        sets = [set(frames[s]) for s in tool_calling.SPLITS]
        assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_shipped_task_files_are_the_generators():
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "examples" / "tool_calling"
    rows = tool_calling.make_splits()
    for split in tool_calling.SPLITS:
        lines = (shipped / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == rows[split]
    test = rows["test"]
    assert len(test) == 100 and all(len(r["messages"]) == 2 and "tool_calls" in r["messages"][1] for r in test)
