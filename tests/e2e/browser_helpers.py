"""Shared pieces of the browser tests: Debian's chromium via Playwright, a Taskdeck to point it at."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from playwright.sync_api import Page

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.engine.intake import key_record
from taskdeck.models import Task, TaskStatus
from taskdeck.store.base import InsertTask
from taskdeck.store.sqlite import SqliteStore
from taskdeck.vault import KeyVault
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

__all__ = [
    "ARTIFACTS",
    "CHROMIUM",
    "KEY",
    "LAUNCH_ARGS",
    "SECRET",
    "low_contrast",
    "no_sideways_scroll",
    "owner_of",
    "seed_tasks",
    "shot",
    "start_server",
]

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


def owner_of(key: str = KEY) -> str:
    """The owner hash the test server gives ``key``."""
    return KeyVault(SECRET).owner(key)


STATUSES = [TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.REJECTED, TaskStatus.COMPLETED]


def seed_tasks(db: Path, n: int, *, long_text: bool = False, key: str = KEY) -> list[Task]:
    """Store ``n`` ended tasks of ``key`` (completed with a JSON result, failed or rejected), oldest first.

    Ended tasks are never followed, so a server started on ``db`` serves them as they are.
    """
    store = SqliteStore(db)
    owner = owner_of(key)
    start = time.time() - n * 60
    tasks = []
    for i in range(n):
        status = STATUSES[i % len(STATUSES)]
        word = "supercalifragilistic" * 12 if long_text else "company"
        question = f"Task {i:05d}: who runs {word} number {i}?" + (" and more" * 300 if long_text else "")
        done = status == TaskStatus.COMPLETED
        tasks.append(
            Task(
                id=f"tsk_{i:024x}",
                owner=owner,
                processor=["lite", "core", "pro"][i % 3],
                request={"processor": "core", "input": question},
                status=status,
                created_at=start + i * 60,
                run_id=f"trun_{i:032x}" if status != TaskStatus.REJECTED else None,
                output={
                    "type": "json",
                    "content": {
                        "ceo": f"Person {i}",
                        "founded": 1990 + i % 30,
                        "notes": word * (3 if long_text else 1),
                    },
                    "basis": [
                        {
                            "field": "ceo",
                            "confidence": "high",
                            "citations": [{"url": f"https://example.com/{i}/{word}", "title": f"Source {i}"}],
                            "reasoning": "Named on the company's site.",
                        }
                    ],
                }
                if done
                else None,
                error={"message": "The run failed upstream."} if status == TaskStatus.FAILED else None,
                message="Parallel refused the create (402): add credit." if status == TaskStatus.REJECTED else None,
                cost_usd=0.01,
                submitted_at=start + i * 60 + 1,
                completed_at=start + i * 60 + 42,
            )
        )
    store.apply([key_record(KeyVault(SECRET), key)])
    for chunk in range(0, n, 500):
        store.apply([InsertTask(t) for t in tasks[chunk : chunk + 500]])
    store.close()
    return tasks


def no_sideways_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


CONTRAST_JS = (Path(__file__).parent / "contrast.js").read_text()


def low_contrast(page: Page) -> list[str]:
    """Every visible text below WCAG AA contrast on the page as it is now."""
    found: list[str] = page.evaluate(CONTRAST_JS)
    return found
