"""The web app: FastAPI routes on top of one Engine, which lives as long as the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from taskdeck import __version__
from taskdeck.config import Settings
from taskdeck.engine import Engine
from taskdeck.web.api import router
from taskdeck.web.pages import router as pages_router

__all__ = ["create_app"]


def create_app(settings: Settings, *, demo: bool = False) -> FastAPI:
    """The ASGI app. The engine starts with the app (lifespan) and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = Engine(settings)
        await engine.start()
        app.state.engine = engine
        try:
            yield
        finally:
            await engine.stop()

    app = FastAPI(title="Taskdeck", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.demo = demo
    app.include_router(router)
    app.include_router(pages_router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")

    @app.get("/-/health", tags=["meta"])
    async def health(request: Request) -> dict[str, Any]:
        """Liveness, and how many runs this process follows."""
        engine: Engine = request.app.state.engine
        return {"ok": True, "demo": demo, **engine.stats()}

    @app.get("/-/settings.json", tags=["meta"])
    async def settings_json() -> dict[str, Any]:
        """Every setting, secrets redacted."""
        return {"demo": demo, **settings.redacted()}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": exc.detail}}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [p for p in e["loc"] if p != "body"], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
        ]
        message = "; ".join(".".join(str(x) for x in p["loc"]) + ": " + p["msg"] for p in problems)
        return JSONResponse({"error": {"message": message, "problems": problems}}, status_code=422)

    return app
