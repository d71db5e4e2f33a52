"""The SQLite store on a real file: schema, writes, de-duplication, leases."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path

from taskdeck.models import Origin, Task, TaskStatus
from taskdeck.store import AppendEvent, InsertTask, PatchTask, PutKey, SqliteStore
from taskdeck.store.base import AdvanceGroupCursor, OwnerGroup
from taskdeck.store.sqlite import migration_files
from taskdeck.vault import KeyVault


def schema_of(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' "
            "ORDER BY name"
        ).fetchall()
    return [(n, " ".join(s.split())) for n, s in rows]


def test_migrated_schema_equals_the_declared_schema(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "migrated.db").close()
    fresh = tmp_path / "fresh.db"
    schema_sql = (Path(__file__).parents[2] / "src" / "taskdeck" / "store" / "schema.sql").read_text()
    with sqlite3.connect(fresh) as conn:
        conn.executescript(schema_sql)
    assert schema_of(tmp_path / "migrated.db") == schema_of(fresh)
    assert [v for v, _ in migration_files()] == list(range(1, len(migration_files()) + 1))


def test_migrations_run_once_and_wal_is_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    assert store.migrate() == []
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def task(owner: str = "o1", created: float | None = None, **kw: object) -> Task:
    values: dict[str, object] = {
        "id": f"tsk_{time.monotonic_ns()}",
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


def test_round_trip_and_dedup(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
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
    store.close()


def test_list_tasks_newest_first_with_cursor(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    store.apply([PutKey("o1", b"c", "x", 1.0), PutKey("o2", b"c", "y", 1.0)])
    tasks = [task(created=100.0 + i) for i in range(5)]
    store.apply([InsertTask(t) for t in tasks] + [InsertTask(task(owner="o2"))])
    page = store.list_tasks("o1", limit=2)
    assert [t.created_at for t in page] == [104.0, 103.0]
    rest = store.list_tasks("o1", limit=10, before=(page[-1].created_at, page[-1].id))
    assert [t.created_at for t in rest] == [102.0, 101.0, 100.0]
    assert len(store.list_tasks("o2")) == 1
    assert store.count_tasks("o1") == {"queued": 5}
    store.close()


def test_leases(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
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
    store.close()


def test_a_submitting_task_whose_holder_died_is_claimed_for_reconciliation(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    now = time.time()
    held = task(status=TaskStatus.SUBMITTING, lease_owner="A", lease_expires=now + 60)
    stale = task(status=TaskStatus.SUBMITTING, lease_owner="A", lease_expires=now - 1, submit_token="t.1")
    store.apply([InsertTask(held), InsertTask(stale)])
    claimed = store.claim("B", now, 10, 10)
    assert [t.id for t in claimed] == [stale.id]  # the live holder keeps its own
    assert claimed[0].status == TaskStatus.SUBMITTING and claimed[0].submit_token == "t.1"
    store.close()


def test_forgotten_keys_are_erased_and_their_tasks_not_claimed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    store.apply([PutKey("o1", b"cipher", "x", 1.0), PutKey("o2", b"cipher2", "y", 1.0)])
    mine, theirs = task(owner="o1"), task(owner="o2")
    store.apply([InsertTask(mine), InsertTask(theirs)])
    assert store.forget_key("o1") is True
    assert store.forget_key("o1") is False  # nothing left to forget
    assert store.get_key("o1") is None and store.get_key("o2") == b"cipher2"
    raw = sqlite3.connect(tmp_path / "t.db").execute("SELECT ciphertext FROM api_keys WHERE owner='o1'").fetchone()
    assert raw[0] == b""  # the ciphertext itself is gone from the file's live rows
    assert store.owners_with_keys(["o1", "o2", "o3"]) == {"o2"}
    assert [t.id for t in store.claim("A", time.time(), 10, 10)] == [theirs.id]
    store.apply([PutKey("o1", b"again", "x", 2.0)])  # signing in again brings the runs back
    assert [t.id for t in store.claim("A", time.time(), 10, 10)] == [mine.id]
    store.close()


def test_delete_removes_a_task_in_any_state_or_only_in_the_given_ones(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    store.apply([PutKey("o1", b"c", "x", 1.0)])
    running, pending = task(status=TaskStatus.RUNNING), task(status=TaskStatus.PENDING)
    store.apply([InsertTask(running), InsertTask(pending), event(running.id, "k")])
    assert store.delete_task(running.id, only_if_status=["completed"]) is False
    assert store.delete_task(running.id) is True
    assert store.get_task(running.id) is None and store.events(running.id) == []
    assert store.delete_task(pending.id) is True and store.delete_task(pending.id) is False
    store.close()


def test_owner_groups_first_claim_wins_and_cursor_advances(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    first = store.claim_owner_group("o1", "tgrp_a", 1.0)
    second = store.claim_owner_group("o1", "tgrp_b", 2.0)  # a racing process made another: the first wins
    assert first == second == OwnerGroup("o1", "tgrp_a", None)
    store.apply([AdvanceGroupCursor("o1", "tgrp_a", "run-3"), AdvanceGroupCursor("o1", "tgrp_b", "run-9")])
    assert store.get_owner_group("o1") == OwnerGroup("o1", "tgrp_a", "run-3")  # another group's cursor is ignored
    store.drop_owner_group("o1", "tgrp_b")  # not the recorded one: nothing happens
    assert store.get_owner_group("o1") is not None
    store.drop_owner_group("o1", "tgrp_a")
    assert store.get_owner_group("o1") is None
    store.close()


def test_sessions_expire_and_end(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    now = time.time()
    store.put_session("h1", "o1", now, now + 100)
    store.put_session("h2", "o1", now, now + 100)
    store.put_session("h3", "o2", now, now + 1)
    assert store.get_session("h1", now) == "o1"
    assert store.get_session("h3", now + 2) is None  # expired
    assert store.get_session("nope", now) is None
    assert store.delete_session("h1") is True and store.get_session("h1", now) is None
    assert store.delete_sessions("o1") == 1 and store.get_session("h2", now) is None
    store.close()


def test_spent_since_counts_started_runs_of_one_owner(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
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
    store.close()


def test_vault_secret_file_is_private_and_stable(tmp_path: Path) -> None:
    db = tmp_path / "data" / "t.db"
    vault = KeyVault.open(None, db)
    secret_file = db.parent / "taskdeck.secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    token = vault.encrypt("pk-live-1234")
    assert b"pk-live" not in token
    again = KeyVault.open(None, db)
    assert again.decrypt(token) == "pk-live-1234"
    assert again.owner("pk-live-1234") == vault.owner("pk-live-1234") != vault.owner("other")
    assert "pk-live" not in vault.owner("pk-live-1234")
    assert KeyVault("different").owner("pk-live-1234") != vault.owner("pk-live-1234")


def test_database_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "fresh" / "data"
    store = SqliteStore(folder / "t.db")
    store.apply([PutKey("o1", b"cipher", "x", 1.0)])  # a write: the WAL and shared-memory files exist now
    for name in ("t.db", "t.db-wal", "t.db-shm"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    store.close()
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    SqliteStore(old).close()
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o600  # an existing, too-open file is tightened
