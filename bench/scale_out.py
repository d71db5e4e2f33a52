"""Scale-out: several workers and web processes on one database (``failover``, ``live``, ``concurrency``, ``takeover``).

``failover``: W ``taskdeck worker`` processes and two ``taskdeck serve --no-engine`` processes share
a fresh schema of the database at ``--database-url``; N long runs are submitted; every ``--every``
seconds for ``--for`` seconds one worker is SIGKILLed (and started again, so W stay). Measured: for
each kill, the time until every run has an open upstream stream again (the emulator's count); the
most upstream streams ever open for one run (must be 1); the key's busiest minute (must stay within
its budget); then, once every run has ended, events lost or duplicated against what the emulator sent.
Baseline: the lease TTL (an orphaned run may wait for its lease to expire, plus a heartbeat).

``live``: a web-only process and a worker process share the database (``--store postgres`` or ``sqlite``);
R runs are active (measured once the worker follows all of them); SSE clients of the web process record,
for each live progress message, the time from
the emulator's emission to receipt (what crosses: worker → database → feed → web → client).

``concurrency`` (R runs across W workers and a web-only process) and ``takeover`` (a worker SIGKILLed for good,
its runs taken over by the survivors) live in ``scale_concurrency.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import psycopg

from bench.common import EmulatorProcess, start_emulator, table, write_result
from bench.engine_runs import _stats, _wait
from bench.web import _free_port
from taskdeck.config import Settings
from taskdeck.engine.intake import enqueue_many
from taskdeck.store.open import is_postgres, open_store

KEY = "bench-scale-key"
SECRET = "bench-scale-secret"


def _process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "taskdeck", *args], stdout=out, stderr=out, env=env)


def _stop_all(procs: list[subprocess.Popen[bytes]], sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal every process still running (SIGTERM: then wait, killing what outlives 30 s)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _database(store: str, database_url: str, tmp: Path) -> Iterator[str]:
    """A fresh database's URL: a new schema of ``database_url`` (dropped afterwards), or a SQLite file in ``tmp``."""
    if store == "sqlite":
        yield str(tmp / "taskdeck.db")
        return
    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    try:
        yield f"{database_url}{'&' if '?' in database_url else '?'}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())


Query = Callable[..., list[tuple[Any, ...]]]


@contextmanager
def _connect(url: str) -> Iterator[Query]:
    """``query(sql, *params)`` on either store (SQL written with ``%s`` placeholders; SQLite read-only)."""
    if is_postgres(url):
        with psycopg.connect(url) as pg:
            yield lambda sql, *params: pg.execute(sql, params).fetchall()
        return
    conn = sqlite3.connect(f"file:{url}?mode=ro", uri=True, timeout=30)
    try:
        yield lambda sql, *params: conn.execute(sql.replace("%s", "?"), params).fetchall()
    finally:
        conn.close()


def _count(url: str, sql: str) -> int:
    with _connect(url) as query:
        return int(query(sql)[0][0])


def _env(
    url: str, *, lease_ttl: float, budget: int, scope: str = "all", max_followers: int = 100_000
) -> dict[str, str]:
    """The environment of every Taskdeck process of a scale-out bench (one database, one secret, one budget)."""
    return {
        **os.environ,
        "TASKDECK_DATABASE_URL": url,
        "TASKDECK_SECRET_KEY": SECRET,
        "TASKDECK_LEASE_TTL": str(lease_ttl),
        "TASKDECK_HEARTBEAT_INTERVAL": str(lease_ttl / 3),
        "TASKDECK_RATE_LIMIT_PER_MINUTE": str(budget),
        "TASKDECK_RATE_LIMIT_SCOPE": scope,
        "TASKDECK_MAX_FOLLOWERS": str(max_followers),
    }


def _enqueue(url: str, tmp: Path, key: str, runs: int, processor: str, duration: float, first: int = 0) -> list[str]:
    """Store ``runs`` pending tasks of ``key`` (runs of ``duration`` emulated seconds) for the workers to claim;
    their inputs are numbered from ``first``."""
    settings = Settings(db_path=tmp / "unused.db", database_url=url, secret_key=SECRET)
    meta = {"emulator": f"duration={duration:g}"}
    requests = [{"input": f"Company {i}", "processor": processor, "metadata": meta} for i in range(first, first + runs)]
    return [
        task.id
        for start in range(0, runs, 1000)
        for task in enqueue_many(settings, key, requests[start : start + 1000])
    ]


def _check_events(url: str, emu_url: str, dump: Path | None = None) -> dict[str, Any]:
    """Every task's stored upstream events against what the emulator sent for its run (naming up to 5 lost).

    With ``dump`` (a folder), each task that lost or duplicated an event gets ``<task id>.json`` there: its row,
    every event stored for it and everything the emulator sent, for the post-mortem (the schema is dropped)."""
    lost = dup = extra = not_completed = stats_dropped = states_dropped = 0
    examples: list[str] = []
    with _connect(url) as query, httpx.Client(base_url=emu_url, timeout=60) as client:
        for task_id, run_id, status in query("SELECT id, run_id, status FROM tasks"):
            if status != "completed":
                not_completed += 1
            stored = query("SELECT type, data FROM events WHERE task_id = %s AND origin = 'upstream'", task_id)
            sent_all = client.get(f"/_emulator/runs/{run_id}").json()["sent_events"]
            sent = {(e["type"], e["data"]) for e in sent_all}
            dup += len(stored) - len(set(stored))
            # A progress_stats snapshot or an active task_run.state that reached a worker killed before its
            # next commit is gone for good (Parallel replays only the latest snapshot and the current state,
            # contract section 8): lost means any other event, or the final snapshot.
            stats_sent = [(e["type"], e["data"]) for e in sent_all if e["type"] == "task_run.progress_stats"]
            missing = sent - set(stored)
            gone = [m for m in missing if not _snapshot(m)]
            if stats_sent and stats_sent[-1] not in set(stored):
                gone.append(stats_sent[-1])
            lost += len(gone)
            if dump is not None and (gone or len(stored) != len(set(stored))):
                row = query("SELECT * FROM tasks WHERE id = %s", task_id)
                events = query("SELECT * FROM events WHERE task_id = %s ORDER BY seq", task_id)
                record = {"task": row, "stored": events, "emulator": client.get(f"/_emulator/runs/{run_id}").json()}
                (dump / f"{task_id}.json").write_text(json.dumps(record, indent=1, default=str))
            examples += [f"{task_id} {run_id} {kind} {data[:100]}" for kind, data in gone][: 5 - len(examples)]
            stats_dropped += sum(1 for m in missing if m[0] == "task_run.progress_stats")
            states_dropped += sum(1 for m in missing if m[0] == "task_run.state" and _snapshot(m))
            extra += len(set(stored) - sent)
    return {
        "lost_events": lost,
        "duplicate_events": dup,
        "unexpected_events": extra,
        "not_completed": not_completed,
        "intermediate_stats_snapshots_not_stored": stats_dropped,
        "intermediate_active_states_not_stored": states_dropped,
        **({"lost_examples": examples} if examples else {}),
    }


def _snapshot(event: tuple[str, str]) -> bool:
    """Whether Parallel never sends this event again once sent: a stats snapshot, an active state."""
    kind, data = event
    return kind == "task_run.progress_stats" or (kind == "task_run.state" and '"is_active":true' in data)


@contextmanager
def _recording_emulator(time_scale: float, log: Path) -> Iterator[EmulatorProcess]:
    """The emulator in its own process, recording every event it sends (for ``_check_events``), no create limit;
    its warnings and errors go to ``log``."""
    os.environ["TASKDECK_EMULATOR_RECORD_SENT"] = "1"  # read by the emulator process at start
    try:
        emu = start_emulator("--time-scale", str(time_scale), "--rate-limit", "10000000", log=log)
    finally:
        os.environ.pop("TASKDECK_EMULATOR_RECORD_SENT", None)
    try:
        yield emu
    finally:
        emu.stop()


def failover(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-scale-"))
    workers: list[subprocess.Popen[bytes]] = []
    webs: list[subprocess.Popen[bytes]] = []
    reattach: list[float] = []
    with (
        _database("postgres", args.database_url, tmp) as url,
        _recording_emulator(args.time_scale, tmp / "emulator.log") as emu,
    ):
        env = _env(
            url, lease_ttl=args.lease_ttl, budget=args.budget, scope=args.budget_scope, max_followers=args.max_followers
        )
        try:
            open_store(url).close()
            _enqueue(url, tmp, KEY, args.runs, "ultra", args.duration)
            for i in range(2):
                port = str(_free_port())
                webs.append(_process(["serve", "--no-engine", "--port", port], env, tmp / f"web{i}.log"))
            for i in range(args.workers):
                workers.append(_process(["worker", "--base-url", emu.url], env, tmp / f"worker{i}.log"))
            attach = _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 900)
            rss = {f"worker{i}": _rss_mb(w) for i, w in enumerate(workers)}
            ends = time.monotonic() + args.kill_for
            victim = 0
            while time.monotonic() < ends:
                time.sleep(args.every)
                victim = (victim + 1) % len(workers)
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                killed = time.monotonic()
                workers[victim] = _process(["worker", "--base-url", emu.url], env, tmp / f"worker{victim}.log")
                # Reattached: every run still going has an open stream again.
                _wait(lambda: _stats(emu.url)["open_streams"] >= _running(url), 300, step=0.1)
                reattach.append(time.monotonic() - killed)
            _wait(lambda: _running(url) == 0, 1800, step=1.0)
            stats = httpx.get(f"{emu.url}/_emulator/stats", timeout=60).json()
            checks = _check_events(url, emu.url, dump=tmp)
        finally:
            _stop_all([*workers, *webs])
    (key,) = stats["keys"].values()
    return {
        "runs": args.runs,
        "workers": args.workers,
        "web_processes": 2,
        "lease_ttl_seconds": args.lease_ttl,
        "seconds_to_attach_all": round(attach, 1),
        "worker_rss_mb_at_attach": rss,
        "kills": len(reattach),
        "reattach_seconds_max": round(max(reattach), 2) if reattach else None,
        "reattach_seconds_each": [round(r, 2) for r in reattach],
        "bar_reattach_seconds": args.lease_ttl + 5,
        "max_open_streams_per_run": stats["max_open_streams_per_run"],
        "busiest_minute_requests": key["max_requests_per_minute"],
        "budget_per_minute": args.budget,
        **checks,
    }


def live(args: argparse.Namespace) -> dict[str, Any]:
    """Emission (the emulator's message timestamp) to an SSE client of a web-only process, while the
    runs are followed by a separate worker process: the live feed across processes."""
    import asyncio

    from bench.web import _latency_summary, _live

    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-live-"))
    procs: list[subprocess.Popen[bytes]] = []
    with _database(args.store, args.database_url, tmp) as url:
        emu = start_emulator("--time-scale", str(args.time_scale), "--rate-limit", "10000000")
        env = _env(url, lease_ttl=30.0, budget=10_000_000)
        try:
            open_store(url).close()
            port = _free_port()
            procs.append(_process(["serve", "--no-engine", "--port", str(port)], env, tmp / "web.log"))
            procs.append(_process(["worker", "--base-url", emu.url], env, tmp / "worker.log"))
            web = f"http://127.0.0.1:{port}"
            _wait(lambda: _up(web), 60, step=0.1)

            # Measured once the worker follows every run: the attach burst is not what is measured.
            def attached() -> float:
                return _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 600, 0.5)

            latencies = asyncio.run(_live(web, args.runs, args.followers, args.hold, ready=attached))
        finally:
            _stop_all(procs, signal.SIGTERM)
            emu.stop()
    return {
        "store": args.store,
        "topology": "1 web-only process + 1 worker process",
        "active_runs": args.runs,
        "sse_clients": args.followers,
        **_latency_summary(latencies),
        "bar": "p99 < 50 ms",
    }


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


FINAL = "'completed', 'failed', 'rejected', 'submit_unknown'"  # statuses no process follows
RUNNING = f"SELECT COUNT(*) FROM tasks WHERE status NOT IN ({FINAL})"


def _running(url: str) -> int:
    """Tasks not yet in a final state (either store)."""
    return _count(url, RUNNING)


def _rss_mb(proc: subprocess.Popen[bytes] | psutil.Process) -> float:
    return round(psutil.Process(proc.pid).memory_info().rss / 2**20, 1)


# Per-mode defaults of the flags whose sensible value differs between modes (None on the command line).
DEFAULTS: dict[str, dict[str, Any]] = {
    # 600 emulated seconds at 0.5: runs of 5 minutes, streams of 285 s (Parallel closes them at 570 s),
    # so 3,000 runs want ~630 reconnects a minute, well inside the key's 2,000.
    "failover": {"runs": 3000, "hold": 0.0, "duration": 600.0, "time_scale": 0.5, "budget": 2000},
    "live": {"runs": 3000, "hold": 30.0, "duration": 600.0, "time_scale": 0.5, "budget": 10_000_000},
    # Holding runs, not creating them, is measured: a budget that never binds. Real time (streams of 570 s, as
    # Parallel's): each reopened stream replays its run's history, and at 0.5 those replays and the events of
    # 15,000 runs were more than one emulator process got of 2 shared cores. Their runs last long enough to
    # attach, hold and take over unless --duration is given (scale_concurrency._duration).
    "concurrency": {"runs": 15_000, "hold": 60.0, "duration": 0.0, "time_scale": 1.0, "budget": 100_000},
    "takeover": {"runs": 0, "hold": 0.0, "duration": 0.0, "time_scale": 1.0, "budget": 100_000},
}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench scale-out", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=list(DEFAULTS), nargs="?", default="failover")
    parser.add_argument(
        "--store", choices=["postgres", "sqlite"], default="postgres", help="live, concurrency: the database"
    )
    parser.add_argument("--followers", type=int, default=50, help="live, concurrency: SSE clients")
    parser.add_argument("--hold", type=float, default=None, help="live, concurrency: seconds of measurement (30, 60)")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--runs",
        type=int,
        default=None,
        help="runs in all (default: 3,000; concurrency 15,000; takeover: --runs-per-worker)",
    )
    parser.add_argument("--runs-per-worker", type=int, default=1000, help="takeover: runs each worker holds")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--wave", type=int, default=1000, help="concurrency, takeover: tasks enqueued at a time")
    parser.add_argument("--max-followers", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=20.0, help="failover: seconds between SIGKILLs")
    parser.add_argument("--for", dest="kill_for", type=float, default=120.0, help="failover: seconds of SIGKILLs")
    parser.add_argument("--restart", action="store_true", help="takeover: start a replacement worker at the kill")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="emulated seconds per run (default: 600; concurrency, takeover: enough to attach, hold, take over)",
    )
    parser.add_argument("--time-scale", type=float, default=None, help="(default: 0.5; concurrency, takeover 1)")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument(
        "--budget",
        type=int,
        default=None,
        help="Taskdeck's requests per minute for the key (default: failover 2,000; concurrency, takeover 100,000)",
    )
    parser.add_argument(
        "--budget-scope", choices=["all", "creates"], default="all", help="TASKDECK_RATE_LIMIT_SCOPE: what it counts"
    )
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.mode].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.mode in ("failover", "live"):
        result = failover(args) if args.mode == "failover" else live(args)
    else:
        from bench import scale_concurrency  # it imports this module's helpers

        result = scale_concurrency.concurrency(args) if args.mode == "concurrency" else scale_concurrency.takeover(args)
    rows = [(k, v) for k, v in result.items() if k != "reattach_seconds_each"]
    print(table(f"scale-out: {args.mode}", rows))
    name = "scale_out_" + args.mode + ("_" + args.store if args.mode in ("live", "concurrency") else "")
    print(f"wrote {write_result(name, result)}")
    return result
