"""The group-commit writer: one caller's failing unit never fails another's (issue 7, items 1, 2 and 19)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pytest

from taskdeck.engine.feed import Feed, TaskChange
from taskdeck.engine.writer import WriteFailed, Writer
from taskdeck.models import Event, Origin, Task, TaskStatus
from taskdeck.store import AppendEvent, InsertTask, PatchTask, PutKey, SqliteStore
from taskdeck.store.base import Write


class FailingStore(SqliteStore):
    """The real SQLite store, whose next ``fail_next`` transactions fail as a full disk would."""

    fail_next = 0
    applies = 0

    def apply(self, writes: Sequence[Write]) -> list[Event]:
        self.applies += 1
        if self.fail_next > 0:
            self.fail_next -= 1
            raise OSError("disk I/O error (injected)")
        return super().apply(writes)


def make_task(owner: str = "o1") -> Task:
    return Task(
        id=f"tsk_{time.monotonic_ns():024x}"[:28],
        owner=owner,
        processor="lite",
        request={"input": "x", "processor": "lite"},
        status=TaskStatus.QUEUED,
        created_at=time.time(),
    )


def event(task_id: str, key: str) -> AppendEvent:
    return AppendEvent(task_id, "task_run.progress_msg.plan", Origin.UPSTREAM, '{"m":1}', time.time(), None, key)


@pytest.fixture
async def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "w.db")
    s.apply([PutKey("o1", b"c", "x", 1.0)])
    return s


async def test_a_bad_unit_fails_only_its_caller_and_the_rest_of_the_batch_commits(store: SqliteStore) -> None:
    feed = Feed()
    writer = Writer(store, feed, batch=1000)
    tasks = [make_task() for _ in range(20)]
    store.apply([InsertTask(t) for t in tasks[:10]])
    outcomes: dict[str, bool] = {}
    with feed.subscribe() as sub:
        # Everything is queued before the writer runs, so it all lands in one batch.
        commits = [asyncio.ensure_future(writer.commit([InsertTask(t)], "o1")) for t in tasks[10:]]
        bad = asyncio.ensure_future(writer.commit([PatchTask(tasks[0].id, {"no_such_column": 1})], "o1"))
        for t in tasks[:10]:
            await writer.put(
                event(t.id, f"k-{t.id}"),
                PatchTask(t.id, {"progress_meter": 50.0}),
                owner="o1",
                on_done=partial(outcomes.__setitem__, t.id),
            )
        writer.start()
        await asyncio.gather(*commits)
        with pytest.raises(WriteFailed, match="no_such_column"):
            await bad
        await writer.drain()
        assert writer.failed_units == 1
        assert outcomes == {t.id: True for t in tasks[:10]}
        assert all(store.get_task(t.id) is not None for t in tasks)
        assert all(len(store.events(t.id)) == 1 for t in tasks[:10])
        published = []
        while not sub.queue.empty():
            published.append(sub.queue.get_nowait())
        assert not any(isinstance(p, TaskChange) and "no_such_column" in p.changes for p in published)
        assert len([p for p in published if isinstance(p, Event)]) == 10
    await writer.close()
    store.close()


async def test_a_failed_batch_reaches_every_waiter(store: SqliteStore, tmp_path: Path) -> None:
    failing = FailingStore(tmp_path / "f.db")
    failing.apply([PutKey("o1", b"c", "x", 1.0)])
    writer = Writer(failing, Feed())
    failing.fail_next = 1000  # every transaction fails, alone or batched
    heard: list[bool] = []
    waiters = [asyncio.ensure_future(writer.commit([InsertTask(make_task())], "o1")) for _ in range(5)]
    await writer.put(event("tsk_x", "k"), on_done=heard.append)
    writer.start()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    await writer.put(on_done=heard.append)  # a marker: decided after everything before it
    assert all(isinstance(r, WriteFailed) for r in results), results
    assert heard[0] is False  # the event's unit was not stored, and its caller heard so
    failing.fail_next = 0
    await writer.close()
    failing.close()
    store.close()


async def test_a_transient_failure_of_one_batch_still_commits_its_units_one_by_one(tmp_path: Path) -> None:
    failing = FailingStore(tmp_path / "t.db")
    failing.apply([PutKey("o1", b"c", "x", 1.0)])
    writer = Writer(failing, Feed())
    failing.fail_next = 1  # only the batch fails; the retries of its units succeed
    tasks = [make_task() for _ in range(5)]
    waiters = [asyncio.ensure_future(writer.commit([InsertTask(t)], "o1")) for t in tasks]
    writer.start()
    await asyncio.gather(*waiters)
    assert all(failing.get_task(t.id) is not None for t in tasks)
    await writer.close()
    failing.close()


async def test_a_batch_announces_each_task_once_with_its_newest_small_changes(store: SqliteStore) -> None:
    """Other processes hear one note per task per batch; a value too big to announce hides older ones."""
    task = make_task()
    store.apply([InsertTask(task)])
    writer = Writer(store, Feed(), batch=100, holder="me")
    head = store.feed_last_id()
    # Queued before the writer runs, so the four units share one transaction.
    await writer.put(event(task.id, "k1"), PatchTask(task.id, {"status": "running", "progress_meter": 10}))
    await writer.put(event(task.id, "k2"), PatchTask(task.id, {"progress_meter": 20}))
    await writer.put(PatchTask(task.id, {"status": "x" * 500}))  # too big to announce: left to a read of the row
    await writer.put(PatchTask(task.id, {"last_event_at": 5.0}))
    writer.start()
    await writer.drain()
    await writer.close()
    notes = [n for _, holder, n in store.feed_after(head) if holder == "me" and n.task_id == task.id]
    assert len(notes) == 1
    assert notes[0].changes == {"progress_meter": 20, "last_event_at": 5.0}
    assert (notes[0].first_seq, notes[0].last_seq) == (1, 2)
