"""The live feed across processes: what other processes sharing the database commit, published here.

Every transaction the writer commits carries feed notes (store ``Announce``: task, owner, small
changes, the seq range of the events it stored). A bridge brings other processes' notes into this
process's :class:`~taskdeck.engine.feed.Feed`, so a browser connected to a web process sees live
what a worker on another machine stores:

* SQLite: one poll per process of ``feed_log`` (ids in commit order), every ``feed_poll_interval``;
* PostgreSQL: ``LISTEN`` on one connection per process; notifications are delivered at commit.

Notes carry ids, not events: the bridge reads a task's events from the store, and only when a
subscriber here wants them. Notes from this process are skipped (the writer published them already).
Subscribers de-duplicate by ``seq``, so an event delivered twice is harmless; one never delivered is
read from the store when the client resumes (``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from taskdeck.engine.feed import Feed, TaskChange
from taskdeck.store.base import FeedNote, Store

__all__ = ["FeedBridge", "PgListener", "SqliteTail", "bridge_for"]

log = logging.getLogger("taskdeck.bridge")
Db = Callable[..., Awaitable[Any]]
PRUNE_AFTER = 600.0  # seconds a feed_log row is kept (every live process has read it long before)


class FeedBridge(Protocol):
    deliver: _Deliver

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _Deliver:
    """Publishes other processes' notes to the local feed, reading events from the store when wanted."""

    def __init__(self, store: Store, feed: Feed, holder: str, db: Db) -> None:
        self.store = store
        self.feed = feed
        self.holder = holder
        self.db = db
        self.lag: float | None = None  # seconds from the last note's commit to its delivery here

    async def __call__(self, holder: str, note: FeedNote) -> None:
        if holder == self.holder:
            return  # ours: the writer published it at commit
        first, last = note.first_seq, note.last_seq
        if first is not None and last is not None and self.feed.wants_events_of(note.task_id, note.owner):
            events = await self.db(lambda: self.store.events(note.task_id, after_seq=first - 1, limit=last - first + 1))
            for event in events:
                self.feed.publish_event(event, note.owner)
        if note.changes:
            self.feed.publish_change(TaskChange(note.task_id, note.owner, dict(note.changes)))
        if note.at is not None:
            self.lag = max(0.0, time.time() - note.at)


class SqliteTail:
    """One poll of ``feed_log`` per process."""

    def __init__(self, store: Any, feed: Feed, holder: str, db: Db, interval: float) -> None:
        self.store = store  # a SqliteStore (feed_after, feed_last_id, feed_prune)
        self.deliver = _Deliver(store, feed, holder, db)
        self.db = db
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self.last_id = 0

    async def start(self) -> None:
        self.last_id = await self.db(self.store.feed_last_id)
        self._task = asyncio.create_task(self._run(), name="taskdeck-feed-tail")

    async def _run(self) -> None:
        pruned_at = 0.0
        failures = 0
        while True:
            try:
                rows = await self.db(self.store.feed_after, self.last_id)
                for row_id, holder, note in rows:
                    await self.deliver(holder, note)
                    self.last_id = row_id
                if time.monotonic() - pruned_at > 60:
                    pruned_at = time.monotonic()
                    await self.db(self.store.feed_prune, time.time() - PRUNE_AFTER)
                failures = 0
                if len(rows) < 1000:
                    await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                delay = min(5.0, self.interval * 2**failures)
                log.warning("reading the shared feed failed; retrying in %.2f s", delay, exc_info=True)
                await asyncio.sleep(delay)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class PgListener:
    """``LISTEN`` on a dedicated connection, in a thread; notes are handed to the event loop."""

    def __init__(self, url: str, store: Store, feed: Feed, holder: str, db: Db) -> None:
        self.url = url
        self.deliver = _Deliver(store, feed, holder, db)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.listening = threading.Event()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._listen, name="taskdeck-feed-listen", daemon=True)
        self._thread.start()
        self._task = asyncio.create_task(self._run(), name="taskdeck-feed-deliver")
        # Started only once LISTEN is in place: what commits after start() returns is seen.
        await asyncio.get_running_loop().run_in_executor(None, self.listening.wait, 30.0)

    def _listen(self) -> None:
        import psycopg

        from taskdeck.store.postgres import FEED_CHANNEL

        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {FEED_CHANNEL}")
                    self.listening.set()
                    if failures:
                        log.info("listening to the shared feed again after %d failure(s)", failures)
                    failures = 0
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            assert self._loop is not None
                            self._loop.call_soon_threadsafe(self._queue.put_nowait, notify.payload)
            except Exception:
                failures += 1
                delay = min(5.0, 0.1 * 2**failures)
                # Notifications sent while we reconnect are lost to this process: open streams get
                # those events when their clients resume from the store (Last-Event-ID).
                log.warning("the shared feed's connection failed; reconnecting in %.2f s", delay, exc_info=True)
                self._stop.wait(delay)

    async def _run(self) -> None:
        while True:
            payload = await self._queue.get()
            try:
                message = json.loads(payload)
                for task_id, owner, first, last, changes in message["n"]:
                    note = FeedNote(task_id, owner, changes, first, last, message.get("t"))
                    await self.deliver(message["h"], note)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("a shared feed notification could not be delivered", exc_info=True)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)


def bridge_for(store: Store, feed: Feed, holder: str, db: Db, *, url: str, poll: float) -> FeedBridge:
    """The bridge for the store's database."""
    from taskdeck.store.open import is_postgres

    if is_postgres(url):
        return PgListener(url, store, feed, holder, db)
    return SqliteTail(store, feed, holder, db, poll)
