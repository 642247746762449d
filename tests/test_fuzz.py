"""Property-based fuzzing (Hypothesis) of everything that reads untrusted input.

Targets: the config loader (YAML trees grown from the shipped configs: wrong types, unknown keys at every
depth, extreme numbers, unicode; raw YAML text; ``key=value`` overrides), each data format's reader (chat,
prompt_completion, text, natural_instructions, classification, pairs / scored pairs, preference feedback:
truncated rows, wrong nesting, huge strings, NUL bytes, mixed encodings, BOMs, CRLF), and the server's
request decoding and models (raw body bytes → a request, or a 400).

The invariant, everywhere: a valid result, or the error the module promises, which names the place (a
``ConfigError``; a problem line starting with ``file:line`` or the file; an ``APIError`` 400 naming the
field), never another exception. Each example runs in an empty working folder with its own cache folder;
nothing may be written outside the folder it was given.

The default test run takes a fixed-seed slice (``TUNEFORGE_FUZZ_EXAMPLES``, default 40 per target,
derandomized). ``make fuzz`` runs 10,000 per target with fresh seeds and prints Hypothesis' statistics.
"""

import asyncio
import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tiny import tiny_tokenizer

EXAMPLES = int(os.environ.get("TUNEFORGE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=EXAMPLES <= 1000,  # the default run's slice is the same every time
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
ROOT = Path(__file__).resolve().parent.parent
TOK = tiny_tokenizer()


@contextlib.contextmanager
def sandbox():
    """An empty working folder and cache folder; yields the folder for inputs. Fails if anything else appears."""
    previous, cache = os.getcwd(), os.environ.get("TUNEFORGE_CACHE")
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work, inputs, caches = Path(tmp, "cwd"), Path(tmp, "in"), Path(tmp, "cache")
        for folder in (work, inputs, caches):
            folder.mkdir()
        os.chdir(work)
        os.environ["TUNEFORGE_CACHE"] = str(caches)
        try:
            yield inputs
            written = [p for folder in (work, caches) for p in folder.rglob("*")]
            assert not written, f"written outside the input folder: {written[:3]}"
        finally:
            os.chdir(previous)
            if cache is None:
                os.environ.pop("TUNEFORGE_CACHE", None)
            else:
                os.environ["TUNEFORGE_CACHE"] = cache


# ---------------------------------------------------------------------------- values

NASTY_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "a\x00b",
        "\ufeff",
        "\r\n",
        "\r",
        "\u2028",
        "é",
        "日本語",
        "🙂",
        "\ud800",
        "<|im_end|>",
        "{{ x }}",
    ]
)
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT, st.just("x" * 100_000))
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 2**64, -(2**63) - 1, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, float("nan"), float("inf"), -0.0]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=12
)


def mutated(base: object, draw, depth: int = 0) -> object:
    """``base`` with a few random edits at random depths: a value of the wrong type, an unknown key,
    a key removed, a list where a mapping was, ... (the tree stays recognisably the real schema)."""
    if isinstance(base, dict) and base and depth < 6:
        out = dict(base)
        for _ in range(draw(st.integers(0, 3))):
            action = draw(st.sampled_from(["recurse", "recurse", "replace", "unknown", "delete", "typo"]))
            key = draw(st.sampled_from(sorted(out, key=str))) if out else None
            if key is None or action == "unknown":
                out[draw(st.one_of(TEXT, st.sampled_from(["learnig_rate", "type", "0", "method"])))] = draw(JSON)
            elif action == "recurse":
                out[key] = mutated(out[key], draw, depth + 1)
            elif action == "replace":
                out[key] = draw(JSON)
            elif action == "delete":
                del out[key]
            else:
                out[str(key)[:-1] + "x"] = out.pop(key)
        return out
    if isinstance(base, list) and base and depth < 6:
        out_list = list(base)
        index = draw(st.integers(0, len(out_list) - 1))
        out_list[index] = mutated(out_list[index], draw, depth + 1)
        return out_list
    return draw(st.one_of(st.just(base), JSON))


# ---------------------------------------------------------------------------- the config loader


def _shipped_configs() -> list[dict]:
    configs = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if isinstance(data, dict) and "method" in data:
            configs.append(data)
    return configs


SHIPPED = _shipped_configs()


def _check_config_error(exc, source: str) -> None:
    assert exc.problems and all(isinstance(p, str) and p.strip() for p in exc.problems)
    assert str(exc).startswith(f"{source}:")


@FUZZ
@given(st.data())
def test_fuzz_config_trees_validate_or_name_the_key(data):
    from tuneforge.config import ConfigError, load_config

    tree = mutated(data.draw(st.sampled_from(SHIPPED)), data.draw)
    assume(isinstance(tree, dict))
    with sandbox() as inputs:
        path = inputs / "fuzzed.yaml"
        try:
            path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
        except (yaml.YAMLError, UnicodeEncodeError):  # a lone surrogate: not writable as YAML at all
            return
        try:
            config = load_config(path)
        except ConfigError as exc:
            _check_config_error(exc, str(path))
        else:
            assert config.method == tree["method"]


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200).map(lambda t: t.encode("utf-8", errors="surrogatepass")),
        st.binary(max_size=200),
        st.sampled_from([b"\xef\xbb\xbfmethod: sft\r\n", b"method: sft\x00", b"[" * 5000, b"a: &a [*a]", b"\xff\xfe"]),
    )
)
def test_fuzz_raw_yaml_files_are_a_config_or_a_config_error(blob):
    from tuneforge.config import ConfigError, load_config

    with sandbox() as inputs:
        path = inputs / "raw.yaml"
        path.write_bytes(blob)
        try:
            load_config(path)
        except ConfigError as exc:
            _check_config_error(exc, exc.source)
            assert exc.source.startswith(str(path))


@FUZZ
@given(
    st.lists(
        st.one_of(st.text(max_size=40), st.sampled_from(["a.b=1", "a=", "=1", "..=x", "a.b=[", "a=1"])), max_size=4
    )
)
def test_fuzz_overrides_parse_or_name_the_override(overrides):
    from tuneforge.config import ConfigError, load_config

    base = SHIPPED[0]
    try:
        load_config(data=base, overrides=overrides)
    except ConfigError as exc:
        _check_config_error(exc, exc.source)


# ---------------------------------------------------------------------------- data files

ROLES = st.sampled_from(["system", "user", "assistant", "tool", "", "USER", None])
ROWS = {
    "chat": st.fixed_dictionaries(
        {"messages": st.lists(st.fixed_dictionaries({"role": ROLES, "content": TEXT}), max_size=4)}
    ),
    "prompt_completion": st.one_of(
        st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT}),
        st.fixed_dictionaries({"instruction": TEXT, "input": TEXT, "output": TEXT}),
    ),
    "text": st.fixed_dictionaries({"text": TEXT}),
    "classification": st.fixed_dictionaries(
        {"text": TEXT, "label": st.one_of(st.sampled_from(["pos", "neg", "0", "1", "", 0, 1, 2, 1.5]), SCALARS)}
    ),
    "pairs": st.fixed_dictionaries(
        {"anchor": TEXT, "positive": TEXT}, optional={"negative": st.one_of(TEXT, st.lists(TEXT, max_size=3))}
    ),
    "scored_pairs": st.fixed_dictionaries({"text_a": TEXT, "text_b": TEXT, "score": st.one_of(NUMBERS, TEXT)}),
    "preference": st.one_of(
        st.fixed_dictionaries({"prompt": TEXT, "chosen": TEXT, "rejected": TEXT}, optional={"margin": NUMBERS}),
        st.fixed_dictionaries({"prompt": TEXT, "responses": st.lists(TEXT, max_size=4)}),
        st.fixed_dictionaries({"prompt": TEXT, "response": TEXT, "score": NUMBERS}),
        st.fixed_dictionaries({"prompt": TEXT, "completion": TEXT, "label": SCALARS}),
        st.fixed_dictionaries({"prompt": TEXT, "response": TEXT, "correction": TEXT}),
        st.fixed_dictionaries(
            {
                "prompt": st.lists(st.fixed_dictionaries({"role": ROLES, "content": TEXT}), max_size=3),
                "chosen": TEXT,
                "rejected": TEXT,
            }
        ),
    ),
}


@st.composite
def jsonl_bytes(draw, row_strategy) -> bytes:
    """A JSONL file around the format's rows: some rows mutated or replaced by any JSON, then byte-level harm."""
    rows = draw(st.lists(st.one_of(row_strategy, row_strategy.map(lambda r: r), JSON), min_size=0, max_size=6))
    rows = [mutated(row, draw) if draw(st.booleans()) else row for row in rows]
    lines = []
    for row in rows:
        try:
            line = json.dumps(row, ensure_ascii=draw(st.booleans()))
        except ValueError:
            line = json.dumps(row)
        lines.append(line.encode("utf-8", errors="surrogatepass"))
    newline = draw(st.sampled_from([b"\n", b"\r\n", b"\r"]))
    blob = newline.join(lines)
    harm = draw(st.sampled_from(["none", "bom", "nul", "truncate", "latin1", "utf16", "junk", "blank lines"]))
    if harm == "bom":
        blob = b"\xef\xbb\xbf" + blob
    elif harm == "nul" and blob:
        at = draw(st.integers(0, len(blob)))
        blob = blob[:at] + b"\x00" + blob[at:]
    elif harm == "truncate" and blob:
        blob = blob[: draw(st.integers(0, len(blob) - 1))]
    elif harm == "latin1":
        blob = blob + newline + json.dumps({"text": "café"}, ensure_ascii=False).encode("latin-1")
    elif harm == "utf16":
        blob = blob.decode("utf-8", errors="ignore").encode("utf-16")
    elif harm == "junk":
        blob = blob + newline + draw(st.binary(max_size=40))
    elif harm == "blank lines":
        blob = newline + newline.join(lines + [b"", b"   "]) + newline
    return blob


def _check_problems(problems: list[str], path: Path) -> None:
    """Each problem names its place: the file (``file:line: field: ...``), or the split as a whole."""
    for problem in problems:
        assert isinstance(problem, str) and problem.startswith((str(path), "train: ", "eval: ", "… and ")), problem


def _write(inputs: Path, name: str, blob: bytes) -> Path:
    path = inputs / name
    path.write_bytes(blob)
    return path


@pytest.mark.parametrize("fmt", ["chat", "prompt_completion", "text"])
@FUZZ
@given(data=st.data())
def test_fuzz_causal_formats_report_bad_rows_by_line(fmt, data):
    from tuneforge.config.schema import DataConfig
    from tuneforge.data import validate_data

    blob = data.draw(jsonl_bytes(ROWS[fmt]))
    with sandbox() as inputs:
        path = _write(inputs, "rows.jsonl", blob)
        report = validate_data(DataConfig(format=fmt, train=str(path), max_length=64), TOK)
        _check_problems(report.problems, path)


NI_TASK = st.fixed_dictionaries(
    {
        "Definition": st.one_of(TEXT, st.lists(TEXT, max_size=2)),
        "Positive Examples": st.lists(st.fixed_dictionaries({"input": TEXT, "output": TEXT}), max_size=2),
        "Negative Examples": st.lists(st.fixed_dictionaries({"input": TEXT, "output": TEXT}), max_size=2),
        "Instances": st.lists(
            st.fixed_dictionaries({"id": TEXT, "input": TEXT, "output": st.one_of(TEXT, st.lists(TEXT, max_size=2))}),
            max_size=3,
        ),
    }
)


@FUZZ
@given(data=st.data())
def test_fuzz_natural_instructions_task_files(data):
    from tuneforge.config.schema import DataConfig
    from tuneforge.data import validate_data

    task = mutated(data.draw(NI_TASK), data.draw)
    blob = json.dumps(task, ensure_ascii=data.draw(st.booleans())).encode("utf-8", errors="surrogatepass")
    harm = data.draw(st.sampled_from(["none", "bom", "truncate", "nul"]))
    if harm == "bom":
        blob = b"\xef\xbb\xbf" + blob
    elif harm == "truncate":
        blob = blob[: len(blob) // 2]
    elif harm == "nul":
        blob = blob.replace(b'"', b'"\x00', 1)
    with sandbox() as inputs:
        path = _write(inputs, "task001_fuzz.json", blob)
        report = validate_data(DataConfig(format="natural_instructions", train=str(path), max_length=64), TOK)
        _check_problems(report.problems, path)


@FUZZ
@given(data=st.data())
def test_fuzz_classification_rows(data):
    from tuneforge.methods.classify.data import read_labelled

    blob = data.draw(jsonl_bytes(ROWS["classification"]))
    names = data.draw(st.one_of(st.none(), st.just(["neg", "pos"])))
    with sandbox() as inputs:
        path = _write(inputs, "rows.jsonl", blob)
        problems: list[str] = []
        rows = read_labelled(str(path), {}, names, problems)
        _check_problems(problems, path)
        assert all(isinstance(r.text, str) and r.text.strip() for r in rows)


@pytest.mark.parametrize("fmt", ["pairs", "scored_pairs"])
@FUZZ
@given(data=st.data())
def test_fuzz_contrastive_rows(fmt, data):
    from tuneforge.methods.contrastive.data import read_rows

    blob = data.draw(jsonl_bytes(ROWS[fmt]))
    with sandbox() as inputs:
        path = _write(inputs, "rows.jsonl", blob)
        problems: list[str] = []
        rows = read_rows(str(path), fmt, {}, problems)
        _check_problems(problems, path)
        for _texts, score, _where in rows:
            assert score is None or math.isfinite(score)


@FUZZ
@given(data=st.data(), form=st.sampled_from(["auto", "pairs", "rankings", "ratings", "thumbs", "corrections"]))
def test_fuzz_preference_feedback(data, form):
    from tuneforge.data.types import DataError
    from tuneforge.methods.preference.feedback import read_feedback

    blob = data.draw(jsonl_bytes(ROWS["preference"]))
    with sandbox() as inputs:
        path = _write(inputs, "feedback.jsonl", blob)
        try:
            read_feedback(str(path), form)
        except DataError as exc:
            _check_problems(exc.problems, path)


# ---------------------------------------------------------------------------- the server's requests

MESSAGE = st.fixed_dictionaries(
    {
        "role": ROLES,
        "content": st.one_of(
            TEXT, st.none(), st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": TEXT}), max_size=2)
        ),
    }
)
CHAT = st.fixed_dictionaries(
    {"model": st.one_of(st.just("a"), TEXT), "messages": st.lists(MESSAGE, max_size=3)},
    optional={
        "max_tokens": NUMBERS,
        "temperature": NUMBERS,
        "top_p": NUMBERS,
        "seed": NUMBERS,
        "stop": st.one_of(TEXT, st.lists(TEXT, max_size=6)),
        "stream": SCALARS,
        "stream_options": st.one_of(st.just({"include_usage": True}), JSON),
        "n": NUMBERS,
        "logprobs": SCALARS,
        "tools": JSON,
        "response_format": JSON,
    },
)
COMPLETION = st.fixed_dictionaries(
    {"model": st.just("a"), "prompt": st.one_of(TEXT, st.lists(TEXT, max_size=2), JSON)},
    optional={"max_tokens": NUMBERS, "seed": NUMBERS, "echo": SCALARS, "best_of": NUMBERS},
)


def _decode(body: bytes):
    """The app's own body decoding (``app._json``) on raw bytes."""
    from starlette.requests import Request

    from tuneforge.serve.app import _json

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    return asyncio.run(_json(Request(scope, receive)))


@FUZZ
@given(
    data=st.data(),
    chat=st.booleans(),
    encoding=st.sampled_from(["json", "json-ascii", "utf-16", "bytes", "nested", "truncated"]),
)
def test_fuzz_request_bodies_become_a_request_or_a_400(data, chat, encoding):
    from tuneforge.data.templates import PromptRendering
    from tuneforge.serve.decode import Row, Sampling
    from tuneforge.serve.protocol import APIError, ChatRequest, CompletionRequest, parse
    from tuneforge.serve.text import TextTracker

    body = mutated(data.draw(CHAT if chat else COMPLETION), data.draw)
    text = json.dumps(body, ensure_ascii=encoding == "json-ascii")
    if encoding == "bytes":
        raw = data.draw(st.binary(max_size=64))
    elif encoding == "nested":
        raw = b"[" * 50_000 + b"]" * 50_000
    else:
        raw = text.encode("utf-16" if encoding == "utf-16" else "utf-8", errors="surrogatepass")
        raw = raw[: len(raw) // 2] if encoding == "truncated" else raw
    try:
        request = parse(ChatRequest if chat else CompletionRequest, _decode(raw))
    except APIError as exc:
        assert exc.status == 400 and exc.message and exc.type == "invalid_request_error"
        return
    # A valid request: everything the app does with it before the model must work too.
    request.stops(), request.include_usage(), request.requested_tokens()
    sampling = Sampling(
        max_tokens=request.requested_tokens() or 16,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        stop=request.stops(),
    )
    Row(prompt_ids=[1], sampling=sampling, tracker=TextTracker(TOK, frozenset()), on_text=lambda _t: None)
    if chat:
        from tuneforge.data.run_prompt import render_run_prompt

        with contextlib.suppress(Exception):  # the app answers any template complaint with a 400
            render_run_prompt(TOK, [m.plain() for m in request.messages], PromptRendering())
    else:
        TOK(request.prompt)


# ---------------------------------------------------------------------------- what the fuzzing found, pinned


@pytest.mark.parametrize("override", ["training.learning_rate=[", "name=\x08", "a.b={x: [}"])
def test_found_an_override_that_is_not_yaml_is_a_config_error(override):
    """yaml's own ScannerError / ReaderError escaped parse_overrides (a traceback on the command line)."""
    from tuneforge.config import ConfigError, parse_overrides

    with pytest.raises(ConfigError, match=r"^command line: override '.*': the value is not valid YAML \("):
        parse_overrides([override])


@pytest.mark.parametrize(
    "blob, problem",
    [
        (b"method: sft\nname: caf\xe9\n", r"not UTF-8 text \(byte 0xe9 at offset 21\); save the file as UTF-8"),
        (b"[" * 5000, r"nested too deeply"),
        (b"a: &a [*a]\n", r"nested too deeply \(or a YAML alias that contains itself\)"),
    ],
    ids=["latin-1", "deep", "self-alias"],
)
def test_found_config_files_that_crashed_the_loader(tmp_path, blob, problem):
    """A latin-1 file raised UnicodeDecodeError; 5,000 '[' and a self-containing alias raised RecursionError."""
    from tuneforge.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_bytes(blob)
    with pytest.raises(ConfigError, match=f"^{path}: {problem}"):
        load_config(path)


def test_a_bom_at_the_start_of_a_config_is_read_as_utf8(tmp_path):
    from tuneforge.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfmethod: sft\r\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert all("method" not in p.split(":")[0] for p in caught.value.problems)  # method was read; other keys missing


@pytest.mark.parametrize(
    "fmt, row",
    [
        ("text", '{"text": "ok \\ud891 then"}'),
        ("chat", '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\\udc00"}]}'),
        ("prompt_completion", '{"prompt": "p", "completion": "c \\ud800"}'),
    ],
)
def test_found_an_unpaired_surrogate_escape_is_a_bad_row_not_a_tokenizer_crash(tmp_path, fmt, row):
    """JSON allows "\\ud891" alone; json.loads keeps it, and the tokenizer raised TypeError (TextEncodeInput)."""
    from tuneforge.config.schema import DataConfig
    from tuneforge.data import validate_data

    path = tmp_path / "rows.jsonl"
    path.write_text(row + "\n" + '{"text": "an escaped emoji \\ud83d\\ude42 is fine"}\n')
    report = validate_data(DataConfig(format=fmt, train=str(path), max_length=64), TOK)
    field = {"text": "text", "chat": "messages.1.content", "prompt_completion": "completion"}[fmt]
    assert f"{path}:1: {field}: holds an unpaired surrogate escape (\\u" in report.problems[0]
    assert not any(p.startswith(f"{path}:2:") and "surrogate" in p for p in report.problems)


def test_found_an_unpaired_surrogate_in_a_natural_instructions_task_file(tmp_path):
    """A task file is one JSON object; its strings reached the tokenizer unchecked (TypeError)."""
    from tuneforge.config.schema import DataConfig
    from tuneforge.data import validate_data

    path = tmp_path / "task001_x.json"
    path.write_text(
        '{"Definition": "Answer \\ud800.", "Positive Examples": [], "Negative Examples": [],'
        ' "Instances": [{"id": "1", "input": "a", "output": ["b"]}]}'
    )
    report = validate_data(DataConfig(format="natural_instructions", train=str(path), max_length=64), TOK)
    assert report.problems[0].startswith(f"{path}:1: Definition: holds an unpaired surrogate escape (\\ud800)")
