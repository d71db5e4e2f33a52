"""The live feed: in-process publish/subscribe of stored events and task changes.

The writer publishes only after commit, so whatever a subscriber sees is
already durable. Subscribers get their own bounded queue; a subscriber too slow
to keep up is dropped (``overflowed``) and must re-read from the store, rather
than slowing the writer down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from taskdeck.models import Event

__all__ = ["Feed", "Subscription", "TaskChange"]


@dataclass(frozen=True, slots=True)
class TaskChange:
    """A committed change to a task row (status, progress, output...)."""

    task_id: str
    owner: str
    changes: dict[str, object]


Item = Event | TaskChange


@dataclass(eq=False)  # identity equality: subscriptions live in sets
class Subscription:
    """One subscriber's queue. ``task_id`` or ``owner`` narrows what it receives."""

    task_id: str | None
    owner: str | None
    queue: asyncio.Queue[Item] = field(default_factory=lambda: asyncio.Queue(maxsize=10_000))
    overflowed: bool = False

    def restart(self) -> None:
        """Empty the queue and take items again (the subscriber re-reads what it missed from the store)."""
        while not self.queue.empty():
            self.queue.get_nowait()
        self.overflowed = False

    def offer(self, item: Item) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.overflowed = True


class Feed:
    """Routes each published item to the subscriptions that want it."""

    def __init__(self) -> None:
        self._by_task: dict[str, set[Subscription]] = {}
        self._by_owner: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()

    @contextmanager
    def subscribe(self, *, task_id: str | None = None, owner: str | None = None) -> Iterator[Subscription]:
        sub = Subscription(task_id, owner)
        table, key = (self._by_task, task_id) if task_id else (self._by_owner, owner) if owner else (None, None)
        if table is None or key is None:
            self._all.add(sub)
        else:
            table.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            if table is None or key is None:
                self._all.discard(sub)
            else:
                table[key].discard(sub)
                if not table[key]:
                    del table[key]

    @property
    def idle(self) -> bool:
        """Whether nobody subscribes to anything (then publishing can be skipped altogether)."""
        return not (self._all or self._by_task or self._by_owner)

    def wants_events_of(self, task_id: str, owner: str) -> bool:
        """Whether any subscriber here would receive events of this task (else nobody need read them)."""
        return bool(self._all) or task_id in self._by_task or owner in self._by_owner

    def publish_event(self, event: Event, owner: str) -> None:
        for sub in self._by_task.get(event.task_id, ()):
            sub.offer(event)
        for sub in self._by_owner.get(owner, ()):
            sub.offer(event)
        for sub in self._all:
            sub.offer(event)

    def publish_change(self, change: TaskChange) -> None:
        for sub in self._by_task.get(change.task_id, ()):
            sub.offer(change)
        for sub in self._by_owner.get(change.owner, ()):
            sub.offer(change)
        for sub in self._all:
            sub.offer(change)
