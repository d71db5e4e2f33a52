"""Lease renewals never wait behind other work, and the fence closes only the streams at risk.

At 5,000 runs per worker renewals once queued behind followers' reads, leases expired under open
streams, and other workers opened second streams for the same runs. At 15,000 runs with a 10 s
lease, renewals made inside the heartbeat came late behind its claims and the fence closed every
stream of the process, again and again.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest

from conftest import fast_settings
from taskdeck.engine import Engine
from taskdeck.engine.engine import RENEW_CHUNK
from taskdeck.engine.follower import Follower


class Stub:
    """A follower that only records being stopped."""

    def __init__(self, stopped: list[str], task_id: str) -> None:
        self.stopped = stopped
        self.task_id = task_id

    def stop(self) -> None:
        self.stopped.append(self.task_id)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = Engine(fast_settings(tmp_path / "t.db", "http://127.0.0.1:9", lease_ttl=5.0, heartbeat_interval=1.0))
    yield engine
    engine.followers.clear()
    engine._db_pool.shutdown()
    engine._lease_pool.shutdown()
    engine._renew_pool.shutdown()
    engine.store.close()


def hold(engine: Engine, ids: Sequence[str], stopped: list[str], leased_ago: float) -> None:
    for task_id in ids:
        engine.followers[task_id] = cast(Follower, Stub(stopped, task_id))
        engine._leased_at[task_id] = time.monotonic() - leased_ago


async def test_leases_are_renewed_while_every_other_database_thread_is_busy(engine: Engine) -> None:
    renewed = threading.Event()
    release = threading.Event()

    def renew(holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        renewed.set()
        return set(task_ids)

    engine.store.renew = renew  # type: ignore[method-assign]
    hold(engine, ["tsk_x"], [], leased_ago=4.0)
    loop = asyncio.get_running_loop()
    # Every read thread busy, as when thousands of followers load their de-dup keys at once, and
    # the claims' thread too, as when a heartbeat's claim is slow.
    blockers = [loop.run_in_executor(engine._db_pool, release.wait) for _ in range(4)]
    blockers.append(loop.run_in_executor(engine._lease_pool, release.wait))
    renewal = asyncio.create_task(engine._renew())
    try:
        assert await asyncio.to_thread(renewed.wait, 10), "the renewal waited behind the busy threads"
        await asyncio.wait_for(renewal, 10)
        assert engine.lease_fresh()
        assert engine.fence() == 0  # renewed just now: nothing at risk
    finally:
        release.set()
        await asyncio.gather(*blockers)
        renewal.cancel()
        await asyncio.gather(renewal, return_exceptions=True)


async def test_the_fence_closes_only_the_streams_whose_leases_are_at_risk(engine: Engine) -> None:
    stopped: list[str] = []
    hold(engine, ["tsk_fresh"], stopped, leased_ago=1.0)  # renewed a second ago: fine
    hold(engine, ["tsk_late"], stopped, leased_ago=4.5)  # 0.5 s before its 5 s lease runs out
    assert engine.fence() == 1
    assert stopped == ["tsk_late"] and list(engine.followers) == ["tsk_fresh"]
    assert engine.fence() == 0


async def test_renewed_chunks_are_safe_while_a_later_chunk_is_stuck(engine: Engine) -> None:
    """A renewal commits a chunk at a time: when the database stalls on one, only that chunk's runs are closed."""
    stuck = threading.Event()
    go = threading.Event()
    calls: list[int] = []

    def renew(holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        calls.append(len(task_ids))
        if len(calls) == 3:
            stuck.set()
            go.wait(30)
        return set(task_ids)

    engine.store.renew = renew  # type: ignore[method-assign]
    stopped: list[str] = []
    ids = [f"tsk_{i:05d}" for i in range(2 * RENEW_CHUNK + 7)]
    hold(engine, ids, stopped, leased_ago=4.5)  # every lease near its end
    renewal = asyncio.create_task(engine._renew())
    try:
        assert await asyncio.to_thread(stuck.wait, 10)
        assert engine.fence() == 7  # the last chunk's runs, not the 2,000 already renewed
        assert sorted(stopped) == ids[2 * RENEW_CHUNK :]
        assert len(engine.followers) == 2 * RENEW_CHUNK
    finally:
        go.set()
        await asyncio.wait_for(renewal, 10)
    assert calls == [RENEW_CHUNK, RENEW_CHUNK, 7]


async def test_a_lease_another_process_took_is_dropped_at_renewal(engine: Engine) -> None:
    def renew(holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        return {t for t in task_ids if t != "tsk_taken"}

    engine.store.renew = renew  # type: ignore[method-assign]
    stopped: list[str] = []
    hold(engine, ["tsk_kept", "tsk_taken"], stopped, leased_ago=2.0)
    await engine._renew()
    assert stopped == ["tsk_taken"] and list(engine.followers) == ["tsk_kept"]
    assert "tsk_taken" not in engine._leased_at


async def test_a_create_waits_only_for_its_own_lease_not_for_every_renewal(engine: Engine) -> None:
    """A task claimed a moment ago may send its create even while a long renewal round is still going."""
    hold(engine, ["tsk_new"], [], leased_ago=0.5)
    hold(engine, ["tsk_old"], [], leased_ago=4.5)
    engine._renewed_at = time.monotonic() - 4.5  # the last complete round started long ago
    assert engine.lease_fresh("tsk_new")
    assert not engine.lease_fresh("tsk_old")
    assert not engine.lease_fresh()  # every lease here: only as fresh as the last complete round
