"""Demo mode keeps README's promise: stop Taskdeck mid-run, start it again, the run is followed to its end.

Real sockets, real SQLite files: the demo's emulator and the web app (engine inside) both stop and start
again on the same files, the emulator on a new port, as `taskdeck serve --demo` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from helpers import wait_for
from taskdeck.cli import app as cli
from taskdeck.config import Settings
from taskdeck.demo import demo_settings, emulator_state_path, start_demo_emulator
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

KEY = {"x-api-key": "demo-key"}  # any key but the magic ones (docs/emulator.md)
# 0.01: a run of 500 emulated seconds lasts 5 s, long enough to outlive a stop of the app (checked below).
SCALE = 0.01
TERMINAL = {"completed", "failed", "rejected", "submit_unknown"}


def demo(tmp_path: Path) -> Settings:
    base = Settings(db_path=tmp_path / "taskdeck.db", secret_key="demo-test", heartbeat_interval=0.5, lease_ttl=3.0)
    return demo_settings(base, None)


def start_app(settings: Settings, emulator: BackgroundEmulator) -> BackgroundServer:
    """The demo app as `serve --demo` builds it, following runs on ``emulator``."""
    app = create_app(settings.with_overrides(parallel_base_url=emulator.url), demo=True)
    return BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)).start()


def task(server: BackgroundServer, task_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/api/tasks/{task_id}", headers=KEY, timeout=30)
    assert resp.status_code == 200, resp.text
    found: dict[str, Any] = resp.json()["task"]
    return found


def test_demo_uses_its_own_files(tmp_path: Path) -> None:
    settings = demo(tmp_path)
    assert settings.db_path == tmp_path / "demo.db"
    assert emulator_state_path(settings.db_path) == tmp_path / "demo.emulator.jsonl"
    # --db wins, and the emulator's state goes beside it.
    chosen = demo_settings(Settings(db_path=tmp_path / "real.db"), tmp_path / "elsewhere" / "mine.db")
    assert chosen.db_path == tmp_path / "elsewhere" / "mine.db"
    assert emulator_state_path(chosen.db_path) == tmp_path / "elsewhere" / "mine.emulator.jsonl"


def test_serve_demo_picks_the_demo_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`taskdeck serve --demo` wiring: the demo database under the data dir, the emulator keeping its state."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    monkeypatch.setenv("TASKDECK_SECRET_KEY", "demo-test")
    monkeypatch.delenv("TASKDECK_DB_PATH", raising=False)
    served: list[FastAPI] = []
    # Serving would block until a signal; what matters here is what it would serve.
    monkeypatch.setattr("taskdeck.web.app.serve_app", lambda app, host, port: served.append(app))
    result = CliRunner().invoke(cli, ["serve", "--demo"])
    assert result.exit_code == 0, result.output
    settings: Settings = served[0].state.settings
    assert settings.db_path == tmp_path / "taskdeck" / "demo.db"
    assert served[0].state.demo is True
    assert str(tmp_path / "taskdeck" / "demo.emulator.jsonl") in result.output
    assert settings.parallel_base_url.startswith("http://127.0.0.1:")


def test_a_demo_restart_follows_active_runs_to_completion(tmp_path: Path) -> None:
    settings = demo(tmp_path)
    emulator = start_demo_emulator(settings, time_scale=SCALE)
    server = start_app(settings, emulator)
    try:
        body = {"input": "Outlive a restart", "processor": "pro", "metadata": {"emulator": "duration=500"}}
        resp = httpx.post(f"{server.url}/api/tasks", json=body, headers=KEY, timeout=30)
        assert resp.status_code in (200, 201, 202), resp.text
        task_id = resp.json()["task"]["id"]
        wait_for(lambda: task(server, task_id)["status"] == "running", 30, "the run to be running")
        run_id = task(server, task_id)["run_id"]
    finally:
        server.stop()  # the engine stops first: streams closed, writes flushed, leases released
    try:
        # Nothing can have told Taskdeck the run ended: it has not, upstream, now that Taskdeck is down.
        plan = httpx.get(f"{emulator.url}/_emulator/runs/{run_id}", timeout=30).json()
        assert plan["status"] == "running" and plan["ends_in_seconds"] > 0
    finally:
        emulator.stop()

    emulator = start_demo_emulator(settings, time_scale=SCALE)  # a new port; the same state file
    server = start_app(settings, emulator)
    try:
        wait_for(lambda: task(server, task_id)["status"] in TERMINAL, 60, "the task to end")
        ended = task(server, task_id)
        assert ended["status"] == "completed", ended
        assert ended["run_id"] == run_id
        full = httpx.get(f"{server.url}/task/{task_id}.json", headers=KEY, timeout=30).json()
        types = [e["type"] for e in full["events"]]
        assert "taskdeck.run_not_found" not in types
        assert "task_run.state" in types
    finally:
        server.stop()
        emulator.stop()


def test_the_demo_never_uses_the_shared_database(tmp_path: Path) -> None:
    """With TASKDECK_DATABASE_URL set (a real, shared PostgreSQL), the demo still keeps to its own file."""
    shared = Settings(db_path=tmp_path / "taskdeck.db", database_url="postgresql://x@db/real", secret_key="s")
    settings = demo_settings(shared, None)
    assert settings.store_url == str(tmp_path / "demo.db")
