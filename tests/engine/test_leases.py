"""Lease renewals never wait behind other store work (at 5,000 runs per worker they once did, leases
expired under open streams, and other workers opened second streams for the same runs)."""

from __future__ import annotations

import asyncio
import threading
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
