"""Ingest: events persisted per second through the engine's writer, against the raw database.

SQLite (default): both sides write the same event rows into the same kind of file (WAL,
synchronous=NORMAL); the baseline is one ``executemany`` per 5,000 rows.
PostgreSQL (``--database-url postgresql://…``): the baseline is a raw ``COPY`` of the same rows
into the same table, each side in a fresh schema of that database.

The engine side goes through :class:`~taskdeck.engine.writer.Writer` with what a follower enqueues
per event (the event, plus the task's ``last_event_at`` patch) and the feed notes every commit
carries for other processes, from many concurrent producers, and counts an event only once its
commit is confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, cast

from bench.common import table, write_result
from taskdeck.engine.feed import Feed
from taskdeck.engine.heap import tune
from taskdeck.engine.writer import Writer
from taskdeck.models import Event, Origin, Task, TaskStatus
from taskdeck.store import AppendEvent, InsertTask, PatchTask, PutKey, SqliteStore, Store
from taskdeck.store.base import Write
from taskdeck.store.open import open_store


def _rows(n_tasks: int, n_events: int) -> list[tuple[str, str, str, str]]:
    out = []
    for i in range(n_events):
        task = f"tsk_{i % n_tasks:024d}"
        stamp = f"2026-11-28T12:00:{i % 60:02d}.{i:06d}Z"
        data = json.dumps(
            {
                "type": "task_run.progress_msg.search",
                "message": f"Searching for item {i} in filings",
                "timestamp": stamp,
            },
            separators=(",", ":"),
        )
        out.append((task, data, stamp, f"msg:{i:040x}"))
    return out


def _tasks(n_tasks: int) -> list[Task]:
    return [
        Task(
            id=f"tsk_{i:024d}",
            owner="bench-owner",
            processor="core",
            request={"input": "x", "processor": "core"},
            status=TaskStatus.RUNNING,
            created_at=time.time(),
        )
        for i in range(n_tasks)
    ]


def baseline(path: Path, rows: list[tuple[str, str, str, str]]) -> float:
    """Raw sqlite3: same table and indexes, executemany in batches of 5,000."""
    store = SqliteStore(path)  # same schema and indexes
    store.apply([PutKey("bench-owner", b"x", "x", 0.0), *map(InsertTask, _tasks(len({r[0] for r in rows})))])
    store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    started = time.perf_counter()
    now = time.time()
    for i in range(0, len(rows), 5000):
        chunk = rows[i : i + 5000]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO events (task_id, type, origin, data, received_at, upstream_ts, dedup_key) "
            "VALUES (?, 'task_run.progress_msg.search', 'upstream', ?, ?, ?, ?)",
            [(t, d, now, s, k) for t, d, s, k in chunk],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


def _landed(seen: set[str], key: str, ok: bool) -> None:
    if ok:
        seen.add(key)


def baseline_copy(url: str, rows: list[tuple[str, str, str, str]]) -> float:
    """Raw PostgreSQL ``COPY`` of the same rows (numbered per task) into the same table and indexes."""
    import psycopg

    store = open_store(url)  # same schema and indexes
    store.apply([PutKey("bench-owner", b"x", "x", 0.0), *map(InsertTask, _tasks(len({r[0] for r in rows})))])
    store.close()
    seqs: dict[str, int] = {}
    numbered = []
    now = time.time()
    for task, data, stamp, key in rows:
        seqs[task] = seqs.get(task, 0) + 1
        numbered.append((task, seqs[task], "task_run.progress_msg.search", "upstream", data, now, stamp, key))
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        for i in range(0, len(numbered), 5000):
            with conn.transaction(), conn.cursor() as cur:
                copy_sql = (
                    "COPY events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) FROM STDIN"
                )
                with cur.copy(copy_sql) as copy:
                    for row in numbered[i : i + 5000]:
                        copy.write_row(row)
        elapsed = time.perf_counter() - started
    return len(rows) / elapsed


def _count_events(store: Store) -> int:
    return sum(len(store.events(t.id)) for t in store.list_tasks("bench-owner", limit=100_000))


class _NullStore:
    """A store that stores nothing, at once: what the engine's own per-event work costs without any database."""

    def apply(self, writes: Sequence[Write]) -> list[Event]:
        return []


async def pipeline_ceiling(rows: list[tuple[str, str, str, str]], producers: int, batch: int) -> float:
    """Events per second through the writer to a store that takes no time: the most any database could give."""
    return (await _drive(cast(Store, _NullStore()), rows, producers, batch))[0]


async def through_writer(url: str, rows: list[tuple[str, str, str, str]], producers: int, batch: int) -> dict[str, Any]:
    store = open_store(url)
    tasks = _tasks(len({r[0] for r in rows}))
    store.apply([PutKey("bench-owner", b"x", "x", 0.0), *map(InsertTask, tasks)])
    rate, commits = await _drive(store, rows, producers, batch)
    stored = _count_events(store)
    store.close()
    return {"events_per_second": rate, "stored": stored, "commits": commits}


async def _drive(store: Store, rows: list[tuple[str, str, str, str]], producers: int, batch: int) -> tuple[float, int]:
    writer = Writer(store, Feed(), batch=batch, holder="bench-writer")  # announcing, as every engine's does
    writer.start()
    share = [rows[i::producers] for i in range(producers)]

    seen: set[str] = set()

    async def produce(mine: list[tuple[str, str, str, str]]) -> None:
        for task_id, data, stamp, key in mine:
            now = time.time()
            # As a follower does: the event and its task change are one unit, and its key counts once stored.
            await writer.put(
                AppendEvent(task_id, "task_run.progress_msg.search", Origin.UPSTREAM, data, now, stamp, key),
                PatchTask(task_id, {"last_event_at": now}),
                owner="bench-owner",
                on_done=partial(_landed, seen, key),
            )

    started = time.perf_counter()
    await asyncio.gather(*(produce(m) for m in share))
    await writer.drain()
    elapsed = time.perf_counter() - started
    await writer.close()
    return len(rows) / elapsed, writer.commits


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench engine-ingest", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--producers", type=int, default=1_000, help="concurrent coroutines enqueuing events")
    parser.add_argument("--batch", type=int, default=5000, help="most writes per transaction (TASKDECK_WRITE_BATCH)")
    parser.add_argument("--database-url", default="", help="postgresql://… to measure PostgreSQL instead of SQLite")
    args = parser.parse_args(argv)
    rows = _rows(args.tasks, args.events)
    # The collector settings every engine process runs with (`taskdeck serve` and `worker` apply them
    # at start; see engine/heap.py), for both sides of the comparison.
    tune()
    if args.database_url:
        with _schema(args.database_url) as raw_url, _schema(args.database_url) as engine_url:
            base = baseline_copy(raw_url, rows)
            ours = asyncio.run(through_writer(engine_url, rows, args.producers, args.batch))
        name, what = "engine_ingest_postgres", "engine: ingest on PostgreSQL vs raw COPY"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            base = baseline(Path(tmp) / "raw.db", rows)
            ours = asyncio.run(through_writer(str(Path(tmp) / "engine.db"), rows, args.producers, args.batch))
        name, what = "engine_ingest", "engine: ingest vs raw sqlite3 executemany"
    assert ours["stored"] == args.events, "events were lost"
    ceiling = asyncio.run(pipeline_ceiling(rows, args.producers, args.batch))
    result = {
        "database": "postgresql" if args.database_url else "sqlite",
        "events": args.events,
        "tasks": args.tasks,
        "producers": args.producers,
        "write_batch": args.batch,
        "raw_baseline_events_per_second": round(base),
        "engine_writer_events_per_second": round(ours["events_per_second"]),
        "ratio": round(ours["events_per_second"] / base, 3),
        "engine_commits": ours["commits"],
        # The engine's own work per event with a database that takes no time at all: no store can do better.
        "engine_without_database_events_per_second": round(ceiling),
        "ceiling_ratio": round(ceiling / base, 3),
        "bar": ">= 0.5",
    }
    print(table(what, list(result.items())))
    print(f"wrote {write_result(name, result)}")
    return result


@contextmanager
def _schema(url: str) -> Iterator[str]:
    """A fresh schema of the database at ``url`` (dropped afterwards), as a URL."""
    import secrets
    from urllib.parse import quote

    import psycopg

    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
