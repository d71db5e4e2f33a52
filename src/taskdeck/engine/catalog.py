"""The catalog: what the web layer and the CLI may ask of stored tasks (list, page, events after, delete).

An async read service over the store. Callers never hold the store or the engine's database
threads themselves, so the store can change under them (SQLite today, PostgreSQL beside it) and
every read stays off the event loop. The only write here is ``delete``, because deleting a task
is a catalog matter: the row goes, and everyone watching (here and in every process sharing the
database) is told at once. Commands that talk to Parallel (submit, track, resubmit) stay on the
:class:`~taskdeck.engine.Engine`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from taskdeck.engine.feed import Feed, Subscription, TaskChange
from taskdeck.engine.intake import IntakeError
from taskdeck.engine.writer import Writer
from taskdeck.models import Batch, Event, Task
from taskdeck.store.base import Announce, FeedNote, Store

__all__ = ["Catalog", "Page"]

log = logging.getLogger("taskdeck.catalog")

# Runs a blocking store call on the engine's database threads.
Runner = Callable[..., Awaitable[Any]]

# A task page shows at most this many follow-ups (a conversation longer than that is read by paging).
FOLLOW_UPS = 200


@dataclass(frozen=True, slots=True)
class Page:
    """One page of an owner's tasks, and the (created_at, id) to continue after (None on the last page)."""

    tasks: list[Task]
    next_before: tuple[float, str] | None


class Catalog:
    """Reads of stored tasks and their events, and deletion, for the web layer and the CLI."""

    def __init__(
        self,
        store: Store,
        run: Runner,
        feed: Feed,
        writer: Writer,
        holder: str,
        *,
        on_delete: Callable[[str], None] = lambda task_id: None,
    ) -> None:
        self._store = store
        self._run = run
        self._feed = feed
        self._writer = writer
        self._holder = holder
        # The engine stops following a deleted task here at once (elsewhere at the next heartbeat).
        self._on_delete = on_delete

    async def get(self, task_id: str) -> Task | None:
        """The task of this id, whoever owns it (callers check ownership)."""
        task: Task | None = await self._run(self._store.get_task, task_id)
        return task

    async def get_many(self, task_ids: Sequence[str]) -> list[Task]:
        """The tasks of these ids that exist, in no particular order."""
        tasks: list[Task] = await self._run(self._store.get_tasks, list(task_ids))
        return tasks

    async def owned(self, owner: str, task_id: str) -> Task | None:
        """The task when it exists and belongs to ``owner``; None otherwise (the two are not told apart)."""
        task = await self.get(task_id)
        return task if task is not None and task.owner == owner else None

    async def page(
        self,
        owner: str,
        *,
        statuses: Sequence[str] | None = None,
        processor: str | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        oldest_first: bool = False,
    ) -> Page:
        """One page of the owner's tasks (newest first unless ``oldest_first``) after ``before``."""
        tasks: list[Task] = await self._run(
            lambda: self._store.list_tasks(
                owner,
                statuses=statuses,
                processor=processor,
                text=text,
                limit=limit + 1,  # one more than shown tells whether a next page exists
                before=before,
                oldest_first=oldest_first,
            )
        )
        shown = tasks[:limit]
        more = len(tasks) > limit and bool(shown)
        return Page(shown, (shown[-1].created_at, shown[-1].id) if more else None)

    async def counts(self, owner: str, *, processor: str | None = None) -> dict[str, int]:
        """The owner's tasks per status (of one processor, when given)."""
        counts: dict[str, int] = await self._run(lambda: self._store.count_tasks(owner, processor=processor))
        return counts

    async def follow_ups(self, task: Task) -> list[Task]:
        """The follow-ups of a task, oldest first."""
        tasks: list[Task] = await self._run(
            lambda: self._store.list_tasks(task.owner, follow_up_of=task.id, limit=FOLLOW_UPS, oldest_first=True)
        )
        return tasks

    async def events(self, task_id: str, *, after_seq: int = 0) -> list[Event]:
        """The task's stored events after ``after_seq`` (its own per-task sequence), in order."""
        events: list[Event] = await self._run(lambda: self._store.events(task_id, after_seq=after_seq))
        return events

    # -- batches ------------------------------------------------------------------------------
    async def batch(self, owner: str, batch_id: str) -> Batch | None:
        """The batch when it exists and belongs to ``owner``; None otherwise (the two are not told apart)."""
        batch: Batch | None = await self._run(self._store.get_batch, batch_id)
        return batch if batch is not None and batch.owner == owner else None

    async def find_batch(self, owner: str, resume_key: str) -> Batch | None:
        """The owner's batch of this input and spec, if one was made (running it again resumes it)."""
        batch: Batch | None = await self._run(self._store.find_batch, owner, resume_key)
        return batch

    async def batches(self, owner: str, *, limit: int = 50) -> list[Batch]:
        """The owner's batches, newest first."""
        found: list[Batch] = await self._run(lambda: self._store.list_batches(owner, limit=limit))
        return found

    async def batch_counts(self, batch_id: str) -> dict[str, int]:
        """A batch's rows per status."""
        counts: dict[str, int] = await self._run(self._store.batch_counts, batch_id)
        return counts

    async def batch_cost(self, batch_id: str) -> float:
        """What a batch's runs cost so far (USD)."""
        cost: float = await self._run(self._store.batch_cost, batch_id)
        return cost

    async def batch_rows(
        self,
        batch_id: str,
        *,
        after: int = -1,
        limit: int = 500,
        statuses: Sequence[str] | None = None,
        changed_since: float | None = None,
    ) -> list[Task]:
        """A batch's rows in input order after row index ``after`` (filtered by status, or by change time)."""
        rows: list[Task] = await self._run(
            lambda: self._store.batch_rows(
                batch_id, after_index=after, limit=limit, statuses=statuses, changed_since=changed_since
            )
        )
        return rows

    def watch(self, *, task_id: str | None = None, owner: str | None = None) -> AbstractContextManager[Subscription]:
        """A live subscription (a context manager) to a task's, or an owner's, committed changes."""
        return self._feed.subscribe(task_id=task_id, owner=owner)

    @staticmethod
    def catch_up(sub: Subscription) -> bool:
        """Whether the subscriber fell behind (its queue overflowed); if so, start it afresh.

        The caller then re-reads from the store what it may have missed: nothing is lost, and the
        writer never waits for a slow reader.
        """
        if not sub.overflowed:
            return False
        sub.restart()
        return True

    async def delete(self, owner: str, task_id: str) -> Task:
        """Stop following a task (in any state) and remove it with its events.

        Nothing is cancelled at Parallel (it has no cancel): a run it already created goes on and is billed.
        Another process following the task stops at its next heartbeat (its lease renewal finds no row).
        """
        task = await self.owned(owner, task_id)
        if task is None:
            raise IntakeError(404, f"No task {task_id!r} for this API key.")
        self._on_delete(task.id)
        if not await self._run(lambda: self._store.delete_task(task.id)):
            raise IntakeError(404, f"No task {task_id!r} for this API key.")
        log.info("task %s deleted by its owner (it was %s)", task.id, task.status.value)
        # Tell open streams and lists at once (the row is gone, so nothing else will), here and in
        # every other process sharing the database.
        self._feed.publish_change(TaskChange(task.id, owner, {"deleted": True}))
        await self._writer.commit([Announce(self._holder, (FeedNote(task.id, owner, {"deleted": True}),))])
        return task
