"""Request body size limit, as pure ASGI middleware: a body over the limit is a 413 before it is all read.

A declared ``Content-Length`` over the limit is refused before one byte is read;
a body sent without one (chunked) is counted as it arrives and refused the
moment it passes the limit. Either way the server never holds more than the
limit (plus one chunk) of a request in memory.
"""

from __future__ import annotations

import json

from .protocol import APIError


class BodyTooLarge(APIError):
    def __init__(self, limit: int):
        super().__init__(
            413,
            f"the request body is larger than this server's limit of {limit} bytes (max_body_bytes)",
            code="body_too_large",
        )


class BodyLimit:
    def __init__(self, app, limit: int, on_refuse=None):
        self.app, self.limit, self.on_refuse = app, limit, on_refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.limit
            except ValueError:
                return await _answer(send, APIError(400, "Content-Length is not a number"))
            if too_large:
                self._refused()
                return await _answer(send, BodyTooLarge(self.limit))
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    self._refused()
                    raise BodyTooLarge(self.limit)  # the app's APIError handler answers it
            return message

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge as exc:  # read outside a route (no handler there): answer here if nothing went out
            if not started:
                await _answer(send, exc)

    def _refused(self) -> None:
        if self.on_refuse is not None:
            self.on_refuse("body_too_large")


async def _answer(send, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
