"""Shared pieces of the browser tests: Debian's chromium via Playwright, a Taskdeck to point it at."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import Page

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

__all__ = ["ARTIFACTS", "CHROMIUM", "KEY", "LAUNCH_ARGS", "shot", "start_server"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
KEY = "browser-test-key-4321"
SECRET = "e2e-secret"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def start_server(db: Path, emu: BackgroundEmulator) -> BackgroundServer:
    settings = Settings(db_path=db, parallel_base_url=emu.url, secret_key=SECRET, heartbeat_interval=1, lease_ttl=3)
    app = create_app(settings, demo=True)
    return BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)).start()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
