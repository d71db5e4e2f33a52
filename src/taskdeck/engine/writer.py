"""The one writer: every write goes through here and is committed in batches (group commit).

Callers enqueue *units*: the writes of one unit belong together (a new task and
its first event; an event and the task change it causes) and are committed
together or not at all. Many units share one transaction. When that transaction
fails, the batch is retried unit by unit, each in its own transaction, so one
caller's bad unit fails only that caller (its future raises :class:`WriteFailed`,
its ``on_done`` hears ``False``) and every other unit still commits.

One thread runs the store's ``apply`` for each batch, so SQLite sees one writer
per process. After commit, inserted events and task changes are published to the
live feed: whatever a subscriber sees is already durable.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from taskdeck.engine.feed import Feed, TaskChange
from taskdeck.jsonbody import storable
from taskdeck.models import Event, Origin, Task
from taskdeck.store.base import Announce, AppendEvent, FeedNote, PatchTask, Store, Write

__all__ = ["WriteFailed", "Writer", "note", "small_changes"]

log = logging.getLogger("taskdeck.writer")


def note(task: Task, kind: str, **data: Any) -> AppendEvent:
    """One of our own lifecycle events (``taskdeck.<kind>``) for ``task``."""
    return AppendEvent(
        task_id=task.id,
        type=f"taskdeck.{kind}",
        origin=Origin.TASKDECK,
        data=json.dumps(storable(data), separators=(",", ":"), ensure_ascii=False),
        received_at=time.time(),
        owner=task.owner,
    )


def small_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The changes worth announcing to other processes: short scalars (status, progress_meter, run_id…).

    Outputs, progress details and errors stay out (a notification is at most 8 KB); a listener that
    needs them reads the task row.
    """
    return {
        k: v
        for k, v in changes.items()
        if v is None or isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) <= 200)
    }


class WriteFailed(RuntimeError):
    """A unit of writes could not be committed; nothing of it was stored."""


# Units queued at most before a caller waits for room.
INBOX_LIMIT = 200_000


@dataclass(slots=True)
class _Unit:
    writes: tuple[Write, ...]
    owner: str
    future: asyncio.Future[None] | None = None
    on_done: Callable[[bool], None] | None = None


class Writer:
    """Batches units of writes from many coroutines into few transactions."""

    def __init__(self, store: Store, feed: Feed, *, batch: int = 5000, holder: str | None = None) -> None:
        self.store = store
        self.feed = feed
        # Set: every transaction also announces what it changed to the other processes sharing the
        # database (engine/bridge.py), in the same transaction.
        self.holder = holder
        self.batch = batch
        # The inbox: a deque and two wake-ups rather than an asyncio.Queue, whose per-item bookkeeping
        # was a measurable part of the event loop's work per event (bench engine-ingest). Bounded: a
        # caller waits for room once ``INBOX_LIMIT`` units are queued, so memory stays bounded too.
        self._inbox: deque[_Unit] = deque()
        self._wake: asyncio.Future[None] | None = None  # set while the writer waits for work
        self._room = asyncio.Event()
        self._room.set()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskdeck-writer")
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.written = 0
        self.failed_units = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="taskdeck-writer")

    async def put(self, *writes: Write, owner: str = "", on_done: Callable[[bool], None] | None = None) -> None:
        """Enqueue one unit; it is committed soon, with others. ``on_done(ok)`` runs once it is decided."""
        if not writes and on_done is None:
            return
        # _enqueue inlined: this runs once per event, and a second coroutine per call was measurable.
        while len(self._inbox) >= INBOX_LIMIT:
            self._room.clear()
            await self._room.wait()
        self._inbox.append(_Unit(writes, owner, None, on_done))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def _enqueue(self, unit: _Unit) -> None:
        while len(self._inbox) >= INBOX_LIMIT:
            self._room.clear()
            await self._room.wait()
        self._inbox.append(unit)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def commit(self, writes: Sequence[Write], owner: str = "") -> None:
        """Enqueue one unit and wait until it (and everything before it) is decided.

        Raises :class:`WriteFailed` when this unit could not be committed.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._enqueue(_Unit(tuple(writes), owner, done))
        await done

    async def _next_units(self) -> list[_Unit]:
        """Wait for at least one unit, then take units up to ``batch`` writes."""
        while not self._inbox:
            self._wake = asyncio.get_running_loop().create_future()
            await self._wake
        inbox = self._inbox
        units = [inbox.popleft()]
        size = len(units[0].writes)
        while size < self.batch and inbox:
            unit = inbox.popleft()
            units.append(unit)
            size += len(unit.writes)
        if len(inbox) < INBOX_LIMIT:
            self._room.set()
        return units

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            units = await self._next_units()
            writes = [w for u in units for w in u.writes]
            writes += self._announce(units)
            try:
                inserted = await loop.run_in_executor(self._pool, self.store.apply, writes) if writes else []
            except Exception as exc:
                if len(units) == 1:
                    self._fail(units[0], exc)
                    continue
                log.warning("write batch of %d units failed (%s); retrying them one by one", len(units), exc)
                await self._one_by_one(units)
                continue
            self.commits += 1
            self.written += len(writes)
            self._publish(units, inserted)
            for unit in units:
                self._succeed(unit)

    async def _one_by_one(self, units: list[_Unit]) -> None:
        """Commit each unit in its own transaction, so only the bad ones fail."""
        loop = asyncio.get_running_loop()
        for unit in units:
            try:
                writes = [*unit.writes, *self._announce([unit])]
                inserted = await loop.run_in_executor(self._pool, self.store.apply, writes)
            except Exception as exc:
                self._fail(unit, exc)
                continue
            self.commits += 1
            self.written += len(unit.writes)
            self._publish([unit], inserted)
            self._succeed(unit)

    def _announce(self, units: list[_Unit]) -> list[Write]:
        if self.holder is None:
            return []
        notes: dict[str, tuple[str, dict[str, Any]]] = {}
        for unit in units:
            for write in unit.writes:
                if isinstance(write, AppendEvent):
                    notes.setdefault(write.task_id, (write.owner or unit.owner, {}))
                elif isinstance(write, PatchTask):
                    notes.setdefault(write.task_id, (unit.owner, {}))[1].update(write.changes)
        if not notes:
            return []
        # Filtered once per task, on the merged changes (a batch often holds one patch per event of a
        # task): a value too big to announce is left to a read of the row, never replaced by an older one.
        return [Announce(self.holder, tuple(FeedNote(t, o, small_changes(c)) for t, (o, c) in notes.items()))]

    def _succeed(self, unit: _Unit) -> None:
        if unit.on_done is not None:
            unit.on_done(True)
        if unit.future is not None and not unit.future.done():
            unit.future.set_result(None)

    def _fail(self, unit: _Unit, exc: Exception) -> None:
        self.failed_units += 1
        # The error names the problem (a constraint, an encoding); the writes may hold secrets, so not them.
        log.error("a unit of %d writes failed and was not stored: %s: %s", len(unit.writes), type(exc).__name__, exc)
        if unit.on_done is not None:
            unit.on_done(False)
        if unit.future is not None and not unit.future.done():
            unit.future.set_exception(WriteFailed(f"{type(exc).__name__}: {exc}"))

    def _publish(self, units: list[_Unit], inserted: list[Event]) -> None:
        if self.feed.idle:
            return  # nobody here watches anything (a worker with no browser): no item to build
        owners = {
            w.task_id: unit.owner
            for unit in units
            if unit.owner
            for w in unit.writes
            if isinstance(w, AppendEvent | PatchTask)
        }
        for event in inserted:
            self.feed.publish_event(event, owners.get(event.task_id, ""))
        for unit in units:
            for write in unit.writes:
                if isinstance(write, PatchTask):
                    self.feed.publish_change(TaskChange(write.task_id, unit.owner, write.changes))

    async def drain(self) -> None:
        """Wait until everything enqueued so far is decided."""
        await self.commit([])

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        try:
            await self.drain()
        finally:
            if self._task is not None:
                self._task.cancel()
            self._pool.shutdown(wait=True)
