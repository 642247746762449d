"""The playground: the base and several adapters answering one prompt side by side, through the
serving engine itself. The page starts ``tuneforge serve`` (serve/) as a child process on a free
local port with the chosen runs as adapters and a random key only the UI knows, and relays its
streamed answers; choosing another base or set of adapters restarts it. Its answers are therefore
exactly what `tuneforge serve` answers: each run's own chat template and system prompt.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path


class PlaygroundError(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Playground:
    def __init__(self, project: Path, log_dir: Path):
        self.project = project
        self.log_dir = log_dir
        self.process: subprocess.Popen | None = None
        self.setup: tuple[str, tuple[tuple[str, str], ...]] | None = None
        self.port = 0
        self.key = secrets.token_urlsafe(24)
        self._lock = threading.Lock()

    def start(self, base: str, adapters: dict[str, str], *, timeout: float = 180.0) -> list[str]:
        """Serve ``base`` with ``adapters`` (name → run folder); reuse the server when nothing changed."""
        setup = (base, tuple(sorted(adapters.items())))
        with self._lock:
            if self.process is not None and self.process.poll() is None and setup == self.setup:
                return self.models()
            self.close()
            self.port = _free_port()
            cmd = [sys.executable, "-m", "tuneforge", "serve", "--model", base, "--port", str(self.port)]
            for name, path in adapters.items():
                cmd += ["--adapter", f"{name}={path}"]
            self.log_dir.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "TUNEFORGE_API_KEY": self.key, "TUNEFORGE_NO_PROGRESS": "1"}
            with open(self.log_dir / "playground.log", "a") as log:
                self.process = subprocess.Popen(
                    cmd, cwd=self.project, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
            self.setup = setup
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    tail = (self.log_dir / "playground.log").read_text(errors="replace").splitlines()[-3:]
                    raise PlaygroundError("the server stopped: " + " | ".join(tail))
                try:
                    return self.models()
                except (OSError, urllib.error.URLError):
                    time.sleep(0.3)
            raise PlaygroundError(f"the server did not answer within {timeout:.0f} s")

    def _request(self, path: str, body: dict | None = None, *, timeout: float = 5.0):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        return urllib.request.urlopen(request, timeout=timeout)

    def models(self) -> list[str]:
        with self._request("/v1/models") as response:
            return [m["id"] for m in json.load(response)["data"]]

    def chat(
        self, model: str, messages: list[dict], *, max_tokens: int = 64, temperature: float = 0.0
    ) -> Iterator[str]:
        """The server's streamed answer, as the text pieces arrive."""
        if self.process is None or self.process.poll() is not None:
            raise PlaygroundError("no playground server: choose the models first")
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        try:
            response = self._request("/v1/chat/completions", {**body, "stream": True}, timeout=300)
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", {}).get("message", str(exc))
            raise PlaygroundError(detail) from None
        with response:
            for raw in response:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise PlaygroundError(event["error"].get("message", "error"))
                for choice in event.get("choices", []):
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece

    def close(self) -> None:
        """Stop the server (SIGTERM: it drains, then exits)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self.setup = None
