"""The one writer: every write goes through here and is committed in batches (group commit).

Callers enqueue writes and, when they need to, await the batch's commit. One
thread runs the store's ``apply`` for each batch, so SQLite sees one writer
per process and many events share one transaction. After commit, inserted events
and task changes are published to the live feed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from taskdeck.engine.feed import Feed, TaskChange
from taskdeck.models import Event
from taskdeck.store.base import AppendEvent, PatchTask, Store, Write

__all__ = ["Writer"]

log = logging.getLogger("taskdeck.writer")
Item = tuple[Write | None, str, "asyncio.Future[None] | None"]


class Writer:
    """Batches writes from many coroutines into few transactions."""

    def __init__(self, store: Store, feed: Feed, *, batch: int = 5000) -> None:
        self.store = store
        self.feed = feed
        self.batch = batch
        # Items are (write, owner, None) or a barrier (None, "", future) resolved once all before it commit.
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=200_000)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskdeck-writer")
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="taskdeck-writer")

    async def put(self, write: Write, owner: str = "") -> None:
        """Enqueue a write; it is committed soon, with others."""
        await self._queue.put((write, owner, None))

    async def commit(self, writes: Sequence[Write], owner: str = "") -> None:
        """Enqueue writes and wait until they (and everything before them) are committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for write in writes:
            await self._queue.put((write, owner, None))
        await self._queue.put((None, "", done))
        await done

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            items = [first]
            while len(items) < self.batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            writes = [w for w, _, _ in items if w is not None]
            try:
                inserted = await loop.run_in_executor(self._pool, self.store.apply, writes) if writes else []
            except Exception as exc:
                log.exception("write batch of %d failed", len(writes))
                for _, _, fut in items:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                continue
            self.commits += 1
            self.written += len(writes)
            self._publish(items, inserted)
            for _, _, fut in items:
                if fut is not None and not fut.done():
                    fut.set_result(None)

    def _publish(self, items: list[Item], inserted: list[Event]) -> None:
        owners = {w.task_id: owner for w, owner, _ in items if isinstance(w, AppendEvent | PatchTask) and owner}
        for event in inserted:
            self.feed.publish_event(event, owners.get(event.task_id, ""))
        for write, owner, _ in items:
            if isinstance(write, PatchTask):
                self.feed.publish_change(TaskChange(write.task_id, owner, write.changes))

    async def drain(self) -> None:
        """Wait until everything enqueued so far is committed."""
        await self.commit([])

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        try:
            await self.drain()
        finally:
            if self._task is not None:
                self._task.cancel()
            self._pool.shutdown(wait=True)
