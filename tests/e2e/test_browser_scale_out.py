"""Scale-out in a real browser: a run followed by a ``taskdeck worker`` shows live on a web-only process.

The page talks to ``serve --no-engine`` (follow=False); the run is claimed and followed by a worker in
another process sharing the database; what the worker stores crosses over by the shared feed (SQLite:
``feed_log`` tail; PostgreSQL: LISTEN/NOTIFY) and reaches the page without a reload.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from browser_helpers import KEY, SECRET, shot
from playwright.sync_api import Browser, expect

from pg import fresh_schema
from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL both processes are given: the SQLite file's path, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    with fresh_schema() as url:
        yield url


def _worker(url: str, base_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TASKDECK_DATABASE_URL": url,
        "TASKDECK_SECRET_KEY": SECRET,
        "TASKDECK_HEARTBEAT_INTERVAL": "0.3",
        "TASKDECK_LEASE_TTL": "1.5",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskdeck", "worker", "--base-url", base_url], stdout=out, stderr=out, env=env
        )


def test_a_run_followed_by_a_worker_shows_live_in_a_browser_on_a_web_only_process(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator, database_url: str
) -> None:
    settings = Settings(
        db_path=tmp_path / "web.db",
        database_url=database_url,
        secret_key=SECRET,
        parallel_base_url=emulator.url,
        heartbeat_interval=0.3,
        lease_ttl=1.5,
    )
    with ExitStack() as stack:
        app = create_app(settings, follow=False)
        web = stack.enter_context(BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)))
        worker = _worker(database_url, emulator.url, tmp_path / "worker.log")
        stack.callback(worker.wait, timeout=10)
        stack.callback(worker.send_signal, signal.SIGKILL)  # callbacks run last-in first: kill, then wait
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        stack.callback(context.close)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(web.url)
        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-mask")).to_have_text("…4321")
        page.fill("#input", "Live across processes")
        page.click("summary:has-text('Source policy, metadata')")
        # 1,500 emulated seconds at the emulator's 0.01 time scale: about 15 s, messages every few.
        page.fill("#metadata", '{"emulator": "duration=1500"}')
        page.click("#task-form button[type=submit]")
        page.wait_for_url("**/task/tsk_*")

        # The web process follows nothing: whatever appears here was stored by the worker.
        first = page.locator("#timeline li").first
        expect(first).to_be_visible(timeout=60_000)
        status_when_first_seen = page.locator("#status").inner_text()
        # The run was created after the page loaded: its cost shows (and delete warns it is billed).
        expect(page.locator("#cost")).to_have_text(re.compile(r"^\$\d"))
        seen_first = page.locator("#timeline li").count()
        shot(page, f"scale-out-live-{'pg' if database_url.startswith('postgresql') else 'sqlite'}")
        expect(page.locator("#status")).to_have_text("completed", timeout=90_000)
        seen_last = page.locator("#timeline li").count()
    assert status_when_first_seen in ("queued", "running"), status_when_first_seen
    assert seen_last > seen_first, "messages kept arriving while the run went on"
    assert not errors, errors
