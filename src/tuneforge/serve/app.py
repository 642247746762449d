"""The HTTP side: OpenAI-compatible routes on FastAPI, handing every request to the worker.

Routes: ``GET /health``, ``GET /metrics`` (Prometheus), ``GET /v1/models``
(and ``/v1/models/{id}``), ``POST /v1/chat/completions``, ``POST /v1/completions``
and, only when an adapter folder is allow-listed, ``POST /v1/load_lora_adapter`` /
``/v1/unload_lora_adapter`` (vLLM's names). A request's ``model`` picks what
answers it; an unknown one is a 404, never the base model's answer. The
response names the model that was asked for. Chat requests are rendered by
:func:`tuneforge.data.run_prompt.render_run_prompt` with the served run's own
rendering settings (its ``data.template`` and ``data.system_prompt``): the
prompt its training built for the same turn, token for token.

Limits: bodies over ``max_body_bytes`` get 413 (:mod:`.limits`); a full queue
gets 429 with ``Retry-After``; a request not answered within
``request_timeout_s`` ends with 504 (streamed: an error event), its row freed at
the next step; a client that hangs up, streamed or not, frees its row at the
next step too.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from ..data.run_prompt import render_run_prompt
from ..eval.generation import stop_token_ids_for
from .decode import Sampling
from .limits import BodyLimit
from .metrics import Metrics, MetricsMiddleware
from .pool import ModelPool, Target, UnknownModel
from .protocol import (
    APIError,
    ChatRequest,
    CompletionRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    new_id,
    parse,
    usage,
)
from .settings import ServeSettings
from .tools import request_messages, tool_use, with_tool_calls
from .worker import Job, QueueFull, Worker


def create_app(settings: ServeSettings, pool: ModelPool, worker: Worker, metrics: Metrics | None = None) -> FastAPI:
    """The FastAPI app for one pool and its worker (the worker is started and stopped with the app)."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app):
        if not worker.alive:
            worker.start()
        yield
        worker.stop()

    # No interactive docs or schema endpoints: less surface, nothing a client of the OpenAI API needs.
    app = FastAPI(title="tuneforge", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    metrics = metrics or Metrics()
    app.state.metrics = metrics
    # Outermost first: every request is counted, the ones refused for their size too.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, on_refuse=metrics.refuse)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    service = _Service(settings, pool, worker, metrics)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.get("/health")
    async def health():
        body = {
            "status": "ok" if worker.alive else "worker stopped",
            "queued": worker.queue.qsize(),
            "batches": worker.batches,
            "loaded_adapters": list(pool.base.loaded),
        }
        return JSONResponse(body, status_code=200 if worker.alive else 503)

    @app.get("/metrics")
    async def prometheus(request: Request):
        service.authorize(request)
        text = metrics.render(
            queued=worker.queue.qsize() + len(worker.deferred),
            alive=worker.alive,
            batches=worker.batches,
            rows=worker.rows,
            sampled=worker.tokens,
        )
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models(request: Request):
        service.authorize(request)
        return {"object": "list", "data": [service.model_card(t) for t in pool.names()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str, request: Request):
        service.authorize(request)
        return service.model_card(service.target(name))

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        service.authorize(request)
        parsed = parse(ChatRequest, await _json(request))
        return await service.complete(request, parsed, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        service.authorize(request)
        parsed = parse(CompletionRequest, await _json(request))
        return await service.complete(request, parsed, chat=False)

    @app.post("/v1/load_lora_adapter")
    async def load_adapter(request: Request):
        service.authorize(request)
        body = await _json(request)
        name, path = _field(body, "lora_name"), _field(body, "lora_path")
        await asyncio.to_thread(service.load_adapter, name, path)
        return {"status": "loaded", "model": name}

    @app.post("/v1/unload_lora_adapter")
    async def unload_adapter(request: Request):
        service.authorize(request)
        name = _field(await _json(request), "lora_name")
        await asyncio.to_thread(service.unload_adapter, name)
        return {"status": "unloaded", "model": name}

    return app


async def _json(request: Request):
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(400, "the request body is not valid JSON") from None
    except RecursionError:  # [[[[...]]]] thousands deep: Python's parser gives up
        raise APIError(400, "the request body is nested too deeply") from None


def _field(body, name: str) -> str:
    value = body.get(name) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise APIError(400, f"{name}: missing required field", param=name)
    return value


class _Service:
    """What the routes do, apart from HTTP: auth, targets, limits, jobs, events."""

    def __init__(self, settings: ServeSettings, pool: ModelPool, worker: Worker, metrics: Metrics):
        self.settings, self.pool, self.worker, self.metrics = settings, pool, worker, metrics
        self.key = settings.key()
        self.started = int(time.time())
        self._stops: dict[str, frozenset[int]] = {}

    # ---------------------------------------------------------------- access

    def authorize(self, request: Request) -> None:
        if not self.key:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header[:7].lower() == "bearer " else ""
        # constant time: the comparison takes as long whatever prefix of the key was right
        if not hmac.compare_digest(given.encode(), self.key.encode()):
            raise APIError(
                401,
                "invalid or missing API key (send Authorization: Bearer KEY)",
                type="invalid_request_error",
                code="invalid_api_key",
            )

    def target(self, name: str) -> Target:
        try:
            return self.pool.target(name)
        except UnknownModel:
            served = ", ".join(t.name for t in self.pool.names())
            raise APIError(
                404,
                f"The model '{name}' does not exist on this server; served: {served}",
                param="model",
                code="model_not_found",
            ) from None

    def model_card(self, target: Target) -> dict:
        card = {
            "id": target.name,
            "object": "model",
            "created": self.started,
            "owned_by": "tuneforge",
            "root": target.name,
            "parent": None,
        }
        if target.adapter is not None:
            card.update(parent=self.pool.base_id, root=self.pool.base_id, adapter_type=target.kind)
        return card

    # ---------------------------------------------------------------- completions

    async def complete(self, request: Request, parsed, *, chat: bool):
        arrived = self.metrics.clock()
        target = self.target(parsed.model)
        prompt_ids = self._prompt_ids(target, parsed, chat)
        sampling = self._sampling(target, parsed, len(prompt_ids), chat)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def send(*event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = Job(
            target=target,
            prompt_ids=prompt_ids,
            sampling=sampling,
            stop_ids=self._stop_ids(target),
            on_text=lambda text: send("text", text),
            on_done=lambda *done: send("done", *done),
            on_error=lambda message: send("error", message),
        )
        try:
            self.worker.submit(job)
        except QueueFull as exc:
            self.metrics.refuse("queue_full")
            wait = self.metrics.retry_after(self.worker.queue.qsize(), self.settings.max_batch_size)
            raise APIError(
                429,
                f"{exc} (in about {wait} s)",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(wait)},
            ) from None
        answer = _Answer(job, events, self.metrics, arrived, arrived + self.settings.request_timeout_s, parsed.model)
        rid = new_id("chatcmpl" if chat else "cmpl")
        if parsed.stream:
            return StreamingResponse(
                self._stream(answer, rid, parsed, chat),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        gone = asyncio.ensure_future(_hung_up(request))
        try:
            pieces, (finish, prompt_tokens, completion_tokens) = await answer.collect(gone)
        except _ClientGone:
            return Response(status_code=499)  # nobody reads it; the row was freed
        finally:
            gone.cancel()
            job.cancelled.set()  # finished already, or the client went away: either way the row may stop
        if not chat:
            return completion_response(rid, parsed.model, "".join(pieces), finish, prompt_tokens, completion_tokens)
        response = chat_response(rid, parsed.model, "".join(pieces), finish, prompt_tokens, completion_tokens)
        return with_tool_calls(response, tool_use(parsed))

    async def _stream(self, answer: _Answer, rid: str, parsed, chat: bool):
        created = int(time.time())
        model = parsed.model

        def chunk(text: str = "", finish: str | None = None, usage_counts: dict | None = None) -> str:
            if chat:
                delta = {"content": text} if text or finish is None else {}
                body = chat_chunk(rid, model, created, delta=delta, finish=finish, usage_counts=usage_counts)
            else:
                body = completion_chunk(rid, model, created, text=text, finish=finish, usage_counts=usage_counts)
            return f"data: {json.dumps(body)}\n\n"

        try:
            if chat:
                yield f"data: {json.dumps(chat_chunk(rid, model, created, delta={'role': 'assistant', 'content': ''}))}\n\n"
            while True:
                try:
                    kind, *payload = await answer.next_event()
                except APIError as timeout:  # the request's time ran out
                    yield f"data: {json.dumps(timeout.body())}\n\n"
                    break
                if kind == "text":
                    yield chunk(payload[0])
                elif kind == "error":
                    error = APIError(500, payload[0], type="server_error")
                    yield f"data: {json.dumps(error.body())}\n\n"
                    break
                else:
                    finish, prompt_tokens, completion_tokens = payload
                    yield chunk(finish=finish)
                    if parsed.include_usage():
                        yield chunk(usage_counts=usage(prompt_tokens, completion_tokens))
                    break
            yield "data: [DONE]\n\n"
        finally:
            # A client that hangs up mid-stream: Starlette cancels this generator, and the row stops at the next step.
            if not answer.ended:
                self.metrics.refuse("client_gone")
            answer.job.cancelled.set()

    def _prompt_ids(self, target: Target, parsed, chat: bool) -> list[int]:
        if chat:
            tools = tool_use(parsed).functions  # serve/tools.py: checked, rendered as training rendered them
            messages = request_messages(parsed)
            try:
                ids = render_run_prompt(target.tokenizer, messages, target.rendering, tools=tools)
            except Exception as exc:  # the chat template's own complaint (roles out of order...)
                raise APIError(
                    400, f"messages: the chat template cannot render them: {exc}", param="messages"
                ) from None
        else:
            ids = target.tokenizer(parsed.prompt)["input_ids"]
        if not ids:
            raise APIError(400, "the prompt is empty", param="messages" if chat else "prompt")
        limit = self.settings.max_prompt_tokens
        if len(ids) > limit:
            raise APIError(
                400,
                f"the prompt is {len(ids)} tokens, above this server's limit of {limit} "
                "(max_prompt_tokens); shorten it",
                param="messages" if chat else "prompt",
                code="context_length_exceeded",
            )
        return ids

    def _sampling(self, target: Target, parsed, prompt_tokens: int, chat: bool) -> Sampling:
        limit = self.settings.max_tokens_limit
        asked = parsed.requested_tokens()
        param = "max_completion_tokens" if chat and getattr(parsed, "max_completion_tokens", None) else "max_tokens"
        if asked is not None and asked > limit:
            raise APIError(
                400, f"{param} is {asked}, above this server's limit of {limit} (max_tokens_limit)", param=param
            )
        max_tokens = asked or min(self.settings.default_max_tokens, limit)
        context = _context_length(target.group.model)
        if context and prompt_tokens + max_tokens > context:
            raise APIError(
                400,
                f"the prompt ({prompt_tokens} tokens) plus {param} ({max_tokens}) exceeds the "
                f"model's context of {context} tokens",
                param=param,
                code="context_length_exceeded",
            )
        return Sampling(
            max_tokens=max_tokens,
            temperature=parsed.temperature,
            top_p=parsed.top_p,
            seed=parsed.seed,
            stop=parsed.stops(),
        )

    def _stop_ids(self, target: Target) -> frozenset[int]:
        if target.name not in self._stops:
            self._stops[target.name] = frozenset(stop_token_ids_for(target.group.model, target.tokenizer))
        return self._stops[target.name]

    # ---------------------------------------------------------------- runtime adapters

    def load_adapter(self, name: str, path: str) -> None:
        from ..adapters.inference import NAME_PATTERN, AdapterSetError, describe, tokenizer_folder

        folder = self._allowed(path)
        if not NAME_PATTERN.match(name):
            raise APIError(400, "lora_name: letters, digits, '_', '.' and '-' only", param="lora_name")
        try:
            spec = describe(name, folder, label="lora_path")
            tokenizer = self.pool.tokenizers.get(tokenizer_folder(spec.path) or self.pool.base_name)
            self.pool.register(spec, tokenizer, base_name=self.pool.base_name)
        except (AdapterSetError, FileNotFoundError) as exc:
            raise APIError(400, str(exc), param="lora_path") from None
        group = self.pool.base
        try:
            group.ensure_loaded([name])  # waits for a running batch (the group's lock); checks the shapes
        except Exception as exc:
            self.pool.unregister(name)
            raise APIError(400, str(exc), param="lora_path") from None

    def unload_adapter(self, name: str) -> None:
        self._allowed(None)
        try:
            self.pool.unregister(name)
        except UnknownModel:
            raise APIError(
                404, f"no adapter named '{name}' is served", param="lora_name", code="model_not_found"
            ) from None

    def _allowed(self, path: str | None) -> Path | None:
        """The folder ``path`` names, when runtime loading is on and it lies inside the allow-listed folder."""
        if not self.settings.adapter_dir or not self.key:  # no key: refused at start too (check_safe)
            raise APIError(
                403,
                "loading adapters at runtime is off on this server (start it with --adapter-dir and an API key)",
                type="permission_error",
                code="runtime_loading_disabled",
            )
        if path is None:
            return None
        root = Path(self.settings.adapter_dir).expanduser().resolve()
        try:
            folder = (root / path).resolve()  # an absolute path stays absolute; symlinks followed before the check
        except (ValueError, OSError) as exc:  # a NUL byte, a symlink loop
            raise APIError(400, f"lora_path: not a usable path ({exc})", param="lora_path") from None
        if not folder.is_relative_to(root):
            raise APIError(
                403,
                f"lora_path: {path} is outside the allowed adapter folder",
                param="lora_path",
                type="permission_error",
                code="path_not_allowed",
            )
        return folder


class _ClientGone(Exception):
    """The client of a non-streamed request hung up before its answer."""


class _Answer:
    """One request's events from the worker, read against its deadline; counts its tokens and first text."""

    def __init__(self, job: Job, events: asyncio.Queue, metrics: Metrics, arrived: float, deadline: float, model):
        self.job, self.events, self.metrics = job, events, metrics
        self.arrived, self.deadline, self.model = arrived, deadline, model
        self.first = True
        self.ended = False  # its end (done, error or timeout) was read

    async def next_event(self) -> tuple:
        """The next event; an :class:`APIError` 504 when the request's time is up (its row is then freed)."""
        left = self.deadline - self.metrics.clock()
        try:
            if left <= 0:
                raise asyncio.TimeoutError
            event = await asyncio.wait_for(self.events.get(), left)
        except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
            self.ended = True
            self.job.cancelled.set()
            self.metrics.refuse("timeout")
            raise APIError(
                504,
                f"the request was not answered within this server's request_timeout_s "
                f"({self.deadline - self.arrived:g} s); ask for fewer tokens, or retry later",
                type="timeout_error",
                code="timeout",
            ) from None
        kind = event[0]
        if kind == "text" and self.first:
            self.first = False
            self.metrics.first_token(self.metrics.clock() - self.arrived)
        elif kind == "done":
            self.ended = True
            self.metrics.tokens(self.model, event[2], event[3])
        elif kind == "error":
            self.ended = True
        return event

    async def collect(self, gone: asyncio.Future) -> tuple[list[str], tuple[str, int, int]]:
        """Every piece of text and the end; :class:`_ClientGone` as soon as ``gone`` resolves first."""
        pieces: list[str] = []
        while True:
            step = asyncio.ensure_future(self.next_event())
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                self.metrics.refuse("client_gone")
                raise _ClientGone
            kind, *payload = step.result()
            if kind == "text":
                pieces.append(payload[0])
            elif kind == "error":
                raise APIError(500, payload[0], type="server_error")
            else:
                return pieces, tuple(payload)


async def _hung_up(request: Request) -> None:
    """Returns when the client disconnects (the body was read: the next message can only be the hang-up)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _context_length(model) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) if config is not None else None
