"""`tuneforge serve`, called the way users call it: the official `openai` client against a local server.

A tiny Llama with lively random weights (so different prompts and adapters give
different text) and two random LoRA adapters; every server binds 127.0.0.1 on a
free port and stops at the end of its test (or module).
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import torch
from test_adapters_cli import make_lora

from tuneforge.cli import main
from tuneforge.serve import ServerThread, build
from tuneforge.serve.settings import ServeSettings


class Reply:
    """A raw HTTP answer (urllib, not the openai client: these tests look at status codes and bodies)."""

    def __init__(self, status: int, body: bytes, headers):
        self.status_code, self.content, self.headers = status, body, headers

    def json(self):
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode()


def http(
    method: str, url: str, *, json_body=None, content: bytes | None = None, headers=None, timeout: float = 60
) -> Reply:
    import urllib.error
    import urllib.request

    data = json.dumps(json_body).encode() if json_body is not None else content
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.read(), error.headers)


def post(url: str, **kwargs) -> Reply:
    return http("POST", url, **kwargs)


def get(url: str, **kwargs) -> Reply:
    return http("GET", url, **kwargs)


PROMPTS = ["hello", "marker 17", "abc xyz", "the quick brown fox", "q", "tell me 42 things"]


def lively_model_dir(path, *, hidden: int = 32, seed: int = 0):
    """A tiny model whose greedy continuations depend on the prompt (std-0.02 weights all say '\\n')."""
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(len(tok), hidden=hidden, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def served_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = lively_model_dir(root / "base")
    return {
        "base": base,
        "a": make_lora(base, root / "a", seed=1, r=8),
        "b": make_lora(base, root / "b", seed=2, r=8),
        "root": root,
    }


def start(files, **settings):
    values = {
        "model": str(files["base"]),
        "served_name": "base",
        "adapters": {"a": str(files["a"]), "b": str(files["b"])},
        **settings,
    }
    app, pool, worker = build(ServeSettings(**values))
    return ServerThread(app), pool, worker


@pytest.fixture(scope="module")
def server(served_files):
    thread, pool, worker = start(served_files, max_batch_size=8, batch_window_ms=150)
    with thread as url:
        yield {
            "url": url,
            "pool": pool,
            "worker": worker,
            "client": openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0),
        }


def chat(client, model, prompt, **kwargs):
    kwargs = {"max_tokens": 12, "temperature": 0, **kwargs}
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], **kwargs)


def chat_text(client, model, prompt, **kwargs) -> str:
    return chat(client, model, prompt, **kwargs).choices[0].message.content


def streamed(client, model, prompt, **kwargs) -> tuple[str, str | None]:
    text, finish = "", None
    for chunk in chat(client, model, prompt, stream=True, **kwargs):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish


# ---------------------------------------------------------------------------- the API shape


def test_models_lists_the_base_and_each_adapter_with_its_parent(server):
    cards = {card.id: card for card in server["client"].models.list().data}
    assert list(cards) == ["base", "a", "b"]
    assert cards["a"].model_extra["parent"] == "base" and cards["b"].model_extra["parent"] == "base"
    assert cards["base"].model_extra["parent"] is None
    assert server["client"].models.retrieve("a").id == "a"


def test_each_adapter_answers_as_tuneforge_generate_does(server, served_files, capsys):
    client = server["client"]
    answers = {}
    for name in ("base", "a", "b"):
        reply = chat(client, name, "hello")
        assert reply.model == name  # the name asked for, not the base's
        answers[name] = reply.choices[0].message.content
        adapter = [] if name == "base" else ["--adapter", f"{name}={served_files[name]}"]
        assert (
            main(["generate", "--model", str(served_files["base"]), *adapter, "hello", "--max-new-tokens", "12"]) == 0
        )
        assert capsys.readouterr().out == answers[name] + "\n"
    assert len(set(answers.values())) == 3, answers  # three different models really answered


def test_usage_counts_the_training_template_tokens(server, served_files):
    from transformers import AutoTokenizer

    from tuneforge.data.templates import render_prompt

    tokenizer = AutoTokenizer.from_pretrained(served_files["a"])
    reply = chat(server["client"], "a", "marker 17", max_tokens=5)
    expected = len(render_prompt(tokenizer, [{"role": "user", "content": "marker 17"}]))
    assert reply.usage.prompt_tokens == expected
    assert 1 <= reply.usage.completion_tokens <= 5
    assert reply.usage.total_tokens == expected + reply.usage.completion_tokens


def test_streamed_text_equals_the_whole_answer(server):
    client = server["client"]
    for name in ("base", "a", "b"):
        whole = chat(client, name, "the quick brown fox", max_tokens=16)
        text, finish = streamed(client, name, "the quick brown fox", max_tokens=16)
        assert (text, finish) == (whole.choices[0].message.content, whole.choices[0].finish_reason)
    completion = client.completions.create(model="a", prompt="abc", max_tokens=10, temperature=0)
    pieces = client.completions.create(model="a", prompt="abc", max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in pieces if c.choices) == completion.choices[0].text


def test_stream_ends_with_done_and_reports_usage_when_asked(server):
    response = post(
        f"{server['url']}/v1/chat/completions",
        json_body={
            "model": "b",
            "messages": [{"role": "user", "content": "q"}],
            "max_tokens": 4,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    lines = [line for line in response.text.splitlines() if line]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(event["model"] == "b" for event in events)
    assert events[-1]["usage"]["completion_tokens"] >= 1 and events[-1]["choices"] == []


def test_stop_strings_end_the_answer_streamed_or_not(server):
    client = server["client"]
    full = chat_text(client, "a", "tell me 42 things", max_tokens=16)
    assert len(full) >= 4, full
    stop = full[2:4]  # a piece from the middle of the answer
    cut = chat(client, "a", "tell me 42 things", max_tokens=16, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    assert streamed(client, "a", "tell me 42 things", max_tokens=16, stop=stop) == (full[: full.index(stop)], "stop")


def test_seeded_sampling_repeats_and_temperature_zero_is_greedy(server):
    client = server["client"]
    first = chat_text(client, "b", "hello", temperature=1.0, seed=7, max_tokens=10)
    assert chat_text(client, "b", "hello", temperature=1.0, seed=7, max_tokens=10) == first
    assert chat_text(client, "b", "hello", top_p=1e-6, temperature=1.0, max_tokens=10) == chat_text(
        client, "b", "hello", max_tokens=10
    )  # top_p that keeps one token is greedy


# ---------------------------------------------------------------------------- errors


def test_an_unknown_model_is_a_404_never_the_base_answer(server):
    with pytest.raises(openai.NotFoundError) as caught:
        chat(server["client"], "sqll", "hello")
    assert caught.value.body["code"] == "model_not_found"
    assert "sqll" in caught.value.body["message"] and "served: base, a, b" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        server["client"].models.retrieve("nope")


@pytest.mark.parametrize(
    "body, param",
    [
        ({"model": "a"}, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "a", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
        ({"model": "a", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "temperature"),
        ({"model": "a", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "n"),
        ({"model": "a", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}, "logprobs"),
        ({"model": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}, "max_tokens"),
    ],
)
def test_a_malformed_request_is_a_400_naming_the_field(server, body, param):
    response = post(f"{server['url']}/v1/chat/completions", json_body=body, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_over_length_prompts_and_bodies_that_are_not_json_are_400(served_files):
    thread, _pool, _worker = start(served_files, max_prompt_tokens=40)
    with thread as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            chat(client, "a", "x" * 100)
        assert caught.value.body["code"] == "context_length_exceeded"
        assert "above this server's limit of 40" in caught.value.body["message"]
        response = post(f"{url}/v1/completions", content=b"{not json", timeout=30)
        assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


def test_a_wrong_or_missing_key_is_a_401(served_files):
    thread, _pool, _worker = start(served_files, api_key="s3cret")
    with thread as url:
        for key in ("wrong", "s3cre", "s3cret-and-more"):
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0).models.list()
        assert get(f"{url}/v1/models").status_code == 401
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert chat_text(good, "a", "hello", max_tokens=3) is not None
        assert get(f"{url}/health").status_code == 200  # health checks need no key


def test_a_full_queue_is_a_429(served_files):
    thread, pool, worker = start(served_files, queue_size=1, max_batch_size=1, batch_window_ms=0)
    body = {"model": "a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3, "temperature": 0}
    with thread as url:
        with pool.base.lock:  # the worker takes the first request and then waits for this lock
            first = ThreadPoolExecutor(1).submit(post, f"{url}/v1/chat/completions", json_body=body)
            _wait_until(lambda: worker.queue.qsize() == 0 and worker.busy.is_set())
            second = ThreadPoolExecutor(1).submit(post, f"{url}/v1/chat/completions", json_body=body)
            _wait_until(lambda: worker.queue.qsize() == 1)
            third = post(f"{url}/v1/chat/completions", json_body=body, timeout=60)
        assert third.status_code == 429 and third.json()["error"]["code"] == "queue_full"
        assert int(third.headers["Retry-After"]) >= 1  # when to come back, in seconds
        assert f"retry later (in about {third.headers['Retry-After']} s)" in third.json()["error"]["message"]
        assert first.result().status_code == 200 and second.result().status_code == 200


def _wait_until(condition, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


WAIT_S = 60  # how long a test waits for a state before it fails (never a delay: waits end at the state)


class JobWatch:
    """The jobs the app hands a worker from now on, numbered in order, with hooks on their rows' progress.

    Tests that need one event before another wait on these states, never on time. ``worker.busy`` is no
    such state: it stays set for a moment after a batch's last answer went out (that batch is still
    running: it may even take a newcomer), so "busy" right after a request does not mean the next one runs.
    ``at_first_text[n](job)`` runs in the worker thread once job ``n``'s first text went out,
    ``at_end[n](job)`` once its end did (``ended`` lists it before that). A hook may wait (on a
    :meth:`gate`), holding the whole batch mid-decoding; :meth:`release`, at the test's end, pass or
    fail, opens every gate and ends every wait.
    """

    def __init__(self, worker, monkeypatch, at_first_text: dict | None = None, at_end: dict | None = None):
        self.queued: list = []  # jobs in the worker's queue or beyond, in the order they were queued
        self.ended: list[int] = []  # job numbers, in the order their rows ended
        self._gates: list[threading.Event] = []
        self._released = False
        self._changed = threading.Condition()
        self._submitted = 0
        submit = worker.submit

        def watched(job) -> None:
            with self._changed:
                number, self._submitted = self._submitted, self._submitted + 1
            self._hook(number, job, (at_first_text or {}).get(number), (at_end or {}).get(number))
            submit(job)
            with self._changed:
                self.queued.append(job)
                self._changed.notify_all()

        monkeypatch.setattr(worker, "submit", watched)

    def _hook(self, number: int, job, at_first_text, at_end) -> None:
        on_text, on_done = job.on_text, job.on_done
        first = True

        def text(piece: str) -> None:
            nonlocal first
            on_text(piece)
            if first and at_first_text:
                first = False
                at_first_text(job)

        def done(*args) -> None:
            with self._changed:  # before the answer goes out: whoever reads it reads this too
                self.ended.append(number)
                self._changed.notify_all()
            on_done(*args)
            if at_end:
                at_end(job)

        job.on_text, job.on_done = text, done

    def gate(self) -> threading.Event:
        """An event for a hook to wait on (``gate.wait(WAIT_S)``); :meth:`release` sets it too."""
        gate = threading.Event()
        with self._changed:
            self._gates.append(gate)
            if self._released:
                gate.set()
        return gate

    def wait_queued(self, count: int) -> bool:
        """Until ``count`` jobs are in the worker's queue (or taken from it)."""
        return self._wait_for(lambda: len(self.queued) >= count)

    def wait_ended(self, count: int) -> bool:
        """Until ``count`` jobs' rows ended (their answers went out)."""
        return self._wait_for(lambda: len(self.ended) >= count)

    def _wait_for(self, condition) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: condition() or self._released, WAIT_S) and condition()

    def release(self) -> None:
        with self._changed:
            self._released = True
            for gate in self._gates:
                gate.set()
            self._changed.notify_all()


@pytest.fixture
def watch_jobs(monkeypatch):
    """``watch_jobs(worker, at_first_text={n: hook}, at_end={n: hook})``: a :class:`JobWatch`, released at the end."""
    watches: list[JobWatch] = []

    def watch(worker, **hooks) -> JobWatch:
        watches.append(JobWatch(worker, monkeypatch, **hooks))
        return watches[-1]

    yield watch
    for watch_ in watches:
        watch_.release()


# ---------------------------------------------------------------------------- batching and adapters


def test_a_mixed_batch_gives_each_request_its_text_alone(server, watch_jobs):
    client, worker = server["client"], server["worker"]
    asks = [(model, prompt) for prompt in PROMPTS[:3] for model in ("base", "a", "b")]
    alone = {ask: chat_text(client, *ask) for ask in asks}
    batches = worker.batches
    jobs = watch_jobs(worker)
    with ThreadPoolExecutor(len(asks)) as pool:
        with server["pool"].base.lock:  # the worker takes the first requests and waits for it: all are queued together
            answers = [pool.submit(chat_text, client, *ask) for ask in asks]
            assert jobs.wait_queued(len(asks))
        together = {ask: answer.result() for ask, answer in zip(asks, answers)}
    assert together == alone
    assert worker.batches - batches < len(asks)  # some of them really shared a batch


def test_many_concurrent_requests_lose_none_and_mix_up_none(server):
    client = server["client"]
    asks = [(("base", "a", "b")[i % 3], f"{PROMPTS[i % len(PROMPTS)]} #{i}", i) for i in range(30)]

    def ask(item):
        model, prompt, seed = item
        reply = chat(client, model, prompt, temperature=0.9, seed=seed, max_tokens=8)
        return reply.model, reply.choices[0].message.content

    alone = [ask(item) for item in asks]
    with ThreadPoolExecutor(12) as pool:
        together = list(pool.map(ask, asks))
    assert together == alone
    assert [model for model, _ in together] == [model for model, _, _ in asks]
    assert len({text for _, text in together}) > 20  # each answer its own (the seeds differ)


def test_least_recently_used_adapters_are_unloaded(served_files, server, watch_jobs):
    expected = {name: chat_text(server["client"], name, "hello") for name in ("a", "b")}
    thread, pool, worker = start(served_files, max_loaded_adapters=1)
    with thread as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        for name in ("a", "b", "a", "b"):
            assert chat_text(client, name, "hello") == expected[name]
            assert list(pool.base.loaded) == [name]
        # "a" is not in memory while "b" decodes, so it cannot join that batch: it waits for the next one.
        # In order, not in time: b's row waits at its first text until the request for "a" is queued.
        b_running = threading.Event()

        def b_first_text(_job):
            b_running.set()
            jobs.wait_queued(2)

        jobs = watch_jobs(worker, at_first_text={0: b_first_text})
        long_b = ThreadPoolExecutor(1).submit(chat_text, client, "b", "hello", max_tokens=200)
        assert b_running.wait(WAIT_S)
        assert chat_text(client, "a", "hello") == expected["a"]
        assert jobs.ended == [0, 1] and worker.joined == 0  # b's row ended first: "a" did wait for the next batch
        assert long_b.result()


def test_mixed_batching_off_gives_the_same_text(served_files, server):
    asks = [(model, "abc xyz") for model in ("base", "a", "b")]
    expected = [chat_text(server["client"], *ask) for ask in asks]
    thread, _pool, worker = start(served_files, mixed_batches=False, batch_window_ms=150)
    with thread as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(lambda ask: chat_text(client, *ask), asks)) == expected
        assert worker.batches >= 3  # one adapter per batch


def test_an_adapter_of_another_base_is_refused_at_start(served_files, tmp_path):
    from tuneforge.adapters.inference import AdapterSetError

    other = lively_model_dir(tmp_path / "wider", hidden=64)
    stranger = make_lora(other, tmp_path / "stranger", seed=3)
    with pytest.raises(
        AdapterSetError, match=r"--adapter x: trained on .*wider \(hidden size 64\), which does not fit"
    ):
        build(
            ServeSettings(model=str(served_files["base"]), adapters={"a": str(served_files["a"]), "x": str(stranger)})
        )
    same_size = lively_model_dir(tmp_path / "cousin", seed=5)
    cousin = make_lora(same_size, tmp_path / "cousin-lora", seed=3)
    with pytest.raises(AdapterSetError, match=r"--adapter y: .* was trained on .*cousin, not on the served base"):
        build(ServeSettings(model=str(served_files["base"]), adapters={"y": str(cousin)}))


def test_a_full_model_folder_is_served_under_its_own_name(served_files, tmp_path, capsys):
    merged = tmp_path / "merged"
    assert main(["merge", str(served_files["a"]), "--model", str(served_files["base"]), "--output", str(merged)]) == 0
    capsys.readouterr()
    thread, _pool, _worker = start(served_files, adapters={"a": str(served_files["a"]), "merged": str(merged)})
    with thread as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        assert [card.id for card in client.models.list().data] == ["base", "merged", "a"]
        text = chat_text(client, "merged", "hello")
        assert main(["generate", "--model", str(merged), "hello", "--max-new-tokens", "12"]) == 0
        assert capsys.readouterr().out == text + "\n"


# ---------------------------------------------------------------------------- runtime loading


def test_runtime_loading_is_off_by_default(server, served_files):
    response = post(
        f"{server['url']}/v1/load_lora_adapter",
        timeout=30,
        json_body={"lora_name": "c", "lora_path": str(served_files["a"])},
    )
    assert response.status_code == 403 and response.json()["error"]["code"] == "runtime_loading_disabled"


def test_runtime_loading_only_from_the_allowed_folder(served_files, server, tmp_path):
    allowed = tmp_path / "allowed"
    make_lora(served_files["base"], allowed / "c", seed=1, r=8)  # a's weights under another name
    thread, pool, _worker = start(served_files, adapter_dir=str(allowed), api_key="k")  # no key: refused at start
    key = {"Authorization": "Bearer k"}
    with thread as url:
        outside = post(
            f"{url}/v1/load_lora_adapter",
            timeout=30,
            json_body={"lora_name": "x", "lora_path": str(served_files["a"])},
            headers=key,
        )
        assert outside.status_code == 403 and outside.json()["error"]["code"] == "path_not_allowed"
        for escape_path in ("../", "c/../../a", "./../a"):
            escape = post(
                f"{url}/v1/load_lora_adapter",
                timeout=30,
                json_body={"lora_name": "x", "lora_path": escape_path},
                headers=key,
            )
            assert escape.status_code == 403 and escape.json()["error"]["code"] == "path_not_allowed", escape_path
        (allowed / "link").symlink_to(served_files["a"], target_is_directory=True)  # inside by name, outside in fact
        linked = post(
            f"{url}/v1/load_lora_adapter", timeout=30, json_body={"lora_name": "x", "lora_path": "link"}, headers=key
        )
        assert linked.status_code == 403 and linked.json()["error"]["code"] == "path_not_allowed"
        nul = post(
            f"{url}/v1/load_lora_adapter", timeout=30, json_body={"lora_name": "x", "lora_path": "c\u0000"}, headers=key
        )
        assert nul.status_code == 400 and nul.json()["error"]["param"] == "lora_path"
        anonymous = post(f"{url}/v1/load_lora_adapter", timeout=30, json_body={"lora_name": "c", "lora_path": "c"})
        assert anonymous.status_code == 401
        loaded = post(
            f"{url}/v1/load_lora_adapter", timeout=60, json_body={"lora_name": "c", "lora_path": "c"}, headers=key
        )
        assert loaded.status_code == 200, loaded.text
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        assert chat_text(client, "c", "hello") == chat_text(server["client"], "a", "hello")
        unloaded = post(f"{url}/v1/unload_lora_adapter", json_body={"lora_name": "c"}, timeout=30, headers=key)
        assert unloaded.status_code == 200
        with pytest.raises(openai.NotFoundError):
            chat(client, "c", "hello")
        assert "c" not in pool.base.loaded


def test_health(server):
    body = get(f"{server['url']}/health", timeout=30).json()
    assert body["status"] == "ok" and set(body["loaded_adapters"]) == {"a", "b"}


def test_concurrent_streams_keep_their_own_text(server):
    client = server["client"]
    asks = [("a", "hello"), ("b", "hello"), ("base", "hello"), ("a", "marker 17")]
    expected = [chat_text(client, *ask, max_tokens=16) for ask in asks]
    results: list = [None] * len(asks)

    def run(i):
        results[i] = streamed(client, *asks[i], max_tokens=16)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(asks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == expected


def test_a_client_that_hangs_up_mid_stream_frees_its_row(server, watch_jobs):
    import urllib.request

    worker = server["worker"]
    assert chat(server["client"], "a", "hello", max_tokens=300).usage.completion_tokens == 300  # runs to its limit
    body = {
        "model": "a",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 300,
        "temperature": 0,
        "stream": True,
    }
    request = urllib.request.Request(
        f"{server['url']}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # In order, not in time: after its first text the row waits until the server has seen the client go.
    jobs = watch_jobs(worker, at_first_text={0: lambda job: job.cancelled.wait(WAIT_S)})
    tokens = worker.tokens
    with urllib.request.urlopen(request, timeout=60) as response:
        while not _streamed_text(response.readline()):
            pass  # until the first text arrives: the row is running
    assert jobs.wait_ended(1)
    assert worker.tokens - tokens < 300  # it ended without its 300 tokens
    assert chat_text(server["client"], "b", "hello", max_tokens=3) is not None


def _streamed_text(line: bytes) -> str:
    """The text a server-sent chat chunk carries ("" for the role chunk, the end, a blank line)."""
    if not line.startswith(b"data: {"):
        return ""
    choices = json.loads(line[6:])["choices"]
    return (choices[0]["delta"].get("content") or "") if choices else ""


def test_the_serve_command_answers_the_openai_client(served_files, server, tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "serve.yaml"
    config.write_text(f"model: {served_files['base']}\nserved_name: base\nport: {port}\n")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuneforge.cli",
            "serve",
            "--config",
            str(config),
            "--adapter",
            f"a={served_files['a']}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "TUNEFORGE_API_KEY": "k"},
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (_listening(port) and get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200):
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        assert [card.id for card in client.models.list().data] == ["base", "a"]
        assert chat_text(client, "a", "hello") == chat_text(server["client"], "a", "hello")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0).models.list()
        # SIGTERM with a streamed answer in flight: the answer is finished whole, then the process ends by SIGTERM
        import signal
        import urllib.request

        body = {
            "model": "a",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 200,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer k"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            while not _streamed_text(response.readline()):
                pass
            process.terminate()
            rest = [line for line in response.read().decode().splitlines() if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["usage"]["completion_tokens"] == 200
        assert process.wait(60) == -signal.SIGTERM
    finally:
        process.terminate()
        process.wait(30)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("model, prompt", [("b", "q"), ("base", "tell me 42 things"), ("a", "abc xyz")])
def test_a_request_joins_a_running_batch_and_answers_as_alone(server, model, prompt, watch_jobs):
    """Continuous batching: a request arriving mid-batch starts at the next step, not after the batch.

    In order, not in time: the long request's row waits at its first text until the short request is
    queued, and once the short answer has gone out the batch waits, the long row mid-decoding, until
    this test has looked.
    """
    client, worker = server["client"], server["worker"]
    alone = chat_text(client, model, prompt, max_tokens=6)
    long_alone = chat_text(client, "a", "hello", max_tokens=300)
    long_running = threading.Event()

    def long_first_text(_job):
        long_running.set()
        jobs.wait_queued(2)

    jobs = watch_jobs(worker, at_first_text={0: long_first_text}, at_end={1: lambda _job: looked.wait(WAIT_S)})
    looked = jobs.gate()
    long_answer = ThreadPoolExecutor(1).submit(chat, client, "a", "hello", max_tokens=300)
    assert long_running.wait(WAIT_S)
    joined = worker.joined
    assert chat_text(client, model, prompt, max_tokens=6) == alone
    assert not long_answer.done()  # it answered while the long request was still decoding
    looked.set()
    assert worker.joined == joined + 1
    assert long_answer.result().choices[0].message.content == long_alone  # the running row is undisturbed
