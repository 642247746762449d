"""`tuneforge serve` under abuse: body size, request time, hang-ups, SIGTERM, /metrics, options it refuses.

Every wait is on a state (a queued job, a row's first text, a lock the test holds), never on time: the
request timeout is exercised while the test holds the model's lock, so no answer can beat it.
"""

import json
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from test_adapters_cli import make_lora
from test_serve import WAIT_S, JobWatch, _listening, _wait_until, chat, get, lively_model_dir, post, start


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-limits")
    base = lively_model_dir(root / "base")
    return {"base": base, "a": make_lora(base, root / "a", seed=1, r=8), "b": make_lora(base, root / "b", seed=2, r=8)}


@pytest.fixture
def watch(monkeypatch):
    watches: list[JobWatch] = []

    def make(worker, **hooks) -> JobWatch:
        watches.append(JobWatch(worker, monkeypatch, **hooks))
        return watches[-1]

    yield make
    for one in watches:
        one.release()


BODY = {"model": "a", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}
KEY = {"Authorization": "Bearer k"}


def metrics(url: str) -> dict[str, float]:
    """/metrics as {'name{labels}': value}, checking the text format on the way."""
    response = get(f"{url}/metrics", headers=KEY)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in response.text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP tuneforge_", "# TYPE tuneforge_")), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


# ---------------------------------------------------------------------------- body size


def test_bodies_over_the_limit_are_413_declared_or_chunked(files):
    import http.client

    thread, _pool, _worker = start(files, max_body_bytes=2048, api_key="k")
    with thread as url:
        assert post(f"{url}/v1/chat/completions", json_body=BODY, headers=KEY).status_code == 200
        big = {**BODY, "messages": [{"role": "user", "content": "x" * 4000}]}
        declared = post(f"{url}/v1/chat/completions", json_body=big, headers=KEY)
        assert declared.status_code == 413
        assert declared.json()["error"]["code"] == "body_too_large"
        assert "larger than this server's limit of 2048 bytes (max_body_bytes)" in declared.json()["error"]["message"]

        raw = json.dumps(big).encode()
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        pieces = (raw[i : i + 1000] for i in range(0, len(raw), 1000))  # no Content-Length: counted as it arrives
        connection.request(
            "POST",
            "/v1/chat/completions",
            body=pieces,
            headers={"Content-Type": "application/json", **KEY},
            encode_chunked=True,
        )
        chunked = connection.getresponse()
        assert chunked.status == 413 and json.loads(chunked.read())["error"]["code"] == "body_too_large"
        connection.close()
        counts = metrics(url)
        assert counts['tuneforge_requests_refused_total{reason="body_too_large"}'] == 2
        assert counts['tuneforge_requests_total{route="/v1/chat/completions",status="413"}'] == 2


def test_a_body_nested_thousands_deep_is_a_400(files):
    thread, _pool, _worker = start(files)
    with thread as url:
        deep = post(f"{url}/v1/chat/completions", content=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400 and deep.json()["error"]["message"] == "the request body is nested too deeply"


# ---------------------------------------------------------------------------- time and hang-ups


def test_a_request_past_its_time_is_a_504_and_its_row_never_runs(files, watch):
    thread, pool, worker = start(files, request_timeout_s=0.5, api_key="k")
    with thread as url:
        jobs = watch(worker)
        tokens = worker.tokens
        with pool.base.lock:  # the worker takes the first request and waits for this lock: nothing can answer
            whole = post(f"{url}/v1/chat/completions", json_body={**BODY, "max_tokens": 50}, headers=KEY)
            streamed = post(f"{url}/v1/chat/completions", json_body={**BODY, "stream": True}, headers=KEY)
        assert whole.status_code == 504
        error = whole.json()["error"]
        assert (error["code"], error["type"]) == ("timeout", "timeout_error")
        assert "not answered within this server's request_timeout_s (0.5 s)" in error["message"]
        lines = [line for line in streamed.text.splitlines() if line]
        assert streamed.status_code == 200 and lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["error"]["code"] == "timeout"
        assert jobs.wait_ended(2)
        assert worker.tokens == tokens  # both rows were dropped before their first step
        assert metrics(url)['tuneforge_requests_refused_total{reason="timeout"}'] == 2
        assert post(f"{url}/v1/chat/completions", json_body=BODY, headers=KEY).status_code == 200  # still serving


def test_a_client_that_hangs_up_before_its_whole_answer_frees_the_row(files, watch):
    thread, _pool, worker = start(files, api_key="k")
    with thread as url:
        assert (
            chat(openai.OpenAI(base_url=f"{url}/v1", api_key="k"), "a", "hello", max_tokens=300).usage.completion_tokens
            == 300
        )
        running = threading.Event()

        def first_text(job):  # in order, not in time: the row waits until the server saw the client go
            running.set()
            job.cancelled.wait(WAIT_S)

        jobs = watch(worker, at_first_text={0: first_text})
        tokens = worker.tokens
        body = json.dumps({**BODY, "max_tokens": 300}).encode()
        host, port = url.removeprefix("http://").split(":")
        client = socket.create_connection((host, int(port)), timeout=60)
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer k\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        assert running.wait(WAIT_S)
        client.close()  # a non-streamed request: nothing was sent back yet
        assert jobs.wait_ended(1)
        assert worker.tokens - tokens < 300
        assert metrics(url)['tuneforge_requests_refused_total{reason="client_gone"}'] == 1


def test_sigterm_lets_requests_in_flight_finish_then_stops(files, watch):
    thread, _pool, worker = start(files)
    url = thread.__enter__()
    port = int(url.rsplit(":", 1)[1])
    try:
        running = threading.Event()

        def first_text(_job):  # the row waits mid-answer until the shutdown has begun
            running.set()
            shutting_down.wait(WAIT_S)

        jobs = watch(worker, at_first_text={0: first_text})
        shutting_down = jobs.gate()
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        answer = ThreadPoolExecutor(1).submit(chat, client, "a", "hello", max_tokens=40)
        assert running.wait(WAIT_S)
        thread.server.handle_exit(signal.SIGTERM, None)  # what uvicorn's SIGTERM handler calls
        _wait_until(lambda: not _listening(port))  # no new connections from the start of the shutdown
        shutting_down.set()
        reply = answer.result(WAIT_S)
        assert (reply.choices[0].finish_reason, reply.usage.completion_tokens) == ("length", 40)  # answered whole
        thread.thread.join(WAIT_S)
        assert not thread.thread.is_alive() and not worker.alive  # then the server and its worker stopped
    finally:
        thread.__exit__(None, None, None)


# ---------------------------------------------------------------------------- /metrics


def test_metrics_count_requests_tokens_and_times(files):
    thread, _pool, _worker = start(files, api_key="k")
    with thread as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
        replies = [
            chat(client, model, prompt, max_tokens=5) for model, prompt in (("a", "hello"), ("b", "q"), ("a", "x"))
        ]
        completion = client.completions.create(model="base", prompt="abc", max_tokens=3, temperature=0)
        with pytest.raises(openai.NotFoundError):
            chat(client, "nope", "hello")
        assert get(f"{url}/metrics").status_code == 401  # a key, when set, guards /metrics too
        counts = metrics(url)
    chat_route = 'route="/v1/chat/completions"'
    assert counts[f'tuneforge_requests_total{{{chat_route},status="200"}}'] == 3
    assert counts[f'tuneforge_requests_total{{{chat_route},status="404"}}'] == 1
    assert counts['tuneforge_requests_total{route="/v1/completions",status="200"}'] == 1
    for model in ("a", "b"):
        mine = [r for r, (m, _) in zip(replies, (("a", 0), ("b", 0), ("a", 0))) if m == model]
        assert counts[f'tuneforge_completion_tokens_total{{model="{model}"}}'] == sum(
            r.usage.completion_tokens for r in mine
        )
        assert counts[f'tuneforge_prompt_tokens_total{{model="{model}"}}'] == sum(r.usage.prompt_tokens for r in mine)
    assert counts['tuneforge_completion_tokens_total{model="base"}'] == completion.usage.completion_tokens
    buckets = [v for k, v in counts.items() if k.startswith(f"tuneforge_request_duration_seconds_bucket{{{chat_route}")]
    assert buckets == sorted(buckets) and buckets[-1] == 4  # cumulative; +Inf holds all four chat requests
    assert counts[f"tuneforge_request_duration_seconds_count{{{chat_route}}}"] == 4
    with_text = sum(bool(r.choices[0].message.content) for r in replies) + bool(completion.choices[0].text)
    assert counts["tuneforge_time_to_first_token_seconds_count"] == with_text
    assert counts["tuneforge_queue_depth"] == 0 and counts["tuneforge_worker_up"] == 1
    assert counts["tuneforge_requests_in_flight"] == 1  # the scrape itself
    assert counts["tuneforge_sampled_tokens_total"] >= sum(r.usage.completion_tokens for r in replies)


# ---------------------------------------------------------------------------- options not implemented


@pytest.mark.parametrize(
    "route, extra, param",
    [
        ("chat", {"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ("chat", {"logprobs": True, "top_logprobs": 3}, "logprobs"),
        ("chat", {"n": 3}, "n"),
        ("completions", {"n": 2}, "n"),
        ("completions", {"logprobs": 2}, "logprobs"),
        ("completions", {"best_of": 3}, "best_of"),
    ],
)
def test_logprobs_n_and_tools_are_refused_by_name(route, extra, param):
    from tuneforge.serve.protocol import APIError, ChatRequest, CompletionRequest, parse

    body = {"model": "a", **({"messages": BODY["messages"]} if route == "chat" else {"prompt": "hi"}), **extra}
    with pytest.raises(APIError) as caught:
        parse(ChatRequest if route == "chat" else CompletionRequest, body)
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, "unsupported_parameter")
    assert (
        error.message.startswith(f"'{param}' is not supported by this server (got ") and "leave it out" in error.message
    )
