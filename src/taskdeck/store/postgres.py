"""The PostgreSQL store: many processes on many machines share one database.

The same :class:`~taskdeck.store.base.Store` as SQLite, with what PostgreSQL does better:

* leases are claimed with ``FOR UPDATE SKIP LOCKED`` in batches, so concurrent workers never
  wait on each other and never claim the same task;
* events are numbered per task (``seq`` 1, 2, 3 … of that task) under a lock on the task's row,
  so the numbers are in commit order for each task whatever the number of writers, which is what
  SSE resume (``Last-Event-ID``) needs; ``ON CONFLICT DO NOTHING … RETURNING`` reports exactly
  the events inserted;
* migrations (``migrations_pg/``) run under an advisory lock, so processes starting together do
  not race.

psycopg 3 with a connection pool (chosen by measurement, see ``bench/pg_driver.py``): the store
interface is synchronous and runs in worker threads, as SQLite's does. The statements are named
blocks in ``sql/postgres.sql`` (looked up by name in ``Q``; see ``queries.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from taskdeck.models import Batch, Event, Task, TaskStatus
from taskdeck.store.base import (
    AdvanceGroupCursor,
    Announce,
    AppendEvent,
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

__all__ = ["FEED_CHANNEL", "PostgresStore"]


def _patch_batch(conn: psycopg.Connection[dict[str, Any]], patch: PatchBatch) -> None:
    cols, values = batch_changes(patch.changes)
    if cols:
        conn.execute(
            Q["patch_batch"].format(sets=", ".join(f"{c} = %s" for c in cols)).encode(), (*values, patch.batch_id)
        )


Q = load("postgres.sql")

_REAL = {
    "created_at",
    "progress_meter",
    "cost_usd",
    "submitted_at",
    "first_event_at",
    "last_event_at",
    "completed_at",
    "lease_expires",
    "submit_started_at",
}
_INTEGER = {"row_index"}
COLUMN_TYPES = {c: "double precision" if c in _REAL else "integer" if c in _INTEGER else "text" for c in TASK_COLUMNS}
MIGRATION_LOCK = 0x7A5D_0001  # pg_advisory_xact_lock key: one migrating process at a time
FEED_CHANNEL = "taskdeck_feed"  # LISTEN/NOTIFY channel of the cross-process live feed
NOTIFY_BUDGET = 7000  # bytes of notes per payload (PostgreSQL's limit is 8,000)
# A constant template, filled once.
_INSERT_BATCH = Q["insert_batch"].format(columns=", ".join(BATCH_COLUMNS), marks=",".join(["%s"] * len(BATCH_COLUMNS)))
_INSERT_TASK = Q["insert_task"].format(columns=", ".join(TASK_COLUMNS), marks=",".join(["%s"] * len(TASK_COLUMNS)))


def _columns(cols: Sequence[str]) -> str:
    """``, column`` for each column: the tail of an ``AS v(id, …)`` list."""
    return "".join(f", {c}" for c in cols)


def _arrays(cols: Sequence[str]) -> str:
    """``, %b::type[]`` for each column: one array parameter per column, for ``unnest``."""
    return "".join(f", %b::{COLUMN_TYPES[c]}[]" for c in cols)


def _check_columns(changes: dict[str, Any]) -> None:
    # Column names go into SQL text: only the task's own columns, never a caller's string.
    for key in changes:
        if key not in COLUMN_TYPES or key in ("id", "event_seq"):
            raise ValueError(f"unknown task column {key!r}")


class PostgresStore:
    """The :class:`~taskdeck.store.base.Store` on a PostgreSQL database (``postgresql://…``)."""

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        self.url = url
        # Autocommit connections; every write opens an explicit transaction (``_tx``), reads are
        # single statements. `open=True` fails here, at start, when the database is unreachable.
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "row_factory": dict_row},
            connection_class=psycopg.Connection[dict[str, Any]],
            open=True,
            name="taskdeck",
        )
        self._pool.wait(timeout=30)
        self.migrate()

    # -- connections -------------------------------------------------------------
    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with self._pool.connection() as conn:
            yield conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn

    def _all(self, sql: str | bytes, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql: str | bytes, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchone()

    def close(self) -> None:
        self._pool.close()

    # -- schema ------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply every migration not applied yet, under an advisory lock; return the versions applied now."""
        applied_now = []
        with self._tx() as conn:
            conn.execute(Q["migration_lock"], (MIGRATION_LOCK,))
            conn.execute(Q["create_schema_migrations"])
            done = {r["version"] for r in conn.execute(Q["applied_migrations"])}
            for version, sql in migration_files("migrations_pg"):
                if version in done:
                    continue
                conn.execute(sql.encode())  # a whole file: psycopg sends it as one simple query
                conn.execute(Q["record_migration"], (version, time.time()))
                applied_now.append(version)
        return applied_now

    # -- writes ------------------------------------------------------------------
    def apply(self, writes: Sequence[Write]) -> list[Event]:
        inserted: list[Event] = []
        with self._tx() as conn:
            # Every task row this transaction will touch is locked first, in id order, as renew and
            # release lock theirs: two transactions never wait on each other in a cycle (a deadlock
            # between the writer and a heartbeat once cost leases, and then doubled streams).
            touched = sorted({w.task_id for w in writes if isinstance(w, AppendEvent | PatchTask)})
            if touched:
                conn.execute(Q["lock_tasks"], (touched,))
            for item in gather(writes):
                if isinstance(item, Gathered):
                    if item.events:
                        # The numbering UPDATE also applies (and takes out of ``patches``) those tasks' patches.
                        inserted.extend(self._append(conn, item.events, item.patches))
                    self._patch_many(conn, item.patches)
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

    def _append(
        self, conn: psycopg.Connection[dict[str, Any]], rows: list[AppendEvent], patches: dict[str, dict[str, Any]]
    ) -> list[Event]:
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.task_id] = counts.get(row.task_id, 0) + 1
        # Reserve each task's numbers: the UPDATE locks the task rows (so numbering per task is
        # serialised, in commit order) and returns the new last number; it also applies the tasks'
        # pending patches (a follower sets last_event_at with every event), one statement per shape
        # of patch instead of a second pass over the same rows. A task deleted meanwhile has no row:
        # its events are dropped, like any event of a gone task.
        taken = {task_id: patches.pop(task_id, {}) for task_id in sorted(counts)}
        shapes: dict[tuple[str, ...], list[str]] = {}
        for task_id, changes in taken.items():
            _check_columns(changes)
            shapes.setdefault(tuple(changes), []).append(task_id)
        last: dict[str, int] = {}
        for cols, ids in shapes.items():
            columns: list[list[Any]] = [ids, [counts[i] for i in ids]]
            for col in cols:
                columns.append([to_json(taken[i][col]) if col in JSON_COLUMNS else taken[i][col] for i in ids])
            sets = "".join(f", {c} = v.{c}" for c in cols)
            sql = Q["number_events"].format(sets=sets, arrays=_arrays(cols), columns=_columns(cols))
            for got in conn.execute(sql.encode(), columns).fetchall():
                last[got["id"]] = got["event_seq"] - counts[got["id"]]
        numbered: list[tuple[int, AppendEvent]] = []
        for row in rows:
            if row.task_id not in last:
                continue
            last[row.task_id] += 1
            numbered.append((last[row.task_id], row))
        if not numbered:
            return []
        # The common case has no duplicate (the follower skips keys it has seen): COPY, the fastest way
        # in, inside a savepoint. A duplicate (a replay after a takeover) fails the COPY, and the batch
        # goes in again with INSERT … ON CONFLICT DO NOTHING, which skips it and reports the rest.
        try:
            with conn.transaction(), conn.cursor() as cur, cur.copy(Q["copy_events"]) as copy:
                for seq, ev in numbered:
                    copy.write_row(
                        (
                            ev.task_id,
                            seq,
                            ev.type,
                            ev.origin.value,
                            ev.data,
                            ev.received_at,
                            ev.upstream_ts,
                            ev.dedup_key,
                        )
                    )
            kept = None
        except psycopg.errors.UniqueViolation:
            stored = conn.execute(
                Q["insert_events"],
                (
                    [r.task_id for _, r in numbered],
                    [s for s, _ in numbered],
                    [r.type for _, r in numbered],
                    [r.origin.value for _, r in numbered],
                    [r.data for _, r in numbered],
                    [r.received_at for _, r in numbered],
                    [r.upstream_ts for _, r in numbered],
                    [r.dedup_key for _, r in numbered],
                ),
            ).fetchall()
            kept = {(row["task_id"], row["seq"]) for row in stored}
        return [
            Event(s, r.task_id, r.type, r.origin, r.data, r.received_at, r.upstream_ts, r.dedup_key)
            for s, r in numbered
            if kept is None or (r.task_id, s) in kept
        ]

    def _announce(self, conn: psycopg.Connection[dict[str, Any]], announce: Announce, inserted: list[Event]) -> None:
        # NOTIFY is delivered at commit (and dropped on rollback): durable before visible. Notes are
        # packed into payloads under PostgreSQL's 8,000-byte limit, each encoded once.
        head = f'{{"h":{json.dumps(announce.holder)},"t":{time.time()!r},"n":['
        payloads: list[str] = []
        items: list[str] = []
        size = len(head)
        for n in filled_notes(announce, inserted):
            item = json.dumps([n.task_id, n.owner, n.first_seq, n.last_seq, n.changes], separators=(",", ":"))
            if items and size + len(item) + 3 > NOTIFY_BUDGET:
                payloads.append(head + ",".join(items) + "]}")
                items, size = [], len(head)
            items.append(item)
            size += len(item) + 1
        if items:
            payloads.append(head + ",".join(items) + "]}")
        if payloads:
            with conn.cursor() as cur:
                cur.executemany(Q["notify"], [(FEED_CHANNEL, p) for p in payloads])

    def _patch_many(self, conn: psycopg.Connection[dict[str, Any]], patches: dict[str, dict[str, Any]]) -> None:
        """Unguarded patches, grouped by the columns they set: one UPDATE … FROM unnest per shape
        (a follower patches its task on every event: a statement each would cost most of a batch)."""
        shapes: dict[tuple[str, ...], list[list[Any]]] = {}
        for task_id, changes in patches.items():
            if not changes:
                continue
            cols = tuple(changes)
            for key in cols:
                if key not in COLUMN_TYPES or key == "id":
                    raise ValueError(f"unknown task column {key!r}")
            shapes.setdefault(cols, []).append(
                [task_id, *(to_json(v) if k in JSON_COLUMNS else v for k, v in changes.items())]
            )
        for cols, rows in shapes.items():
            arrays = [list(column) for column in zip(*rows, strict=True)]
            sets = ", ".join(f"{c} = v.{c}" for c in cols)
            sql = Q["patch_tasks"].format(sets=sets, arrays=_arrays(cols), columns=_columns(cols))
            conn.execute(sql.encode(), arrays)

    def _patch(self, conn: psycopg.Connection[dict[str, Any]], patch: PatchTask) -> None:
        if not patch.changes:
            return
        cols = []
        values: list[Any] = []
        for key, value in patch.changes.items():
            if key not in TASK_COLUMNS or key == "id":
                raise ValueError(f"unknown task column {key!r}")
            cols.append(f"{key} = %s")
            values.append(to_json(value) if key in JSON_COLUMNS else value)
        values.append(patch.task_id)
        guard = ""
        if patch.only_if_status:
            guard = Q["and_status_in"]
            values.append([s.value for s in patch.only_if_status])
        conn.execute(Q["patch_task"].format(sets=", ".join(cols), guard=guard).encode(), values)

    def _insert_task(self, conn: psycopg.Connection[dict[str, Any]], task: Task) -> None:
        values = []
        for col in TASK_COLUMNS:
            value = getattr(task, col)
            values.append(to_json(value) if col in JSON_COLUMNS else value)
        conn.execute(_INSERT_TASK.encode(), values)

    # -- reads -------------------------------------------------------------------
    def get_task(self, task_id: str) -> Task | None:
        row = self._one(Q["get_task"], (task_id,))
        return None if row is None else task_from_row(row)

    def get_task_by_run(self, run_id: str) -> Task | None:
        row = self._one(Q["get_task_by_run"], (run_id,))
        return None if row is None else task_from_row(row)

    def delete_task(self, task_id: str, *, only_if_status: Sequence[str] | None = None) -> bool:
        guard = "" if only_if_status is None else Q["and_status_in"]
        params: list[Any] = [task_id] if only_if_status is None else [task_id, list(only_if_status)]
        with self._tx() as conn:
            # The task row first: this waits for any batch holding it (numbering its events); the
            # events statement then sees that batch's events too (READ COMMITTED: a new snapshot).
            gone = conn.execute(Q["delete_task"].format(guard=guard).encode(), params).rowcount
            if gone:
                conn.execute(Q["delete_task_events"], (task_id,))
        return gone > 0

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        if not task_ids:
            return []
        return [task_from_row(r) for r in self._all(Q["get_tasks"], (list(task_ids),))]

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
            filters.append(Q["and_status_in"])
            params.append(list(statuses))
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
        return [task_from_row(r) for r in self._all(sql.encode(), params)]

    def events(self, task_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]:
        params: list[Any] = [task_id, after_seq]
        if limit is not None:
            params.append(limit)
        sql = Q["events"].format(limit="" if limit is None else Q["limit"])
        return [event_from_row(r) for r in self._all(sql.encode(), params)]

    def dedup_keys(self, task_id: str) -> set[str]:
        rows = self._all(Q["dedup_keys"], (task_id,))
        return {r["dedup_key"] for r in rows}

    def get_key(self, owner: str) -> bytes | None:
        row = self._one(Q["get_key"], (owner,))
        # A forgotten key keeps its row (tasks reference the owner) with an empty ciphertext.
        return None if row is None or not row["ciphertext"] else bytes(row["ciphertext"])

    def forget_key(self, owner: str) -> bool:
        with self._tx() as conn:
            changed = conn.execute(Q["forget_key"], (time.time(), owner)).rowcount
        return changed > 0

    def owners_with_keys(self, owners: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(owners))
        rows = self._all(Q["owners_with_keys"], (ids,))
        return {r["owner"] for r in rows}

    def spent_since(self, owner: str, since: float) -> float:
        row = self._one(Q["spent_since"], (owner, since, TaskStatus.REJECTED.value))
        return float(row["spent"]) if row else 0.0

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
            filters.append(Q["and_status_in"])
            params.append(list(statuses))
        sql = Q["count_tasks"].format(filters=" ".join(filters))
        return {r["status"]: int(r["n"]) for r in self._all(sql.encode(), params)}

    # -- owner groups ------------------------------------------------------------
    def get_owner_group(self, owner: str) -> OwnerGroup | None:
        row = self._one(Q["get_owner_group"], (owner,))
        return None if row is None else OwnerGroup(row["owner"], row["taskgroup_id"], row["run_cursor"])

    def claim_owner_group(self, owner: str, taskgroup_id: str, now: float) -> OwnerGroup:
        with self._tx() as conn:
            conn.execute(Q["insert_owner_group"], (owner, taskgroup_id, now))
            row = conn.execute(Q["get_owner_group"], (owner,)).fetchone()
        assert row is not None
        return OwnerGroup(row["owner"], row["taskgroup_id"], row["run_cursor"])

    def drop_owner_group(self, owner: str, taskgroup_id: str) -> None:
        with self._tx() as conn:
            conn.execute(Q["drop_owner_group"], (owner, taskgroup_id))

    # -- sessions ----------------------------------------------------------------
    def put_session(self, id_hash: str, owner: str, now: float, expires_at: float) -> None:
        with self._tx() as conn:
            conn.execute(Q["prune_sessions"], (now,))
            conn.execute(Q["insert_session"], (id_hash, owner, now, expires_at))

    def get_session(self, id_hash: str, now: float) -> str | None:
        row = self._one(Q["get_session"], (id_hash, now))
        return None if row is None else str(row["owner"])

    def delete_session(self, id_hash: str) -> bool:
        with self._tx() as conn:
            return conn.execute(Q["delete_session"], (id_hash,)).rowcount > 0

    def delete_sessions(self, owner: str) -> int:
        with self._tx() as conn:
            return int(conn.execute(Q["delete_sessions"], (owner,)).rowcount)

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
        row = self._one(Q["get_batch"], (batch_id,))
        return batch_from_row(row) if row else None

    def find_batch(self, owner: str, resume_key: str) -> Batch | None:
        row = self._one(Q["find_batch"], (owner, resume_key))
        return batch_from_row(row) if row else None

    def list_batches(self, owner: str, *, limit: int = 50) -> list[Batch]:
        return [batch_from_row(r) for r in self._all(Q["list_batches"], (owner, limit))]

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
            filters.append(Q["and_status_in"])
            params.append(list(statuses))
        if changed_since is not None:
            filters.append(Q["and_changed_since"])
            params += [changed_since, changed_since]
        sql = Q["batch_rows"].format(filters=" ".join(filters))
        return [task_from_row(r) for r in self._all(sql.encode(), (*params, limit))]

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        return {r["status"]: int(r["n"]) for r in self._all(Q["batch_counts"], (batch_id,))}

    def batch_cost(self, batch_id: str) -> float:
        row = self._one(Q["batch_cost"], (batch_id,))
        return float(row["cost"]) if row else 0.0

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
            rows = conn.execute(Q["renew_batches"], (expires, holder, sorted(ids))).fetchall()
        return {r["id"] for r in rows}

    def release_batches(self, holder: str, batch_ids: Sequence[str]) -> None:
        ids = list(batch_ids)
        if ids:
            with self._tx() as conn:
                conn.execute(Q["release_batches"], (holder, sorted(ids)))

    def bury_process(self, holder: str) -> int:
        with self._tx() as conn:
            freed = int(conn.execute(Q["release_all"], (holder,)).rowcount)
            freed += int(conn.execute(Q["release_all_batches"], (holder,)).rowcount)
            conn.execute(Q["drop_process"], (holder,))
        return freed

    def processes(self) -> list[ProcessInfo]:
        rows = self._all(Q["processes"])
        return [ProcessInfo(**r) for r in rows]

    def engines_alive(self, since: float) -> int:
        row = self._one(Q["engines_alive"], (since,))
        return int(row["n"]) if row else 0

    def leases(self, now: float) -> dict[str, int]:
        rows = self._all(Q["leases"], (now, now))
        return {r["lease_owner"]: int(r["n"]) for r in rows}

    # -- rate usage --------------------------------------------------------------
    def put_usage(self, holder: str, usage: dict[str, dict[int, int]], now: float, *, final: bool = False) -> None:
        with self._tx() as conn:
            with conn.cursor() as cur:
                cur.executemany(
                    Q["put_usage"],
                    [
                        (owner, holder, to_json({str(k): v for k, v in b.items()}), now, final)
                        for owner, b in usage.items()
                    ],
                )
            conn.execute(Q["prune_usage"], (now - 300,))

    def get_usage(self, since: float, exclude_holder: str) -> list[UsageReport]:
        rows = self._all(Q["get_usage"], (since, exclude_holder))
        return [
            UsageReport(
                r["owner"],
                r["holder"],
                {int(k): int(v) for k, v in json.loads(r["buckets"]).items()},
                r["updated_at"],
                bool(r["final"]),
            )
            for r in rows
        ]

    # -- the shared rate budget ----------------------------------------------------
    def take_rate(self, owner: str, limit: int, window: float) -> float:
        """Grant one request of ``owner``'s budget now (0.0), or say how many seconds until one frees.

        Exact across processes: grants for one key are serialised by an advisory lock, and the
        window is counted from the grants themselves (clock: this machine's, as for every grant).
        """
        with self._tx() as conn:
            conn.execute(Q["rate_lock"], (owner,))
            now = time.time()
            row = conn.execute(Q["rate_window"], (owner, now - window)).fetchone()
            assert row is not None
            if row["n"] < limit:
                conn.execute(Q["grant_rate"], (owner, now))
                if int(now * 10) % 50 == 0:  # now and then, forget grants long out of every window
                    conn.execute(Q["prune_rate_grants"], (owner, now - window - 60))
                return 0.0
            return max(0.01, float(row["oldest"]) + window - now)

    # -- leases ------------------------------------------------------------------
    def claim(self, holder: str, now: float, ttl: float, limit: int) -> list[Task]:
        if limit <= 0:
            return []
        with self._tx() as conn:
            # SKIP LOCKED (see the query): workers claiming at the same moment take different tasks.
            rows = conn.execute(Q["claim"], (holder, now + ttl, FOLLOWED, now, now, limit)).fetchall()
        # RETURNING does not keep the subquery's order; newest activity first matters on restart.
        tasks = [task_from_row(r) for r in rows]
        return sorted(tasks, key=lambda t: t.last_event_at or t.created_at, reverse=True)

    def renew(self, holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        with self._tx() as conn:
            # The process's one row: renewing every held task row queued behind the writer's row locks.
            if conn.execute(Q["renew_process"], (expires, holder)).rowcount:
                rows = conn.execute(Q["held"], (holder, list(task_ids))).fetchall()
            else:  # no process row (a store used without an engine): each task's own lease
                rows = conn.execute(Q["renew"], (expires, holder, sorted(task_ids))).fetchall()
        return {r["id"] for r in rows}

    def release(self, holder: str, task_ids: Sequence[str]) -> None:
        with self._tx() as conn:
            conn.execute(Q["release"], (holder, sorted(task_ids)))
