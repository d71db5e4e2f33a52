"""Rows of a batch, followed on demand while a person looks at them.

A batch's rows are not followed one stream per run (the batch supervisor reads one group stream and
fetches outcomes in bulk: 10,000 rows cost a handful of requests). When someone opens a row's page,
its run's own event stream is opened for as long as they watch: Parallel replays the run's history,
and every event is stored once (the follower's de-dup keys), so the reasoning and sources show live
like any task's. The stream closes a little after the last viewer leaves, or when the run ends.

One stream per row per process at most (viewers in one process share it); rows have their
``enable_events`` set when the batch is built, so there is something to read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from taskdeck.engine.follower import Follower, FollowerPorts
from taskdeck.models import Task

__all__ = ["LINGER_SECONDS", "RowViewers"]

log = logging.getLogger("taskdeck.viewers")

# A viewer who reloads the page comes back within this time: the stream stays open meanwhile.
LINGER_SECONDS = 5.0


@dataclass
class _Watch:
    follower: Follower
    task: asyncio.Task[None]
    viewers: int = 0
    closing: asyncio.Task[None] | None = field(default=None)


class RowViewers:
    """The batch rows this process reads the run streams of, each for as long as someone watches it."""

    def __init__(self, ports: FollowerPorts, api_key: Callable[[str], Awaitable[str | None]]) -> None:
        self._ports = ports
        self._api_key = api_key
        self._watches: dict[str, _Watch] = {}

    def streaming(self) -> list[str]:
        """The rows whose run stream is open here."""
        return [task_id for task_id, w in self._watches.items() if not w.task.done()]

    @asynccontextmanager
    async def viewing(self, task: Task) -> AsyncIterator[None]:
        """While inside, the row's run stream is open here (a no-op for anything but a running batch row)."""
        if task.batch_id is None or task.run_id is None or task.status.is_terminal:
            yield
            return
        watch = await self._open(task)
        if watch is None:
            yield
            return
        watch.viewers += 1
        if watch.closing is not None:
            watch.closing.cancel()
            watch.closing = None
        try:
            yield
        finally:
            watch.viewers -= 1
            if watch.viewers == 0 and not watch.task.done():
                watch.closing = asyncio.create_task(self._close_later(task.id, watch))

    async def _open(self, task: Task) -> _Watch | None:
        watch = self._watches.get(task.id)
        if watch is not None and not watch.task.done():
            return watch
        key = await self._api_key(task.owner)
        if key is None:
            return None
        follower = Follower(self._ports, task, key)
        watch = _Watch(follower, asyncio.create_task(self._run(task.id, follower), name=f"view-{task.id}"))
        self._watches[task.id] = watch
        log.info("row %s of batch %s watched: its run's stream opened", task.id, task.batch_id)
        return watch

    async def _run(self, task_id: str, follower: Follower) -> None:
        try:
            await follower.run()
        except Exception:
            log.exception("reading the run stream of watched row %s failed; the batch goes on", task_id)

    async def _close_later(self, task_id: str, watch: _Watch) -> None:
        await asyncio.sleep(LINGER_SECONDS)
        if watch.viewers == 0:
            watch.follower.stop()
            if self._watches.get(task_id) is watch:
                del self._watches[task_id]
            log.info("row %s no longer watched: its run's stream closed", task_id)

    async def stop(self, grace: float) -> None:
        """Close every stream (the process is stopping)."""
        for watch in self._watches.values():
            watch.follower.stop()
            if watch.closing is not None:
                watch.closing.cancel()
        tasks = [w.task for w in self._watches.values() if not w.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        self._watches.clear()
