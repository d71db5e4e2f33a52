"""Taskdeck's app on a real loopback socket for tests, against an emulator, on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.engine import Engine
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown


@dataclass
class Web:
    """A running Taskdeck: its URL, its app (to reach the engine), its emulator and database."""

    url: str
    app: FastAPI
    emulator: BackgroundEmulator
    db: Path

    @property
    def engine(self) -> Engine:
        engine: Engine = self.app.state.engine
        return engine

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.Client:
        """An API client (x-api-key auth when ``key`` is given)."""
        headers = {"x-api-key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    @contextmanager
    def browser(self, key: str | None = None) -> Iterator[httpx.Client]:
        """A client that behaves like our pages: same-origin, with the CSRF token; signed in when ``key``."""
        with httpx.Client(base_url=self.url, timeout=30, headers={"origin": self.url}) as client:
            client.headers["x-csrf-token"] = client.get("/api/csrf").json()["csrf_token"]
            if key is not None:
                resp = client.post("/api/session", json={"api_key": key})
                assert resp.status_code == 200, resp.text
                client.headers["x-csrf-token"] = resp.json()["csrf_token"]
            yield client


def start_web(stack: ExitStack, db: Path, emulator: BackgroundEmulator, **settings: Any) -> Web:
    values: dict[str, Any] = {
        "db_path": db,
        "parallel_base_url": emulator.url,
        "secret_key": "web-secret",
        "heartbeat_interval": 0.5,
        "lease_ttl": 3.0,
    }
    values.update(settings)
    app = create_app(Settings(**values))
    server = stack.enter_context(BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)))
    return Web(server.url, app, emulator, db)


def sse(client: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
    """(id, event, data) of every message of one event stream, until the server ends it."""
    out: list[tuple[str, str, str]] = []
    with client.stream("GET", path, headers=headers or {}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        block: dict[str, str] = {}
        for line in resp.iter_lines():
            if not line:
                if block:
                    out.append((block.get("id", ""), block.get("event", ""), block.get("data", "")))
                block = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                block[name] = value
    return out
