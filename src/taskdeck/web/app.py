"""The web app: FastAPI routes on top of one Engine, which lives as long as the app."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.middleware.gzip import GZipMiddleware

from taskdeck import __version__
from taskdeck.config import Settings
from taskdeck.engine import Engine, IntakeError
from taskdeck.web.api import router
from taskdeck.web.assets import router as assets_router
from taskdeck.web.batchapi import router as batch_router
from taskdeck.web.batchpages import router as batch_pages_router
from taskdeck.web.guard import Guard
from taskdeck.web.pages import not_found_page, problem_page, wants_page
from taskdeck.web.pages import router as pages_router
from taskdeck.web.sessions import Sessions

__all__ = ["begin_shutdown", "create_app", "serve_app"]

API_KEY_SCHEME = {"ApiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}


def begin_shutdown(app: FastAPI) -> None:
    """Tell every open event stream to end (the server calls this before it waits for connections)."""
    closing: asyncio.Event | None = getattr(app.state, "closing", None)
    if closing is not None:
        closing.set()


class _Server(uvicorn.Server):
    """uvicorn, but open event streams are told to end before it waits for connections to close.

    Without this, one browser holding ``/api/tasks/stream`` keeps the process alive after SIGTERM.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        begin_shutdown(self._app)
        await super().shutdown(sockets)


def serve_app(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` in the foreground until SIGTERM or Ctrl-C; exits within a few seconds whatever is open."""
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For/-Proto from loopback, so any local
    # process (or a proxy on the same machine) could make a request look like https or come from elsewhere.
    # Which proxies to believe is TASKDECK_TRUSTED_PROXIES's decision alone (web/guard.py).
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        lifespan="on",
        proxy_headers=False,
    )
    _Server(config, app).run()


def create_app(settings: Settings, *, demo: bool = False, follow: bool = True) -> FastAPI:
    """The ASGI app. The engine starts with the app (lifespan) and stops with it.

    ``follow=False`` (``serve --no-engine``): the engine here follows no run; workers sharing the
    database do, and what they store reaches this process's pages live through the shared feed.
    """
    settings.validate()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings, follow=follow)
        await engine.start()
        app.state.engine = engine  # commands: submit, track, resubmit, keys
        app.state.catalog = engine.catalog  # reads of stored tasks, and delete
        # Sessions keep their own table; they get the store and the vault's secrets at composition, here.
        app.state.sessions = Sessions(engine.store, engine.db, engine.vault, settings)
        try:
            yield
        finally:
            app.state.closing.set()
            await engine.stop()

    # /docs and /redoc load their scripts from a CDN, which Taskdeck pages never do; /openapi.json stays.
    app = FastAPI(title="Taskdeck", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.demo = demo
    app.state.closing = asyncio.Event()
    app.include_router(router)
    app.include_router(batch_router)
    app.include_router(batch_pages_router)
    app.include_router(pages_router)
    app.include_router(assets_router)
    # Pages and JSON compressed (a task page with 5,000 events is ~1.4 MB of text); event streams
    # are excluded by Starlette, and static assets arrive already gzipped (assets.py).
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(Guard, settings=settings)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = API_KEY_SCHEME
            schema["security"] = [{"ApiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/-/health", tags=["meta"])
    async def health(request: Request) -> dict[str, Any]:
        """Liveness, and how many runs this process follows."""
        engine: Engine = request.app.state.engine
        return {"ok": True, "demo": demo, **engine.stats()}

    @app.get("/-/settings.json", tags=["meta"])
    async def settings_json() -> dict[str, Any]:
        """Every setting, secrets redacted."""
        return {"demo": demo, **settings.redacted()}

    @app.exception_handler(IntakeError)
    async def refused(request: Request, exc: IntakeError) -> Response:
        if wants_page(request):
            return await problem_page(request, exc.status, exc.message)
        return JSONResponse({"error": {"message": exc.message, "problems": exc.problems}}, status_code=exc.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404 and wants_page(request):
            return await not_found_page(request)
        return JSONResponse({"error": {"message": exc.detail}}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": [p for p in e["loc"] if p != "body"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        message = "; ".join(".".join(str(x) for x in p["loc"]) + ": " + p["msg"] for p in problems)
        if wants_page(request):
            return await problem_page(request, 422, f"The address asks for something this page cannot show: {message}")
        return JSONResponse({"error": {"message": message, "problems": problems}}, status_code=422)

    return app
