"""Engine fixtures: an emulator that records what it sent, and an engine on a real SQLite file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings
from taskdeck.engine import Engine, TaskChange
from taskdeck.models import Origin, TaskStatus


@pytest.fixture(scope="module")
def recording_emulator() -> Iterator[BackgroundEmulator]:
    settings = EmulatorSettings(port=0, time_scale=0.005, record_sent=True)
    with BackgroundEmulator(settings) as emu:
        yield emu


def fast_settings(db: Path, base_url: str, **changes: Any) -> Settings:
    """Settings scaled for tests: quick backoff, short silences, quick leases."""
    values: dict[str, Any] = {
        "db_path": db,
        "parallel_base_url": base_url,
        "secret_key": "test-secret",
        "backoff_base": 0.02,
        "backoff_max": 0.5,
        "stream_read_timeout": 1.0,
        "heartbeat_interval": 0.2,
        "lease_ttl": 1.0,
        "poll_interval": 0.1,
        "result_wait": 2.0,
        "status_poll_after": 2.0,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
async def engine(tmp_path: Path, recording_emulator: BackgroundEmulator) -> AsyncIterator[Engine]:
    eng = Engine(fast_settings(tmp_path / "taskdeck.db", recording_emulator.url))
    await eng.start()
    yield eng
    await eng.stop()


async def wait_terminal(engine: Engine, task_ids: Iterable[str], timeout: float = 60.0) -> None:
    """Wait on the live feed until every task has reached a terminal status."""
    waiting = set(task_ids)
    with engine.feed.subscribe() as sub:
        for task in await asyncio.to_thread(engine.store.get_tasks, list(waiting)):
            if task.status.is_terminal:
                waiting.discard(task.id)
        async with asyncio.timeout(timeout):
            while waiting:
                item = await sub.queue.get()
                if isinstance(item, TaskChange) and item.task_id in waiting:
                    status = item.changes.get("status")
                    if isinstance(status, str) and TaskStatus(status).is_terminal:
                        waiting.discard(item.task_id)


def emulator_sent(emu_url: str, run_id: str) -> list[tuple[str, str]]:
    info = httpx.get(f"{emu_url}/_emulator/runs/{run_id}").json()
    return [(e["type"], e["data"]) for e in info["sent_events"]]


def stored_upstream(engine: Engine, task_id: str) -> list[tuple[str, str]]:
    return [(e.type, e.data) for e in engine.store.events(task_id) if e.origin == Origin.UPSTREAM]


def assert_exactly_once(engine: Engine, emu_url: str, task_id: str, *, ordered: bool = True) -> None:
    """The task holds every distinct event the emulator sent for its run, each once, nothing else.

    ``ordered``: messages are also stored in the order they were first sent (not so when one had to
    wait for a replay because its first write failed).
    """
    task = engine.store.get_task(task_id)
    assert task is not None and task.run_id is not None
    stored = stored_upstream(engine, task_id)
    sent = emulator_sent(emu_url, task.run_id)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(stored) == set(sent), f"stored {len(stored)} events, the emulator sent {len(sent)} distinct"
    if not ordered:
        return
    # Arrival order: messages keep the order the emulator first sent them in.
    msgs = [d for t, d in stored if t.startswith("task_run.progress_msg.")]
    stamps = [json.loads(d)["timestamp"] for d in msgs]
    assert stamps == sorted(stamps)
