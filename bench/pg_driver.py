"""PostgreSQL driver choice: asyncpg against psycopg 3 on Taskdeck's own workload.

Writes: the group-commit writer's shape. ``--rows`` events over ``--tasks``
tasks, committed ``--batch`` rows per transaction, into an ``events`` table
with Taskdeck's keys (primary key (task_id, seq), unique (task_id,
dedup_key)). Each variant loads the same rows into an emptied table, and the
figure is rows per second of wall time from the first BEGIN to the last
COMMIT, so parameter conversion counts and connection setup does not. The
baseline is a raw ``COPY`` per batch (psycopg ``copy()`` / ``write_row``): it
skips the ON CONFLICT check and statement parsing, so it is the ceiling the
other variants are divided by.

Reads: "events of one task after seq", one task holding ``--read-size``
events, fetched whole into Python objects; p50/p95 over ``--reads`` reads.

LISTEN/NOTIFY: one notification at a time; latency runs from just before the
notifying statement (``pg_notify`` on an autocommit connection of the same
driver) is sent, through its commit, to the listener having the payload.

Everything runs in a fresh ``bench_<random>`` schema in the database named by
``--url``, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import secrets
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # ships no type information: what it returns is Any here
import psycopg
from psycopg import sql

from bench.common import table, write_result

Row = tuple[str, int, str, str, str, float, str, str]
COLUMNS = ("task_id", "seq", "type", "origin", "data", "received_at", "upstream_ts", "dedup_key")

SCHEMA_SQL = """
CREATE TABLE events (
    task_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    type        TEXT NOT NULL,
    origin      TEXT NOT NULL,
    data        TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    upstream_ts TEXT,
    dedup_key   TEXT,
    PRIMARY KEY (task_id, seq),
    UNIQUE (task_id, dedup_key)
) WITH (autovacuum_enabled = false)
"""
# autovacuum is off for this table only: an autovacuum/analyze landing inside
# one variant's timed window (100,000 fresh rows trigger one) would charge
# that variant for work the others did not pay for.

INSERT_PG = (
    "INSERT INTO events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
INSERT_APG = (
    "INSERT INTO events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
)
UNNEST_PG = (
    "INSERT INTO events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) "
    "SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[], "
    "%s::float8[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING RETURNING seq"
)
# psycopg sends a list in text format under %s (an array literal it has to
# quote, and the JSON in `data` is all quotes); %b sends binary arrays, as
# asyncpg always does. Measured as well so the comparison is not decided by a
# default that is one character to change.
UNNEST_PG_BINARY = UNNEST_PG.replace("%s", "%b")
UNNEST_APG = (
    "INSERT INTO events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], "
    "$6::float8[], $7::text[], $8::text[]) ON CONFLICT DO NOTHING RETURNING seq"
)
COPY_PG = "COPY events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) FROM STDIN"
READ_PG = (
    "SELECT task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key "
    "FROM events WHERE task_id = %s AND seq > %s ORDER BY seq LIMIT %s"
)
READ_APG = (
    "SELECT task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key "
    "FROM events WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)

READ_TASK = "tsk_read_" + "0" * 15


def make_rows(n_rows: int, n_tasks: int, first: int = 0, task: str | None = None) -> list[Row]:
    """Events interleaved across tasks, as followers deliver them: row i is task i % n_tasks."""
    now = time.time()
    out: list[Row] = []
    for i in range(first, first + n_rows):
        task_id = task or f"tsk_{i % n_tasks:024d}"
        seq = i // n_tasks + 1 if task is None else i + 1
        stamp = f"2026-11-28T12:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1_000_000:06d}Z"
        data = json.dumps(
            {
                "type": "task_run.progress_msg.search",
                "message": f"Searching for item {i} in the quarterly filings of the selected companies",
                "timestamp": stamp,
                "source": "upstream",
            },
            separators=(",", ":"),
        )
        out.append((task_id, seq, "task_run.progress_msg.search", "upstream", data, now, stamp, f"msg:{i:040x}"))
    return out


def batches(rows: list[Row], size: int) -> list[list[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def columns(batch: list[Row]) -> list[list[Any]]:
    """Rows to one list per column, for unnest; done inside the timed window since the writer would do it."""
    return [list(c) for c in zip(*batch, strict=True)]


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, no interpolation between two."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# --- writes -----------------------------------------------------------------
# Each returns the seconds its load took; connecting happens before the clock starts.


def pg_copy(url: str, schema: str, chunks: list[list[Row]]) -> float:
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
        started = time.perf_counter()
        for chunk in chunks:
            with conn.transaction(), conn.cursor() as cur, cur.copy(COPY_PG) as copy:
                for row in chunk:
                    copy.write_row(row)
        return time.perf_counter() - started


def pg_executemany(url: str, schema: str, chunks: list[list[Row]]) -> float:
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
        started = time.perf_counter()
        for chunk in chunks:
            # psycopg >= 3.1 pipelines executemany: one network flush per batch, not one round trip per row.
            with conn.transaction(), conn.cursor() as cur:
                cur.executemany(INSERT_PG, chunk)
        return time.perf_counter() - started


def _pg_unnest(query: str) -> Callable[[str, str, list[list[Row]]], float]:
    def load(url: str, schema: str, chunks: list[list[Row]]) -> float:
        with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
            started = time.perf_counter()
            for chunk in chunks:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute(query, columns(chunk))
                    # The writer needs to know which rows landed (the others were duplicates).
                    assert len(cur.fetchall()) == len(chunk)
            return time.perf_counter() - started

    return load


pg_unnest = _pg_unnest(UNNEST_PG)
pg_unnest_binary = _pg_unnest(UNNEST_PG_BINARY)


def _pg_async_unnest(query: str) -> Callable[[str, str, list[list[Row]]], float]:
    async def load(url: str, schema: str, chunks: list[list[Row]]) -> float:
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, options=f"-c search_path={schema}"
        ) as conn:
            started = time.perf_counter()
            for chunk in chunks:
                async with conn.transaction(), conn.cursor() as cur:
                    await cur.execute(query, columns(chunk))
                    assert len(await cur.fetchall()) == len(chunk)
            return time.perf_counter() - started

    return lambda url, schema, chunks: asyncio.run(load(url, schema, chunks))


pg_async_unnest = _pg_async_unnest(UNNEST_PG)
pg_async_unnest_binary = _pg_async_unnest(UNNEST_PG_BINARY)


def _apg(body: Callable[[Any, str, list[Row]], Awaitable[None]]) -> Callable[[str, str, list[list[Row]]], float]:
    async def load(url: str, schema: str, chunks: list[list[Row]]) -> float:
        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            started = time.perf_counter()
            for chunk in chunks:
                async with conn.transaction():
                    await body(conn, schema, chunk)
            return time.perf_counter() - started
        finally:
            await conn.close()

    return lambda url, schema, chunks: asyncio.run(load(url, schema, chunks))


async def _apg_executemany(conn: Any, schema: str, chunk: list[Row]) -> None:
    await conn.executemany(INSERT_APG, chunk)


async def _apg_unnest(conn: Any, schema: str, chunk: list[Row]) -> None:
    assert len(await conn.fetch(UNNEST_APG, *columns(chunk))) == len(chunk)


async def _apg_copy(conn: Any, schema: str, chunk: list[Row]) -> None:
    await conn.copy_records_to_table("events", records=chunk, columns=COLUMNS, schema_name=schema)


apg_executemany = _apg(_apg_executemany)
apg_unnest = _apg(_apg_unnest)
apg_copy = _apg(_apg_copy)

WRITES: dict[str, Callable[[str, str, list[list[Row]]], float]] = {
    "raw COPY (psycopg copy/write_row)": pg_copy,
    "psycopg sync executemany": pg_executemany,
    "psycopg sync unnest RETURNING": pg_unnest,
    "psycopg sync unnest RETURNING, %b": pg_unnest_binary,
    "psycopg async unnest RETURNING": pg_async_unnest,
    "psycopg async unnest RETURNING, %b": pg_async_unnest_binary,
    "asyncpg executemany": apg_executemany,
    "asyncpg unnest fetch RETURNING": apg_unnest,
    "asyncpg copy_records_to_table": apg_copy,
}
BASELINE = "raw COPY (psycopg copy/write_row)"


def measure_writes(url: str, schema: str, rows: list[Row], batch: int, repeats: int) -> dict[str, list[float]]:
    chunks = batches(rows, batch)
    rates: dict[str, list[float]] = {name: [] for name in WRITES}
    names = list(WRITES)
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as admin:
        for rep in range(repeats):
            # Rotate the order each repetition so no variant always follows the same neighbour.
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                admin.execute("TRUNCATE events")
                # Flush the previous variant's dirty pages now rather than inside this variant's window.
                # Needs superuser or pg_checkpoint; without it the best-of-N has to absorb the noise.
                with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                    admin.execute("CHECKPOINT")
                seconds = WRITES[name](url, schema, chunks)
                stored = admin.execute("SELECT count(*) FROM events").fetchone()
                assert stored is not None and stored[0] == len(rows), f"{name}: stored {stored}, not {len(rows)}"
                rates[name].append(len(rows) / seconds)
    return rates


# --- reads ------------------------------------------------------------------


def _read_pg(binary: bool) -> Callable[[str, str, int, int], list[float]]:
    def reads(url: str, schema: str, size: int, count: int) -> list[float]:
        with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
            out = []
            # The first 5 are a warm-up; psycopg prepares a statement on its 5th execution, asyncpg on its 1st.
            for i in range(count + 5):
                started = time.perf_counter()
                with conn.cursor(binary=binary) as cur:
                    got = cur.execute(READ_PG, (READ_TASK, 0, size)).fetchall()
                elapsed = time.perf_counter() - started
                assert len(got) == size
                if i >= 5:
                    out.append(elapsed)
            return out

    return reads


async def _read_pg_async(url: str, schema: str, size: int, count: int) -> list[float]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
        out = []
        for i in range(count + 5):
            started = time.perf_counter()
            async with conn.cursor() as cur:
                await cur.execute(READ_PG, (READ_TASK, 0, size))
                got = await cur.fetchall()
            elapsed = time.perf_counter() - started
            assert len(got) == size
            if i >= 5:
                out.append(elapsed)
        return out


async def _read_apg(url: str, schema: str, size: int, count: int) -> list[float]:
    conn = await asyncpg.connect(url, server_settings={"search_path": schema})
    try:
        out = []
        for i in range(count + 5):
            started = time.perf_counter()
            got = await conn.fetch(READ_APG, READ_TASK, 0, size)
            elapsed = time.perf_counter() - started
            assert len(got) == size
            if i >= 5:
                out.append(elapsed)
        return out
    finally:
        await conn.close()


READS: dict[str, Callable[[str, str, int, int], list[float]]] = {
    "psycopg sync": _read_pg(binary=False),
    "psycopg sync, binary cursor": _read_pg(binary=True),
    "psycopg async": lambda u, s, n, c: asyncio.run(_read_pg_async(u, s, n, c)),
    "asyncpg": lambda u, s, n, c: asyncio.run(_read_apg(u, s, n, c)),
}


# --- LISTEN/NOTIFY ----------------------------------------------------------
# Each returns one latency per notification (warm-up ones dropped), in seconds.

WARMUP = 20


def notify_pg_sync(url: str, channel: str, count: int) -> list[float]:
    total = count + WARMUP
    sent = [0.0] * total
    received = [0.0] * total
    arrived: queue.Queue[int] = queue.Queue()
    ready = threading.Event()

    def listen() -> None:
        # As Taskdeck would: a blocking generator on its own connection in its own thread.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            ready.set()
            for note in conn.notifies(timeout=60, stop_after=total):
                received[int(note.payload)] = time.perf_counter()
                arrived.put(int(note.payload))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert ready.wait(10)
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(total):
            sent[i] = time.perf_counter()
            conn.execute("SELECT pg_notify(%s, %s)", (channel, str(i)))
            assert arrived.get(timeout=10) == i
    listener.join(10)
    return [received[i] - sent[i] for i in range(WARMUP, total)]


async def _notify_pg_async(url: str, channel: str, count: int) -> list[float]:
    total = count + WARMUP
    sent = [0.0] * total
    received = [0.0] * total
    arrived: asyncio.Queue[int] = asyncio.Queue()
    async with (
        await psycopg.AsyncConnection.connect(url, autocommit=True) as lconn,
        await psycopg.AsyncConnection.connect(url, autocommit=True) as sconn,
    ):
        await lconn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

        async def listen() -> None:
            async for note in lconn.notifies(timeout=60, stop_after=total):
                received[int(note.payload)] = time.perf_counter()
                arrived.put_nowait(int(note.payload))

        listener = asyncio.create_task(listen())
        for i in range(total):
            sent[i] = time.perf_counter()
            await sconn.execute("SELECT pg_notify(%s, %s)", (channel, str(i)))
            assert await asyncio.wait_for(arrived.get(), 10) == i
        await listener
    return [received[i] - sent[i] for i in range(WARMUP, total)]


async def _notify_apg(url: str, channel: str, count: int) -> list[float]:
    total = count + WARMUP
    sent = [0.0] * total
    received = [0.0] * total
    arrived: asyncio.Queue[int] = asyncio.Queue()

    def on_note(conn: Any, pid: int, chan: str, payload: str) -> None:
        received[int(payload)] = time.perf_counter()
        arrived.put_nowait(int(payload))

    lconn = await asyncpg.connect(url)
    sconn = await asyncpg.connect(url)
    try:
        await lconn.add_listener(channel, on_note)
        for i in range(total):
            sent[i] = time.perf_counter()
            await sconn.execute("SELECT pg_notify($1, $2)", channel, str(i))
            assert await asyncio.wait_for(arrived.get(), 10) == i
    finally:
        await lconn.close()
        await sconn.close()
    return [received[i] - sent[i] for i in range(WARMUP, total)]


NOTIFIES: dict[str, Callable[[str, str, int], list[float]]] = {
    "psycopg sync notifies() in a thread": notify_pg_sync,
    "psycopg async notifies()": lambda u, c, n: asyncio.run(_notify_pg_async(u, c, n)),
    "asyncpg add_listener": lambda u, c, n: asyncio.run(_notify_apg(u, c, n)),
}


# --- the run ----------------------------------------------------------------


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench pg-driver", description=__doc__)
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--batch", type=int, default=500, help="rows per transaction, as the group-commit writer")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--read-size", type=int, default=5_000, help="events fetched per read")
    parser.add_argument("--reads", type=int, default=50)
    parser.add_argument("--notifies", type=int, default=1_000)
    args = parser.parse_args(argv)

    schema = f"bench_{secrets.token_hex(6)}"
    rows = make_rows(args.rows, args.tasks)
    with psycopg.connect(args.url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            admin.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
            admin.execute(SCHEMA_SQL)
            server = admin.execute("SHOW server_version").fetchone()
            writes = measure_writes(args.url, schema, rows, args.batch, args.repeats)
            # The read task goes next to the last variant's rows, so its index is not the whole table.
            with admin.cursor() as cur, cur.copy(COPY_PG) as copy:
                for row in make_rows(args.read_size, 1, task=READ_TASK):
                    copy.write_row(row)
            admin.execute("ANALYZE events")
            reads = {name: fn(args.url, schema, args.read_size, args.reads) for name, fn in READS.items()}
            notifies = {name: fn(args.url, schema, args.notifies) for name, fn in NOTIFIES.items()}
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    base = max(writes[BASELINE])
    result: dict[str, Any] = {
        "postgres": server[0] if server else None,
        "psycopg": psycopg.__version__,
        "libpq": psycopg.pq.version(),
        "asyncpg": asyncpg.__version__,
        "rows": args.rows,
        "tasks": args.tasks,
        "batch": args.batch,
        "repeats": args.repeats,
        "writes": {
            name: {
                "rows_per_second": [round(r) for r in rates],
                "best": round(max(rates)),
                "median": round(statistics.median(rates)),
                "ratio_to_copy": round(max(rates) / base, 3),
            }
            for name, rates in writes.items()
        },
        "reads": {
            name: {
                "events": args.read_size,
                "reads": args.reads,
                "p50_ms": round(pct(times, 50) * 1000, 2),
                "p95_ms": round(pct(times, 95) * 1000, 2),
                "events_per_second_p50": round(args.read_size / pct(times, 50)),
            }
            for name, times in reads.items()
        },
        "notify": {
            name: {
                "notifications": args.notifies,
                "p50_ms": round(pct(lat, 50) * 1000, 3),
                "p99_ms": round(pct(lat, 99) * 1000, 3),
            }
            for name, lat in notifies.items()
        },
    }
    lines: list[tuple[str, Any]] = [
        (f"write {name}", f"{w['best']:>9,} best  {w['median']:>9,} median rows/s  {w['ratio_to_copy']:.2f}x COPY")
        for name, w in result["writes"].items()
    ]
    lines += [
        (f"read {name}", f"p50 {r['p50_ms']:6.2f} ms  p95 {r['p95_ms']:6.2f} ms  ({r['events_per_second_p50']:,} ev/s)")
        for name, r in result["reads"].items()
    ]
    lines += [
        (f"notify {name}", f"p50 {n['p50_ms']:6.3f} ms  p99 {n['p99_ms']:6.3f} ms")
        for name, n in result["notify"].items()
    ]
    title = (
        f"pg driver: {args.rows:,} rows / {args.tasks:,} tasks, {args.batch} per transaction, "
        f"best of {args.repeats}; reads of {args.read_size:,}; {args.notifies:,} notifications"
    )
    print(table(title, lines))
    print(f"wrote {write_result('pg-driver', result)}")
    return result
