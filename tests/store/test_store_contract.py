"""The store contract: every Store implementation (SQLite, PostgreSQL) must pass every test here.

Run on a real SQLite file and on a real PostgreSQL (tests/pg.py: never skipped), each test in a fresh
database (a new file, or a new schema).
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from pg import fresh_schema
from taskdeck.models import Batch, BatchStatus, Origin, Task, TaskStatus, new_batch_id
from taskdeck.store import AppendEvent, InsertTask, PatchTask, PutKey, Store
from taskdeck.store.base import AdvanceGroupCursor, OwnerGroup, ProcessInfo
from taskdeck.store.open import open_store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        opened = open_store(str(tmp_path / "t.db"))
        yield opened
        opened.close()
        return
    with fresh_schema() as url:
        opened = open_store(url)
        yield opened
        opened.close()


_ids = itertools.count()


def task(owner: str = "o1", created: float | None = None, **kw: object) -> Task:
    values: dict[str, object] = {
        "id": f"tsk_{time.monotonic_ns()}_{next(_ids)}",
        "owner": owner,
        "processor": "core",
        "request": {"input": "x", "processor": "core"},
        "status": TaskStatus.QUEUED,
        "created_at": created if created is not None else time.time(),
    }
    values.update(kw)
    return Task(**values)  # type: ignore[arg-type]


def event(task_id: str, key: str | None, data: str = "{}") -> AppendEvent:
    return AppendEvent(task_id, "task_run.progress_msg.plan", Origin.UPSTREAM, data, time.time(), None, key)


def test_round_trip_and_dedup(store: Store) -> None:
    t = task()
    store.apply([PutKey("o1", b"cipher", "abcd", 1.0), InsertTask(t)])
    got = store.get_task(t.id)
    assert got == t
    first = store.apply([event(t.id, "a"), event(t.id, "b"), event(t.id, None), event(t.id, None)])
    assert [e.dedup_key for e in first] == ["a", "b", None, None]
    again = store.apply([event(t.id, "a"), event(t.id, "c")])
    assert [e.dedup_key for e in again] == ["c"]  # only what was really inserted is reported
    seqs = [e.seq for e in store.events(t.id)]
    assert seqs == sorted(seqs) and len(seqs) == 5
    assert store.dedup_keys(t.id) == {"a", "b", "c"}
    assert store.events(t.id, after_seq=seqs[2]) == store.events(t.id)[3:]
    store.apply([PatchTask(t.id, {"status": "running", "progress": {"p": 1}, "progress_meter": 5.0})])
    patched = store.get_task(t.id)
    assert patched is not None and patched.status == TaskStatus.RUNNING and patched.progress == {"p": 1}
    store.apply([PatchTask(t.id, {"status": "queued"}, only_if_status=(TaskStatus.COMPLETED,))])
    still = store.get_task(t.id)
    assert still is not None and still.status == TaskStatus.RUNNING  # the guard held


def test_list_tasks_newest_first_with_cursor(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0), PutKey("o2", b"c", "y", 1.0)])
    tasks = [task(created=100.0 + i) for i in range(5)]
    store.apply([InsertTask(t) for t in tasks] + [InsertTask(task(owner="o2"))])
    page = store.list_tasks("o1", limit=2)
    assert [t.created_at for t in page] == [104.0, 103.0]
    rest = store.list_tasks("o1", limit=10, before=(page[-1].created_at, page[-1].id))
    assert [t.created_at for t in rest] == [102.0, 101.0, 100.0]
    assert len(store.list_tasks("o2")) == 1
    assert store.count_tasks("o1") == {"queued": 5}


def test_leases(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    active = [task(created=float(i)) for i in range(3)]
    done = task(status=TaskStatus.COMPLETED)
    store.apply([InsertTask(t) for t in [*active, done]])
    now = time.time()
    a = store.claim("A", now, 10, 2)
    assert [t.created_at for t in a] == [2.0, 1.0]  # newest activity first
    b = store.claim("B", now, 10, 10)
    assert [t.id for t in b] == [active[0].id]  # the completed one is never claimed
    assert store.claim("B", now, 10, 10) == []
    assert store.renew("A", [t.id for t in a] + [active[0].id], now + 20) == {t.id for t in a}
    taken = store.claim("B", now + 15, 10, 10)  # A's leases (now+20) still hold; B's own expired
    assert [t.id for t in taken] == [active[0].id]
    taken = store.claim("B", now + 25, 10, 10)  # expired: B takes over
    assert {t.id for t in taken} == {t.id for t in a}
    store.release("B", [active[0].id])
    assert store.get_task(active[0].id).lease_owner is None  # type: ignore[union-attr]


def test_a_process_lease_keeps_every_task_it_holds_without_touching_their_rows(store: Store) -> None:
    """Renewal extends one process row; a task is free once its own lease and its holder's have passed."""
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    tasks = [task(created=float(i)) for i in range(3)]
    store.apply([InsertTask(t) for t in tasks])
    now = time.time()
    store.put_process(ProcessInfo("A", "worker", "h", 1, now, now, 0))
    a = store.claim("A", now, 10, 2)
    assert store.renew("A", [t.id for t in a] + [tasks[0].id], now + 100) == {t.id for t in a}
    assert {store.get_task(t.id).lease_expires for t in a} == {now + 10}  # type: ignore[union-attr]
    assert store.leases(now + 50) == {"A": 2}  # held by the process lease after their own passed
    assert [t.id for t in store.claim("B", now + 50, 10, 10)] == [tasks[0].id]  # A's two still held
    taken = store.claim("C", now + 101, 10, 10)  # A's process lease has passed too: C takes over
    assert {t.id for t in taken} == {t.id for t in a} | {tasks[0].id}  # (and B's: B has no process row)
    assert store.renew("A", [t.id for t in a], now + 200) == set()  # A learns it lost them
    store.drop_process("A")
    store.release("C", [t.id for t in a])
    store.apply([PatchTask(t.id, {"lease_owner": "A", "lease_expires": now - 1}) for t in a])
    claimed = store.claim("D", now, 10, 10)  # A has no process row now: the tasks' own expired leases free them
    assert {t.id for t in claimed} == {t.id for t in a}


def test_a_submitting_task_whose_holder_died_is_claimed_for_reconciliation(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    now = time.time()
    held = task(status=TaskStatus.SUBMITTING, lease_owner="A", lease_expires=now + 60)
    stale = task(status=TaskStatus.SUBMITTING, lease_owner="A", lease_expires=now - 1, submit_token="t.1")
    store.apply([InsertTask(held), InsertTask(stale)])
    claimed = store.claim("B", now, 10, 10)
    assert [t.id for t in claimed] == [stale.id]  # the live holder keeps its own
    assert claimed[0].status == TaskStatus.SUBMITTING and claimed[0].submit_token == "t.1"


def test_forgotten_keys_are_erased_and_their_tasks_not_claimed(store: Store) -> None:
    store.apply([PutKey("o1", b"cipher", "x", 1.0), PutKey("o2", b"cipher2", "y", 1.0)])
    mine, theirs = task(owner="o1"), task(owner="o2")
    store.apply([InsertTask(mine), InsertTask(theirs)])
    assert store.forget_key("o1") is True
    assert store.forget_key("o1") is False  # nothing left to forget
    assert store.get_key("o1") is None and store.get_key("o2") == b"cipher2"
    assert store.owners_with_keys(["o1", "o2", "o3"]) == {"o2"}
    assert [t.id for t in store.claim("A", time.time(), 10, 10)] == [theirs.id]
    store.apply([PutKey("o1", b"again", "x", 2.0)])  # signing in again brings the runs back
    assert [t.id for t in store.claim("A", time.time(), 10, 10)] == [mine.id]


def test_delete_removes_a_task_in_any_state_or_only_in_the_given_ones(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    running, pending = task(status=TaskStatus.RUNNING), task(status=TaskStatus.PENDING)
    store.apply([InsertTask(running), InsertTask(pending), event(running.id, "k")])
    assert store.delete_task(running.id, only_if_status=["completed"]) is False
    assert store.delete_task(running.id) is True
    assert store.get_task(running.id) is None and store.events(running.id) == []
    assert store.delete_task(pending.id) is True and store.delete_task(pending.id) is False


def test_owner_groups_first_claim_wins_and_cursor_advances(store: Store) -> None:
    first = store.claim_owner_group("o1", "tgrp_a", 1.0)
    second = store.claim_owner_group("o1", "tgrp_b", 2.0)  # a racing process made another: the first wins
    assert first == second == OwnerGroup("o1", "tgrp_a", None)
    store.apply([AdvanceGroupCursor("o1", "tgrp_a", "run-3"), AdvanceGroupCursor("o1", "tgrp_b", "run-9")])
    assert store.get_owner_group("o1") == OwnerGroup("o1", "tgrp_a", "run-3")  # another group's cursor is ignored
    store.drop_owner_group("o1", "tgrp_b")  # not the recorded one: nothing happens
    assert store.get_owner_group("o1") is not None
    store.drop_owner_group("o1", "tgrp_a")
    assert store.get_owner_group("o1") is None


def test_sessions_expire_and_end(store: Store) -> None:
    now = time.time()
    store.put_session("h1", "o1", now, now + 100)
    store.put_session("h2", "o1", now, now + 100)
    store.put_session("h3", "o2", now, now + 1)
    assert store.get_session("h1", now) == "o1"
    assert store.get_session("h3", now + 2) is None  # expired
    assert store.get_session("nope", now) is None
    assert store.delete_session("h1") is True and store.get_session("h1", now) is None
    assert store.delete_sessions("o1") == 1 and store.get_session("h2", now) is None


def test_spent_since_counts_started_runs_of_one_owner(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0), PutKey("o2", b"c", "x", 1.0)])
    store.apply(
        [
            InsertTask(task(created=100.0, cost_usd=0.1)),
            InsertTask(task(created=200.0, cost_usd=0.3)),
            InsertTask(task(created=200.0, cost_usd=1.0, status=TaskStatus.REJECTED)),  # never created: free
            InsertTask(task(owner="o2", created=200.0, cost_usd=2.0)),
        ]
    )
    assert store.spent_since("o1", 150.0) == 0.3
    assert store.spent_since("o1", 0.0) == 0.4


def test_events_are_numbered_per_task_in_order_and_resume_after_any_seq(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    a, b = task(), task()
    store.apply([InsertTask(a), InsertTask(b)])
    for i in range(3):
        store.apply([event(a.id, f"a{i}"), event(b.id, f"b{i}"), event(a.id, f"a{i}-x")])
    for t in (a, b):
        seqs = [e.seq for e in store.events(t.id)]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        for cut in seqs:
            assert [e.seq for e in store.events(t.id, after_seq=cut)] == [s for s in seqs if s > cut]
    assert len(store.events(a.id)) == 6 and len(store.events(b.id)) == 3
    assert [e.dedup_key for e in store.events(a.id, limit=2)] == ["a0", "a0-x"]


def test_events_of_a_deleted_task_are_not_stored(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    gone, kept = task(), task()
    store.apply([InsertTask(gone), InsertTask(kept)])
    store.delete_task(gone.id)
    try:
        inserted = store.apply([event(gone.id, "late"), event(kept.id, "k")])
    except Exception:  # SQLite's foreign key refuses the whole batch; either way nothing of `gone` is stored
        inserted = store.apply([event(kept.id, "k")])
    assert [e.task_id for e in inserted] == [kept.id]
    assert store.events(gone.id) == []


def test_list_filters_order_follow_ups_and_counts(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    parent = task(created=100.0, processor="lite")
    kids = [task(created=101.0 + i, follow_up_of=parent.id, status=TaskStatus.COMPLETED) for i in range(3)]
    store.apply([InsertTask(parent), *map(InsertTask, kids)])
    oldest = store.list_tasks("o1", oldest_first=True, limit=2)
    assert [t.created_at for t in oldest] == [100.0, 101.0]
    more = store.list_tasks("o1", oldest_first=True, before=(oldest[-1].created_at, oldest[-1].id))
    assert [t.created_at for t in more] == [102.0, 103.0]
    assert [t.id for t in store.list_tasks("o1", follow_up_of=parent.id, oldest_first=True)] == [k.id for k in kids]
    assert store.count_tasks("o1") == {"queued": 1, "completed": 3}
    assert store.count_tasks("o1", processor="lite") == {"queued": 1}
    assert store.count_tasks(statuses=["queued", "running"]) == {"queued": 1}
    assert [t.id for t in store.list_tasks("o1", statuses=["queued"])] == [parent.id]
    assert [t.id for t in store.list_tasks("o1", text="100%_x")] == []  # LIKE wildcards are literal
    assert [t.id for t in store.list_tasks("o1", text=kids[0].id)] == [kids[0].id]


def test_concurrent_claims_never_take_a_task_twice(store: Store) -> None:
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    store.apply([InsertTask(task(created=float(i))) for i in range(60)])
    now = time.time()
    taken: dict[str, list[str]] = {}
    start = threading.Barrier(4)

    def claim(holder: str) -> None:
        start.wait()
        got: list[str] = []
        for _ in range(10):
            got += [t.id for t in store.claim(holder, now, 30, 3)]
        taken[holder] = got

    threads = [threading.Thread(target=claim, args=(f"H{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in taken.values() for i in ids]
    assert len(every) == len(set(every)) == 60
    for holder, ids in taken.items():
        assert all(store.get_task(i).lease_owner == holder for i in ids)  # type: ignore[union-attr]


def test_processes_register_refresh_and_count_as_engines_while_seen(store: Store) -> None:
    from taskdeck.store.base import ProcessInfo

    store.apply([PutKey("o1", b"c", "x", 1.0)])
    store.put_process(ProcessInfo("A", "worker", "h", 1, 100.0, 100.0, 0))
    store.put_process(ProcessInfo("B", "web", "h", 2, 100.0, 100.0, 0))
    store.put_process(ProcessInfo("C", "serve", "h", 3, 100.0, 90.0, 0))
    store.put_process(ProcessInfo("A", "worker", "h", 1, 100.0, 110.0, 5, 0.02))  # a heartbeat refreshes
    found = {p.holder: (p.seen_at, p.following, p.feed_lag) for p in store.processes()}
    assert found["A"] == (110.0, 5, 0.02) and len(found) == 3
    assert store.engines_alive(95.0) == 1  # B follows nothing, C was last seen too long ago
    assert store.engines_alive(80.0) == 2
    store.drop_process("A")
    assert {p.holder for p in store.processes()} == {"B", "C"}
    t = task()
    store.apply([InsertTask(t)])
    now = time.time()
    store.claim("C", now, 30, 10)
    assert store.leases(now) == {"C": 1}
    assert store.leases(now + 60) == {}


def test_burying_a_dead_process_frees_its_leases_at_once_and_no_one_elses(store: Store) -> None:
    from taskdeck.store.base import ProcessInfo

    store.apply([PutKey("o1", b"c", "x", 1.0)])
    tasks = [task(created=float(i)) for i in range(5)]
    store.apply([InsertTask(t) for t in tasks])
    now = time.time()
    dead = {t.id for t in store.claim("dead", now, 600, 3)}
    alive = {t.id for t in store.claim("alive", now, 600, 10)}
    store.put_process(ProcessInfo("dead", "worker", "h", 1, now, now, 3))
    store.put_process(ProcessInfo("alive", "worker", "h", 2, now, now, 2))
    assert store.bury_process("dead") == 3
    assert {p.holder for p in store.processes()} == {"alive"}
    # Long before the dead one's leases (600 s) would expire, its runs can be claimed; the others' cannot.
    assert {t.id for t in store.claim("heir", now + 1, 600, 10)} == dead
    assert store.leases(now + 1) == {"heir": 3, "alive": 2}
    assert {t.id for t in store.get_tasks(list(alive)) if t.lease_owner == "alive"} == alive
    assert store.bury_process("nobody") == 0


def _batch(owner: str = "o1", rows: int = 3, **kw: object) -> tuple[Batch, list[Task]]:

    values: dict[str, object] = {
        "id": new_batch_id(),
        "owner": owner,
        "name": "companies.csv",
        "status": BatchStatus.PENDING,
        "spec": {"processor": "core", "input": {"columns": ["name"]}},
        "columns": ["name", "ünïcode"],
        "resume_key": f"key-{time.monotonic_ns()}",
        "row_count": rows,
        "created_at": time.time(),
    }
    values.update(kw)
    batch = Batch(**values)  # type: ignore[arg-type]
    # Rows stored in reverse: the store, not the insertion order, puts them in input order.
    row_tasks = [task(owner, batch_id=batch.id, row_index=i, status=TaskStatus.PENDING) for i in reversed(range(rows))]
    return batch, row_tasks


def test_a_batch_and_its_rows_round_trip_in_input_order(store: Store) -> None:
    from taskdeck.store.base import InsertBatch, PatchBatch

    store.apply([PutKey("o1", b"c", "x", 1.0)])
    batch, rows = _batch(rows=5)
    store.apply([InsertBatch(batch), *map(InsertTask, rows)])
    assert store.get_batch(batch.id) == batch
    assert store.find_batch("o1", batch.resume_key) == batch
    assert store.find_batch("o2", batch.resume_key) is None
    assert [t.row_index for t in store.batch_rows(batch.id)] == [0, 1, 2, 3, 4]
    assert [t.row_index for t in store.batch_rows(batch.id, after_index=1, limit=2)] == [2, 3]
    store.apply(
        [
            PatchTask(rows[0].id, {"status": "completed"}),
            PatchBatch(
                batch.id,
                {"status": BatchStatus.RUNNING, "added_rows": 5, "taskgroup_id": "tgrp_1", "events_cursor": "1-2-3"},
            ),
        ]
    )
    assert store.batch_counts(batch.id) == {"pending": 4, "completed": 1}
    got = store.get_batch(batch.id)
    assert got is not None
    assert (got.status, got.added_rows, got.taskgroup_id, got.events_cursor) == (
        BatchStatus.RUNNING,
        5,
        "tgrp_1",
        "1-2-3",
    )
    with pytest.raises(ValueError, match="resume_key"):
        store.apply([PatchBatch(batch.id, {"resume_key": "other"})])


def test_batch_rows_filter_by_status_and_change_time_and_keep_their_values_and_cost(store: Store) -> None:
    from taskdeck.store.base import InsertBatch

    store.apply([PutKey("o1", b"c", "x", 1.0)])
    batch, rows = _batch(rows=4)
    rows = [replace(r, row_values={"name": f"n{r.row_index}", "ünïcode": "☃"}, cost_usd=0.5) for r in rows]
    store.apply([InsertBatch(batch), *map(InsertTask, rows)])
    by_index = {r.row_index: r for r in rows}
    store.apply(
        [
            PatchTask(by_index[1].id, {"status": "failed", "run_id": "run_1", "completed_at": 200.0}),
            PatchTask(by_index[2].id, {"status": "queued", "run_id": "run_2", "submitted_at": 100.0}),
            PatchTask(by_index[3].id, {"status": "completed", "run_id": "run_3", "completed_at": 300.0}),
        ]
    )
    assert store.batch_rows(batch.id)[0].row_values == {"name": "n0", "ünïcode": "☃"}
    assert [t.row_index for t in store.batch_rows(batch.id, statuses=["failed", "completed"])] == [1, 3]
    assert [t.row_index for t in store.batch_rows(batch.id, changed_since=150.0)] == [1, 3]
    assert [t.row_index for t in store.batch_rows(batch.id, changed_since=50.0, statuses=["queued"])] == [2]
    assert [t.row_index for t in store.batch_rows(batch.id, after_index=1, changed_since=0.0)] == [2, 3]
    assert store.batch_cost(batch.id) == 1.5  # rows with a run only
    assert store.batch_cost("bat_none") == 0.0


def test_one_input_and_spec_is_one_batch_per_owner(store: Store) -> None:
    from taskdeck.store.base import InsertBatch

    store.apply([PutKey("o1", b"c", "x", 1.0), PutKey("o2", b"c", "x", 1.0)])
    first, _ = _batch(resume_key="same")
    again, _ = _batch(resume_key="same")
    other_owner, _ = _batch(owner="o2", resume_key="same")
    store.apply([InsertBatch(first), InsertBatch(other_owner)])
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
        store.apply([InsertBatch(again)])
    assert store.get_batch(again.id) is None  # nothing half-written


def test_batch_rows_stay_out_of_task_lists_counts_and_claims(store: Store) -> None:
    from taskdeck.store.base import InsertBatch

    store.apply([PutKey("o1", b"c", "x", 1.0)])
    single = task()
    batch, rows = _batch(rows=4)
    store.apply([InsertTask(single), InsertBatch(batch), *map(InsertTask, rows)])
    assert [t.id for t in store.list_tasks("o1")] == [single.id]
    assert store.count_tasks("o1") == {"queued": 1}
    assert store.count_tasks(statuses=["pending", "queued"]) == {"queued": 1}
    assert [t.id for t in store.claim("A", time.time(), 30, 100)] == [single.id]  # the batch's supervisor has rows


def test_batch_leases_claim_renew_release_and_burial(store: Store) -> None:
    from taskdeck.store.base import InsertBatch

    store.apply([PutKey("o1", b"c", "x", 1.0)])
    old, _ = _batch(created_at=1.0)
    new, _ = _batch(created_at=2.0)
    done, _ = _batch(created_at=0.5, status=BatchStatus.COMPLETED)
    store.apply([InsertBatch(b) for b in (old, new, done)])
    now = time.time()
    assert [b.id for b in store.claim_batches("A", now, 30, 1)] == [old.id]
    assert [b.id for b in store.claim_batches("B", now, 30, 10)] == [new.id]
    assert store.claim_batches("B", now, 30, 10) == []
    assert store.renew_batches("A", [old.id, new.id], now + 60) == {old.id}
    assert [b.id for b in store.claim_batches("C", now + 45, 30, 10)] == [new.id]  # B's expired
    store.release_batches("A", [old.id])
    assert [b.id for b in store.claim_batches("C", now, 30, 10)] == [old.id]
    assert store.bury_process("C") == 2
    assert {b.id for b in store.claim_batches("D", now, 30, 10)} == {old.id, new.id}
