"""`tuneforge ui`'s HTTP side: one page (static/) and the JSON routes it calls.

Every route but the page itself needs the key when one is set (``Authorization: Bearer KEY`` or
the ``tuneforge_ui_key`` cookie the page sets, so report.html opens in a tab). Every file a route
reads is resolved inside the project folder or a folder the user named (paths.py).
"""

from __future__ import annotations

import hmac
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from . import live
from .paths import PathRefused, list_files, resolve_inside
from .play import Playground, PlaygroundError
from .runs import LaunchRefused, Runs

STATIC = Path(__file__).parent / "static"
QUICKSTART = Path(__file__).parent.parent / "configs" / "quickstart.yaml"


@dataclass
class UISettings:
    project: Path
    runs: Path
    allowed: list[Path] = field(default_factory=list)
    key: str | None = None

    @property
    def roots(self) -> list[Path]:
        return list(dict.fromkeys([self.project, self.runs, *self.allowed]))


def flatten(node, prefix: str = "") -> dict:
    """Nested config → {"training.learning_rate": 0.001, ...} (lists kept whole)."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def config_diff(configs: dict[str, dict]) -> list[dict]:
    """The keys whose values differ between runs: ``[{"key", "values": {run: value}}]``."""
    flat = {name: flatten(c) for name, c in configs.items()}
    keys = sorted(set().union(*[set(f) for f in flat.values()])) if flat else []
    rows = []
    for key in keys:
        values = {name: f.get(key) for name, f in flat.items()}
        if len({repr(v) for v in values.values()}) > 1 and key != "name":
            rows.append({"key": key, "values": values})
    return rows


def create_app(settings: UISettings) -> FastAPI:
    from .form import form_spec

    form_spec()  # the schema modules imported now (torch-free, fast): a schema check never waits on torch
    runs = Runs(settings.runs, settings.project)
    play = Playground(settings.project, settings.runs / ".ui")

    @asynccontextmanager
    async def lifespan(_app):
        # The first check imports torch and transformers (seconds): start that now, off the request path.
        threading.Thread(target=_import_heavy, name="tuneforge-ui-warm", daemon=True).start()
        yield
        runs.close()  # launched runs go on: they run in sessions of their own
        play.close()

    app = FastAPI(title="tuneforge ui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.runs, app.state.play = runs, play

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        path = request.url.path
        if settings.key and path not in ("/", "/favicon.ico") and not path.startswith("/static/"):
            header = request.headers.get("authorization", "")
            given = header[7:] if header[:7].lower() == "bearer " else request.cookies.get("tuneforge_ui_key", "")
            if not hmac.compare_digest(given.encode(), settings.key.encode()):
                return JSONResponse({"error": "a key is needed (the one given to `tuneforge ui`)"}, status_code=401)
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}")
    def static(name: str):
        path = (STATIC / name).resolve()
        if path.parent != STATIC.resolve() or not path.is_file():
            raise HTTPException(404)
        return FileResponse(path)

    @app.get("/api/info")
    def info():
        from ..registry import method_names

        return {
            "project": str(settings.project),
            "runs": str(settings.runs),
            "methods": list(method_names()),
            "quickstart": QUICKSTART.read_text() if QUICKSTART.exists() else "",
        }

    @app.get("/api/form")
    def form():
        from .form import form_spec

        return form_spec()

    @app.post("/api/check")
    async def check(request: Request):
        body = await request.json()
        try:
            raw = body["config"] if isinstance(body.get("config"), dict) else live.parse_yaml(body.get("yaml", ""))
        except ValueError as exc:
            return {"config": None, "yaml": body.get("yaml", ""), "errors": [{"key": "", "message": str(exc)}]}
        result = await run_in_threadpool(
            live.check, raw, settings.roots, settings.project, full=bool(body.get("full", True))
        )
        return {"config": raw, "yaml": live.to_yaml(raw), **result}

    @app.post("/api/preview")
    async def preview(request: Request):
        body = await request.json()
        raw = body.get("config") or {}
        found = await run_in_threadpool(live.check, raw, settings.roots, settings.project, full=False)
        if found["errors"]:
            return {"errors": [e["message"] for e in found["errors"]], "rows": []}
        from ..config import validate_dict
        from .preview import preview as data_preview

        try:
            return await run_in_threadpool(data_preview, validate_dict(raw), int(body.get("n", 4)))
        except Exception as exc:  # bad rows, missing files: said on the page, as validate says them
            return {"errors": [live.place(str(exc).splitlines()[0], set())["message"]], "rows": []}

    @app.get("/api/files")
    def files(dir: str = "."):
        try:
            return list_files(dir, settings.roots, settings.project)
        except (PathRefused, OSError) as exc:
            raise HTTPException(403, str(exc)) from None

    @app.get("/api/runs")
    def runs_table():
        return {"runs": [runs.row(name) for name in runs.names()]}

    @app.get("/api/runs/{name}")
    def run_detail(name: str):
        _check_name(name)
        return runs.detail(name)

    @app.post("/api/runs")
    async def launch(request: Request):
        body = await request.json()
        raw = body.get("config") or {}
        found = live.check(raw, settings.roots, settings.project, full=False)
        if found["errors"]:
            raise HTTPException(400, "; ".join(e["message"] for e in found["errors"]))
        try:
            name = runs.launch(raw, steps=body.get("steps"))
        except LaunchRefused as exc:
            raise HTTPException(409, str(exc)) from None
        return {"name": name, "status": runs.status(name)}

    @app.post("/api/runs/{name}/stop")
    def stop(name: str):
        _check_name(name)
        return {"stopped": runs.stop(name)}

    @app.post("/api/runs/{name}/resume")
    def resume(name: str):
        _check_name(name)
        try:
            return {"name": runs.resume(name)}
        except (LaunchRefused, OSError) as exc:
            raise HTTPException(409, str(exc)) from None

    @app.post("/api/compare")
    async def compare(request: Request):
        names = [n for n in (await request.json()).get("names", []) if isinstance(n, str)]
        for name in names:
            _check_name(name)
        details = {name: runs.detail(name) for name in names}
        return {"runs": details, "diff": config_diff({n: d["config"] for n, d in details.items()})}

    @app.get("/runs/{name}/{file:path}")
    def run_file(name: str, file: str):
        _check_name(name)
        try:
            path = resolve_inside(settings.runs / name / file, [settings.runs], settings.project)
        except PathRefused as exc:
            raise HTTPException(403, str(exc)) from None
        if not path.is_file():
            raise HTTPException(404)
        return FileResponse(path)

    @app.post("/api/play/start")
    async def play_start(request: Request):
        body = await request.json()
        names = [n for n in body.get("adapters", []) if isinstance(n, str)]
        for name in names:
            _check_name(name)
        base = str(body.get("base") or "")
        if not base and names:
            base = (runs.config(names[0]).get("model") or {}).get("name", "")
        if live.outside_roots(base, settings.roots, settings.project):
            raise HTTPException(403, f"{base} is outside the folders this page may read")
        adapters = {name: str(settings.runs / name) for name in names}
        try:
            models = await run_in_threadpool(play.start, base, adapters)
        except PlaygroundError as exc:
            raise HTTPException(502, str(exc)) from None
        return {"models": models, "base": base}

    @app.post("/api/play/chat")
    async def play_chat(request: Request):
        body = await request.json()
        messages = [{"role": "user", "content": str(body.get("prompt", ""))}]
        pieces = play.chat(str(body.get("model")), messages, max_tokens=int(body.get("max_tokens", 48)))

        def stream():
            try:
                yield from pieces
            except PlaygroundError as exc:
                yield f"\n[error: {exc}]"

        return StreamingResponse(stream(), media_type="text/plain; charset=utf-8")

    return app


def _import_heavy() -> None:
    try:
        from .. import checks, planning  # noqa: F401  (imports torch, transformers)
        from ..models import load  # noqa: F401
    except Exception:
        pass  # the first check will say what is missing


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or "\\" in name:
        raise HTTPException(400, f"not a run name: {name!r}")
