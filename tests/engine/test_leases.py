"""Lease renewals never wait behind other store work (at 5,000 runs per worker they once did, leases
expired under open streams, and other workers opened second streams for the same runs)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from conftest import fast_settings
from taskdeck.engine import Engine
from taskdeck.engine.follower import Follower


async def test_a_heartbeat_renews_leases_while_every_database_thread_is_busy(tmp_path: Path) -> None:
    engine = Engine(fast_settings(tmp_path / "t.db", "http://127.0.0.1:9"))
    renewed = threading.Event()
    release = threading.Event()

    def renew(holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        renewed.set()
        return set(task_ids)

    engine.store.renew = renew  # type: ignore[method-assign]
    engine.followers["tsk_x"] = cast(Follower, object())  # held, and renewed by every heartbeat
    loop = asyncio.get_running_loop()
    # Every read thread busy, as when thousands of followers load their de-dup keys at once.
    blockers = [loop.run_in_executor(engine._db_pool, release.wait) for _ in range(4)]
    heartbeat = asyncio.create_task(engine._heartbeat())
    try:
        assert await asyncio.to_thread(renewed.wait, 10), "the renewal waited behind the busy read threads"
        assert engine.lease_fresh()
    finally:
        release.set()
        await asyncio.gather(*blockers)
        heartbeat.cancel()
        await asyncio.gather(heartbeat, return_exceptions=True)
        engine.followers.clear()
        engine._db_pool.shutdown()
        engine._lease_pool.shutdown()
        engine.store.close()


async def test_streams_close_before_leases_a_late_heartbeat_failed_to_renew_can_expire(tmp_path: Path) -> None:
    engine = Engine(fast_settings(tmp_path / "t.db", "http://127.0.0.1:9", lease_ttl=5.0, heartbeat_interval=1.0))
    stopped: list[str] = []

    class Stub:
        def stop(self) -> None:
            stopped.append("x")

    engine.followers["tsk_x"] = cast(Follower, Stub())
    try:
        engine._renewed_at = time.monotonic() - 1.0  # renewed a second ago: fine
        assert engine.fence() == 0 and "tsk_x" in engine.followers
        engine._renewed_at = time.monotonic() - 4.5  # 0.5 s before a 5 s lease runs out, not renewed
        assert engine.fence() == 1
        assert stopped == ["x"] and engine.followers == {}
    finally:
        engine._db_pool.shutdown()
        engine._lease_pool.shutdown()
        engine.store.close()
