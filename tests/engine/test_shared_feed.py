"""The live feed across processes: a run followed by a worker shows live on a web-only process.

On SQLite (feed_log tailed by each process) and on PostgreSQL (LISTEN/NOTIFY), each with a real
``taskdeck worker`` subprocess and a web-only Taskdeck (``serve --no-engine``) on a loopback socket.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from workers import FAST_ENV, kill, start_worker

from pg import fresh_schema
from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

KEY = "shared-feed-key"


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(SQLite file, database URL): the URL is the file for SQLite, a fresh schema for PostgreSQL."""
    db = tmp_path / "shared.db"
    if request.param == "sqlite":
        yield db, str(db)
        return
    with fresh_schema() as url:
        yield db, url


def test_a_run_followed_by_a_worker_is_live_on_a_web_only_process(database: tuple[Path, str], tmp_path: Path) -> None:
    db, url = database
    with ExitStack() as stack:
        emu = stack.enter_context(BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.01)))
        settings = Settings(
            db_path=db,
            database_url=url if url != str(db) else "",
            secret_key=FAST_ENV["TASKDECK_SECRET_KEY"],
            parallel_base_url=emu.url,
            heartbeat_interval=0.3,
            lease_ttl=1.5,
        )
        app = create_app(settings, follow=False)
        web = stack.enter_context(BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)))
        worker = start_worker(db, emu.url, tmp_path / "worker.log", TASKDECK_DATABASE_URL=settings.database_url)
        stack.callback(kill, worker)
        with httpx.Client(base_url=web.url, headers={"x-api-key": KEY}, timeout=60) as client:
            # 600 emulated seconds: about 6 s, with a progress message every few of them.
            body = {"input": "Live across processes", "processor": "lite", "metadata": {"emulator": "duration=600"}}
            task = client.post("/api/tasks", json=body).json()["task"]
            assert task["status"] == "pending"  # a web-only process leaves the run to the workers
            arrivals: list[tuple[float, dict[str, object]]] = []
            deadline = time.monotonic() + 60
            with client.stream("GET", task["urls"]["events"]) as resp:
                for line in resp.iter_lines():
                    # Pings (every 15 s) come even when nothing else does: a stream that never ends fails.
                    assert time.monotonic() < deadline, f"no end of the run's stream; got {len(arrivals)} events"
                    if line.startswith("data: {") and '"seq"' in line:
                        arrivals.append((time.time(), json.loads(line[6:])))
                    if line.startswith("event: end"):
                        break
            final = client.get(f"/task/{task['id']}.json").json()
    assert final["status"] == "completed", final.get("message")
    stored = [e["seq"] for e in final["events"]]
    got = [int(str(data["seq"])) for _, data in arrivals]
    assert got == stored, "every stored event reached the web-only process's stream once, in order"
    upstream = [(at, data) for at, data in arrivals if data["origin"] == "upstream"]
    completed_at = time.mktime(time.strptime(final["completed_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    live = [at for at, _ in upstream if at < completed_at]
    assert len(live) >= 2, "progress reached the browser while the run was going, not only at its end"
    # From the worker's commit (received_at, its clock = ours) to this client: well under a second.
    lags = sorted(at - _ts(data["received_at"]) for at, data in upstream)
    assert lags[len(lags) // 2] < 1.0, lags


def _ts(iso: object) -> float:
    from datetime import datetime

    return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
