"""The SQLite store: one file, WAL mode, numbered migrations applied at open.

Writers serialise on SQLite's write lock (``BEGIN IMMEDIATE`` with a busy
timeout), so several processes can share one file; each thread gets its own
connection. ``synchronous=NORMAL`` in WAL mode keeps every committed
transaction across a process crash (SIGKILL); only a power loss can drop the
last ones.

The statements are named blocks in ``sql/sqlite.sql`` (looked up by name in ``Q``; see ``queries.py``).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from taskdeck.models import Batch, Event, Task, TaskStatus
from taskdeck.store.base import (
    AdvanceGroupCursor,
    Announce,
    AppendEvent,
    FeedNote,
    InsertBatch,
    InsertTask,
    OwnerGroup,
    PatchBatch,
    PatchTask,
    ProcessInfo,
    PutKey,
    UsageReport,
    Write,
    filled_notes,
)
from taskdeck.store.queries import load
from taskdeck.store.rows import (
    BATCH_COLUMNS,
    FOLLOWED,
    JSON_COLUMNS,
    TASK_COLUMNS,
    Gathered,
    batch_changes,
    batch_from_row,
    batch_values,
    event_from_row,
    gather,
    migration_files,
    task_from_row,
    to_json,
)

__all__ = ["SqliteStore"]

Q = load("sqlite.sql")


def _marks(n: int) -> str:
    """One ``?`` per value of an IN list (SQLite has no array parameter)."""
    return ",".join("?" * n)


_INSERT_BATCH = Q["insert_batch"].format(columns=", ".join(BATCH_COLUMNS), marks=_marks(len(BATCH_COLUMNS)))


def _patch_batch(conn: sqlite3.Connection, patch: PatchBatch) -> None:
    cols, values = batch_changes(patch.changes)
    if cols:
        conn.execute(Q["patch_batch"].format(sets=", ".join(f"{c} = ?" for c in cols)), (*values, patch.batch_id))


# Statements whose templates are filled from constants: filled once.
_INSERT_TASK = Q["insert_task"].format(columns=", ".join(TASK_COLUMNS), marks=_marks(len(TASK_COLUMNS)))
_CLAIM = Q["claim"].format(followed=_marks(len(FOLLOWED)))


def _tighten(path: Path) -> None:
    """Make a file of ours readable by its owner only (it holds encrypted keys and people's data)."""
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
    except FileNotFoundError:
        pass


def _private_file(path: Path) -> None:
    """Create the database's folder (0700) and file (0600) if missing; tighten an existing file."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        _tighten(path)


class SqliteStore:
    """The :class:`~taskdeck.store.base.Store` on one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        _private_file(self.path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.migrate()
        # SQLite gives the WAL and shared-memory files the database file's mode; older files may predate that.
        for suffix in ("-wal", "-shm"):
            _tighten(Path(f"{self.path}{suffix}"))

    # -- connections -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(Q["pragma_wal"])
            conn.execute(Q["pragma_synchronous"])
            conn.execute(Q["pragma_foreign_keys"])
            conn.execute(Q["pragma_busy_timeout"])
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute(Q["begin_immediate"])
        try:
            yield conn
        except BaseException:
            conn.execute(Q["rollback"])
            raise
        conn.execute(Q["commit"])

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # -- schema ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply every migration not applied yet; return the versions applied now."""
        applied_now = []
        with self._tx() as conn:
            conn.execute(Q["create_schema_migrations"])
            done = {r[0] for r in conn.execute(Q["applied_migrations"])}
            for version, sql in migration_files():
                if version in done:
                    continue
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(Q["record_migration"], (version, time.time()))
                applied_now.append(version)
        return applied_now

    # -- writes ------------------------------------------------------------------
    def apply(self, writes: Sequence[Write]) -> list[Event]:
        inserted: list[Event] = []
        with self._tx() as conn:
            for item in gather(writes):
                if isinstance(item, Gathered):
                    if item.events:
                        inserted.extend(self._append(conn, item.events))
                    for task_id, changes in item.patches.items():
                        self._patch(conn, PatchTask(task_id, changes))
                elif isinstance(item, PatchTask):
                    self._patch(conn, item)
                elif isinstance(item, InsertTask):
                    self._insert_task(conn, item.task)
                elif isinstance(item, AdvanceGroupCursor):
                    conn.execute(Q["advance_group_cursor"], (item.run_cursor, item.owner, item.taskgroup_id))
                elif isinstance(item, Announce):
                    self._announce(conn, item, inserted)
                elif isinstance(item, PutKey):
                    conn.execute(Q["put_key"], (item.owner, item.ciphertext, item.last4, item.at, item.at))
                elif isinstance(item, InsertBatch):
                    conn.execute(_INSERT_BATCH, batch_values(item.batch))
                    for task in item.tasks() if item.tasks is not None else ():
                        self._insert_task(conn, task)
                elif isinstance(item, PatchBatch):
                    _patch_batch(conn, item)
        return inserted

    def _append(self, conn: sqlite3.Connection, rows: list[AppendEvent]) -> list[Event]:
        # Seqs are assigned here, inside the write lock, so the common case (no duplicate)
        # is one executemany; INSERT OR IGNORE drops a duplicate a racing process stored.
        start = conn.execute(Q["max_seq"]).fetchone()[0] + 1
        params = [
            (start + i, r.task_id, r.type, r.origin.value, r.data, r.received_at, r.upstream_ts, r.dedup_key)
            for i, r in enumerate(rows)
        ]
        before = conn.total_changes
        conn.executemany(Q["insert_events"], params)
        stored_all = conn.total_changes - before == len(rows)
        present: set[int] | None = None
        if not stored_all:
            seqs = [p[0] for p in params]
            present = {r[0] for r in conn.execute(Q["present_seqs"].format(marks=_marks(len(seqs))), seqs)}
        return [
            Event(p[0], r.task_id, r.type, r.origin, r.data, r.received_at, r.upstream_ts, r.dedup_key)
            for p, r in zip(params, rows, strict=True)
            if present is None or p[0] in present
        ]

    def _announce(self, conn: sqlite3.Connection, announce: Announce, inserted: list[Event]) -> None:
        now = time.time()
        conn.executemany(
            Q["insert_feed_note"],
            [
                (announce.holder, n.task_id, n.owner, n.first_seq, n.last_seq, to_json(n.changes) or "{}", now)
                for n in filled_notes(announce, inserted)
            ],
        )

    # -- the cross-process feed (engine/bridge.py tails it) ---------------------
    def feed_last_id(self) -> int:
        """The newest feed_log row: a process starting now reads what comes after it."""
        return int(self._conn().execute(Q["feed_last_id"]).fetchone()[0])

    def feed_after(self, after_id: int, limit: int = 1000) -> list[tuple[int, str, FeedNote]]:
        """(id, holder, note) of the feed_log rows after ``after_id``, oldest first (ids are in commit order)."""
        rows = self._conn().execute(Q["feed_after"], (after_id, limit))
        return [(r[0], r[1], FeedNote(r[2], r[3], json.loads(r[6]), r[4], r[5], r[7])) for r in rows]

    def feed_prune(self, before: float) -> int:
        """Delete feed_log rows older than ``before`` (every process has read them long since)."""
        with self._tx() as conn:
            return int(conn.execute(Q["feed_prune"], (before,)).rowcount)

    def _patch(self, conn: sqlite3.Connection, patch: PatchTask) -> None:
        if not patch.changes:
            return
        cols = []
        values: list[Any] = []
        for key, value in patch.changes.items():
            if key not in TASK_COLUMNS or key == "id":
                raise ValueError(f"unknown task column {key!r}")
            cols.append(f"{key} = ?")
            values.append(to_json(value) if key in JSON_COLUMNS else value)
        values.append(patch.task_id)
        guard = ""
        if patch.only_if_status:
            guard = Q["and_status_in"].format(marks=_marks(len(patch.only_if_status)))
            values += [s.value for s in patch.only_if_status]
        conn.execute(Q["patch_task"].format(sets=", ".join(cols), guard=guard), values)

    def _insert_task(self, conn: sqlite3.Connection, task: Task) -> None:
        values = []
        for col in TASK_COLUMNS:
            value = getattr(task, col)
            values.append(to_json(value) if col in JSON_COLUMNS else value)
        conn.execute(_INSERT_TASK, values)

    # -- reads -------------------------------------------------------------------
    def get_task(self, task_id: str) -> Task | None:
        row = self._conn().execute(Q["get_task"], (task_id,)).fetchone()
        return None if row is None else task_from_row(row)

    def get_task_by_run(self, run_id: str) -> Task | None:
        row = self._conn().execute(Q["get_task_by_run"], (run_id,)).fetchone()
        return None if row is None else task_from_row(row)

    def delete_task(self, task_id: str, *, only_if_status: Sequence[str] | None = None) -> bool:
        guard, params = "", []
        if only_if_status is not None:
            guard = Q["and_status_in"].format(marks=_marks(len(only_if_status)))
            params = list(only_if_status)
        with self._tx() as conn:
            conn.execute(Q["delete_task_events"].format(guard=guard), (task_id, task_id, *params))
            gone = conn.execute(Q["delete_task"].format(guard=guard), (task_id, *params)).rowcount
        return gone > 0

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        if not task_ids:
            return []
        rows = self._conn().execute(Q["get_tasks"].format(marks=_marks(len(task_ids))), list(task_ids))
        return [task_from_row(r) for r in rows]

    def list_tasks(
        self,
        owner: str,
        *,
        statuses: Sequence[str] | None = None,
        processor: str | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        oldest_first: bool = False,
        follow_up_of: str | None = None,
    ) -> list[Task]:
        filters: list[str] = []
        params: list[Any] = [owner]
        if follow_up_of is not None:
            filters.append(Q["and_follow_up_of"])
            params.append(follow_up_of)
        if statuses:
            filters.append(Q["and_status_in"].format(marks=_marks(len(statuses))))
            params += list(statuses)
        if processor:
            filters.append(Q["and_processor"])
            params.append(processor)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            filters.append(Q["and_text"])
            params += [f"%{escaped}%", text, text]
        # ``before`` is the cursor: the last task of the previous page, in the order asked for.
        if before is not None:
            filters.append(Q["and_after_cursor"] if oldest_first else Q["and_before_cursor"])
            params += list(before)
        order = "ASC" if oldest_first else "DESC"
        sql = Q["list_tasks"].format(filters=" ".join(filters), order=order)
        params.append(limit)
        return [task_from_row(r) for r in self._conn().execute(sql, params)]

    def events(self, task_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        params: list[Any] = [task_id, after_seq]
        if limit is not None:
            params.append(limit)
        sql = Q["events"].format(limit="" if limit is None else Q["limit"])
        return [event_from_row(r) for r in self._conn().execute(sql, params)]

    def dedup_keys(self, task_id: str) -> set[str]:
        rows = self._conn().execute(Q["dedup_keys"], (task_id,))
        return {r[0] for r in rows}

    def get_key(self, owner: str) -> bytes | None:
        row = self._conn().execute(Q["get_key"], (owner,)).fetchone()
        # A forgotten key keeps its row (tasks reference the owner) with an empty ciphertext.
        return None if row is None or not row[0] else bytes(row[0])

    def forget_key(self, owner: str) -> bool:
        with self._tx() as conn:
            changed = conn.execute(Q["forget_key"], (time.time(), owner)).rowcount
        return changed > 0

    def owners_with_keys(self, owners: Sequence[str]) -> set[str]:
        found: set[str] = set()
        ids = list(dict.fromkeys(owners))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            rows = self._conn().execute(Q["owners_with_keys"].format(marks=_marks(len(chunk))), chunk)
            found.update(r[0] for r in rows)
        return found

    def spent_since(self, owner: str, since: float) -> float:
        row = self._conn().execute(Q["spent_since"], (owner, since, TaskStatus.REJECTED.value)).fetchone()
        return float(row[0])

    # -- owner groups ------------------------------------------------------------
    def get_owner_group(self, owner: str) -> OwnerGroup | None:
        row = self._conn().execute(Q["get_owner_group"], (owner,)).fetchone()
        return None if row is None else OwnerGroup(row[0], row[1], row[2])

    def claim_owner_group(self, owner: str, taskgroup_id: str, now: float) -> OwnerGroup:
        with self._tx() as conn:
            conn.execute(Q["insert_owner_group"], (owner, taskgroup_id, now))
            row = conn.execute(Q["get_owner_group"], (owner,)).fetchone()
        return OwnerGroup(row[0], row[1], row[2])

    def drop_owner_group(self, owner: str, taskgroup_id: str) -> None:
        with self._tx() as conn:
            conn.execute(Q["drop_owner_group"], (owner, taskgroup_id))

    # -- sessions ----------------------------------------------------------------
    def put_session(self, id_hash: str, owner: str, now: float, expires_at: float) -> None:
        with self._tx() as conn:
            conn.execute(Q["prune_sessions"], (now,))
            conn.execute(Q["insert_session"], (id_hash, owner, now, expires_at))

    def get_session(self, id_hash: str, now: float) -> str | None:
        row = self._conn().execute(Q["get_session"], (id_hash, now)).fetchone()
        return None if row is None else str(row[0])

    def delete_session(self, id_hash: str) -> bool:
        with self._tx() as conn:
            return conn.execute(Q["delete_session"], (id_hash,)).rowcount > 0

    def delete_sessions(self, owner: str) -> int:
        with self._tx() as conn:
            return int(conn.execute(Q["delete_sessions"], (owner,)).rowcount)

    def count_tasks(
        self, owner: str | None = None, *, processor: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        filters: list[str] = []
        params: list[Any] = []
        if owner is not None:
            filters.append(Q["and_owner"])
            params.append(owner)
        if processor is not None:
            filters.append(Q["and_processor"])
            params.append(processor)
        if statuses is not None:
            filters.append(Q["and_status_in"].format(marks=_marks(len(statuses))))
            params += list(statuses)
        sql = Q["count_tasks"].format(filters=" ".join(filters))
        return {r[0]: r[1] for r in self._conn().execute(sql, params)}

    # -- processes ---------------------------------------------------------------
    def put_process(self, info: ProcessInfo) -> None:
        with self._tx() as conn:
            conn.execute(
                Q["put_process"],
                (
                    info.holder,
                    info.kind,
                    info.host,
                    info.pid,
                    info.started_at,
                    info.seen_at,
                    info.following,
                    info.feed_lag,
                ),
            )
            conn.execute(Q["prune_processes"], (info.seen_at - 86400,))

    def drop_process(self, holder: str) -> None:
        with self._tx() as conn:
            conn.execute(Q["drop_process"], (holder,))

    # -- batches -------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> Batch | None:
        row = self._conn().execute(Q["get_batch"], (batch_id,)).fetchone()
        return batch_from_row(row) if row else None

    def find_batch(self, owner: str, resume_key: str) -> Batch | None:
        row = self._conn().execute(Q["find_batch"], (owner, resume_key)).fetchone()
        return batch_from_row(row) if row else None

    def list_batches(self, owner: str, *, limit: int = 50) -> list[Batch]:
        return [batch_from_row(r) for r in self._conn().execute(Q["list_batches"], (owner, limit))]

    def batch_rows(
        self,
        batch_id: str,
        *,
        after_index: int = -1,
        limit: int = 1000,
        statuses: Sequence[str] | None = None,
        changed_since: float | None = None,
    ) -> list[Task]:
        filters: list[str] = []
        params: list[Any] = [batch_id, after_index]
        if statuses:
            filters.append(Q["and_status_in"].format(marks=_marks(len(statuses))))
            params += list(statuses)
        if changed_since is not None:
            filters.append(Q["and_changed_since"])
            params += [changed_since, changed_since]
        sql = Q["batch_rows"].format(filters=" ".join(filters))
        return [task_from_row(r) for r in self._conn().execute(sql, (*params, limit))]

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return {r[0]: r[1] for r in self._conn().execute(Q["batch_counts"], (batch_id,))}

    def batch_cost(self, batch_id: str) -> float:
        return float(self._conn().execute(Q["batch_cost"], (batch_id,)).fetchone()[0])

    def claim_batches(self, holder: str, now: float, ttl: float, limit: int) -> list[Batch]:
        if limit <= 0:
            return []
        with self._tx() as conn:
            rows = conn.execute(Q["claim_batches"], (holder, now + ttl, now, limit)).fetchall()
        return sorted((batch_from_row(r) for r in rows), key=lambda b: b.created_at)

    def renew_batches(self, holder: str, batch_ids: Sequence[str], expires: float) -> set[str]:
        ids = list(batch_ids)
        if not ids:
            return set()
        with self._tx() as conn:
            rows = conn.execute(Q["renew_batches"].format(marks=_marks(len(ids))), (expires, holder, *ids))
            return {r[0] for r in rows}

    def release_batches(self, holder: str, batch_ids: Sequence[str]) -> None:
        ids = list(batch_ids)
        if ids:
            with self._tx() as conn:
                conn.execute(Q["release_batches"].format(marks=_marks(len(ids))), (holder, *ids))

    def bury_process(self, holder: str) -> int:
        with self._tx() as conn:
            freed = int(conn.execute(Q["release_all"], (holder,)).rowcount)
            freed += int(conn.execute(Q["release_all_batches"], (holder,)).rowcount)
            conn.execute(Q["drop_process"], (holder,))
        return freed

    def processes(self) -> list[ProcessInfo]:
        rows = self._conn().execute(Q["processes"])
        return [ProcessInfo(*r) for r in rows]

    def engines_alive(self, since: float) -> int:
        row = self._conn().execute(Q["engines_alive"], (since,)).fetchone()
        return int(row[0])

    def leases(self, now: float) -> dict[str, int]:
        rows = self._conn().execute(Q["leases"], (now, now))
        return {r[0]: r[1] for r in rows}

    # -- rate usage --------------------------------------------------------------
    def put_usage(self, holder: str, usage: dict[str, dict[int, int]], now: float, *, final: bool = False) -> None:
        with self._tx() as conn:
            conn.executemany(
                Q["put_usage"],
                [
                    (owner, holder, to_json({str(k): v for k, v in b.items()}), now, int(final))
                    for owner, b in usage.items()
                ],
            )
            conn.execute(Q["prune_usage"], (now - 300,))

    def get_usage(self, since: float, exclude_holder: str) -> list[UsageReport]:
        rows = self._conn().execute(Q["get_usage"], (since, exclude_holder))
        return [
            UsageReport(owner, holder, {int(k): int(v) for k, v in json.loads(b).items()}, at, bool(final))
            for owner, holder, b, at, final in rows
        ]

    # -- leases ------------------------------------------------------------------
    def claim(self, holder: str, now: float, ttl: float, limit: int) -> list[Task]:
        if limit <= 0:
            return []
        with self._tx() as conn:
            rows = conn.execute(_CLAIM, (holder, now + ttl, *FOLLOWED, now, now, limit)).fetchall()
        # RETURNING does not keep the subquery's order; newest activity first matters on restart.
        tasks = [task_from_row(r) for r in rows]
        return sorted(tasks, key=lambda t: t.last_event_at or t.created_at, reverse=True)

    def renew(self, holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        held: set[str] = set()
        ids = list(task_ids)
        with self._tx() as conn:
            # The process's one row when it has one (as PostgreSQL does), else each task's own lease.
            by_process = conn.execute(Q["renew_process"], (expires, holder)).rowcount > 0
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                if by_process:
                    rows = conn.execute(Q["held"].format(marks=_marks(len(chunk))), (holder, *chunk))
                else:
                    rows = conn.execute(Q["renew"].format(marks=_marks(len(chunk))), (expires, holder, *chunk))
                held.update(r[0] for r in rows)
        return held

    def release(self, holder: str, task_ids: Sequence[str]) -> None:
        ids = list(task_ids)
        with self._tx() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                conn.execute(Q["release"].format(marks=_marks(len(chunk))), (holder, *chunk))


def _statements(sql: str) -> list[str]:
    """Split a migration into statements; SQLite's own tokenizer says where one is complete
    (so a ``;`` inside a comment or a string literal does not split)."""
    out: list[str] = []
    buffer = ""
    for piece in sql.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n\t;"):
                out.append(buffer.strip())
            buffer = ""
    return [s for s in out if not all(line.strip().startswith("--") or not line.strip() for line in s.splitlines())]
