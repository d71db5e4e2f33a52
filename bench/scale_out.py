"""Scale-out: several workers and web processes on one database (``failover``, ``live``).

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
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
import psycopg

from bench.common import start_emulator, table, write_result
from bench.engine_runs import _stats, _wait
from bench.web import _free_port
from taskdeck.config import Settings
from taskdeck.engine.intake import enqueue_many
from taskdeck.store.open import open_store

KEY = "bench-scale-key"
SECRET = "bench-scale-secret"


def _process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "taskdeck", *args], stdout=out, stderr=out, env=env)


def _check_events(url: str, emu_url: str) -> dict[str, int]:
    lost = dup = extra = not_completed = stats_dropped = 0
    with psycopg.connect(url) as conn, httpx.Client(base_url=emu_url, timeout=60) as client:
        for task_id, run_id, status in conn.execute("SELECT id, run_id, status FROM tasks").fetchall():
            if status != "completed":
                not_completed += 1
            stored = conn.execute(
                "SELECT type, data FROM events WHERE task_id = %s AND origin = 'upstream'", (task_id,)
            ).fetchall()
            sent_all = client.get(f"/_emulator/runs/{run_id}").json()["sent_events"]
            sent = {(e["type"], e["data"]) for e in sent_all}
            dup += len(stored) - len(set(stored))
            # A progress_stats snapshot that reached a worker killed before its next commit is gone for
            # good (Parallel replays only the latest): lost means any other event, or the final snapshot.
            stats_sent = [(e["type"], e["data"]) for e in sent_all if e["type"] == "task_run.progress_stats"]
            missing = sent - set(stored)
            lost += sum(1 for m in missing if m[0] != "task_run.progress_stats")
            if stats_sent and stats_sent[-1] not in set(stored):
                lost += 1
            stats_dropped += sum(1 for m in missing if m[0] == "task_run.progress_stats")
            extra += len(set(stored) - sent)
    return {
        "lost_events": lost,
        "duplicate_events": dup,
        "unexpected_events": extra,
        "not_completed": not_completed,
        "intermediate_stats_snapshots_not_stored": stats_dropped,
    }


def failover(args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_{secrets.token_hex(5)}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    url = f"{args.database_url}{'&' if '?' in args.database_url else '?'}options={quote(f'-csearch_path={schema}')}"
    tmp = Path(f"/tmp/taskdeck-bench-scale-{schema}")
    tmp.mkdir(parents=True)
    os.environ["TASKDECK_EMULATOR_RECORD_SENT"] = "1"
    emu = start_emulator("--time-scale", str(args.time_scale), "--rate-limit", "10000000")
    env = {
        **os.environ,
        "TASKDECK_DATABASE_URL": url,
        "TASKDECK_SECRET_KEY": SECRET,
        "TASKDECK_LEASE_TTL": str(args.lease_ttl),
        "TASKDECK_HEARTBEAT_INTERVAL": str(args.lease_ttl / 3),
        "TASKDECK_RATE_LIMIT_PER_MINUTE": str(args.budget),
        "TASKDECK_MAX_FOLLOWERS": str(args.max_followers),
    }
    workers: list[subprocess.Popen[bytes]] = []
    webs: list[subprocess.Popen[bytes]] = []
    reattach: list[float] = []
    try:
        open_store(url).close()
        settings = Settings(db_path=tmp / "unused.db", database_url=url, secret_key=SECRET)
        meta = {"emulator": f"duration={args.duration:g}"}
        requests = [{"input": f"Company {i}", "processor": "ultra", "metadata": meta} for i in range(args.runs)]
        for start in range(0, args.runs, 1000):
            enqueue_many(settings, KEY, requests[start : start + 1000])
        for i in range(2):
            webs.append(_process(["serve", "--no-engine", "--port", str(_free_port())], env, tmp / f"web{i}.log"))
        for i in range(args.workers):
            workers.append(_process(["worker", "--base-url", emu.url], env, tmp / f"worker{i}.log"))
        attach = _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 900)
        rss = {f"worker{i}": round(psutil.Process(w.pid).memory_info().rss / 2**20, 1) for i, w in enumerate(workers)}
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
        checks = _check_events(url, emu.url)
    finally:
        for proc in [*workers, *webs]:
            if proc.poll() is None:
                proc.kill()
        emu.stop()
        os.environ.pop("TASKDECK_EMULATOR_RECORD_SENT", None)
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
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
    import statistics

    from bench.web import KEY as WEB_KEY
    from bench.web import _live, _pct

    tmp = Path(f"/tmp/taskdeck-bench-live-{secrets.token_hex(4)}")
    tmp.mkdir(parents=True)
    schema = None
    if args.store == "postgres":
        schema = f"bench_{secrets.token_hex(5)}"
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}".encode())
        sep = "&" if "?" in args.database_url else "?"
        url = f"{args.database_url}{sep}options={quote(f'-csearch_path={schema}')}"
    else:
        url = str(tmp / "taskdeck.db")
    emu = start_emulator("--time-scale", str(args.time_scale), "--rate-limit", "10000000")
    env = {
        **os.environ,
        "TASKDECK_DATABASE_URL": url,
        "TASKDECK_SECRET_KEY": "bench-web-secret",
        "TASKDECK_RATE_LIMIT_PER_MINUTE": "10000000",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        open_store(url).close()
        port = _free_port()
        procs.append(_process(["serve", "--no-engine", "--port", str(port)], env, tmp / "web.log"))
        procs.append(_process(["worker", "--base-url", emu.url], env, tmp / "worker.log"))
        web = f"http://127.0.0.1:{port}"
        _wait(lambda: _up(web), 60, step=0.1)
        assert WEB_KEY

        # Measured once the worker follows every run: the attach burst is not what is measured.
        def attached() -> float:
            return _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 600, 0.5)

        latencies = asyncio.run(_live(web, args.runs, args.followers, args.hold, ready=attached))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        emu.stop()
        if schema is not None:
            with psycopg.connect(args.database_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
    return {
        "store": args.store,
        "topology": "1 web-only process + 1 worker process",
        "active_runs": args.runs,
        "sse_clients": args.followers,
        "events_measured": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(_pct(latencies, 0.99), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
        "bar": "p99 < 50 ms",
    }


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/-/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _running(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM tasks WHERE status NOT IN ('completed', 'failed', 'rejected', 'submit_unknown')"
        ).fetchone()
    return int(row[0]) if row else 0


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench scale-out", description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["failover", "live"], nargs="?", default="failover")
    parser.add_argument("--store", choices=["postgres", "sqlite"], default="postgres", help="live: the database")
    parser.add_argument("--followers", type=int, default=50, help="live: SSE clients")
    parser.add_argument("--hold", type=float, default=30.0, help="live: seconds of measurement")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--max-followers", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=20.0, help="seconds between SIGKILLs")
    parser.add_argument("--for", dest="kill_for", type=float, default=120.0, help="seconds of SIGKILLs")
    # 600 emulated seconds at 0.5: runs of 5 minutes, streams of 285 s (Parallel closes them at 570 s),
    # so 3,000 runs want ~630 reconnects a minute, well inside the key's 2,000.
    parser.add_argument("--duration", type=float, default=600.0, help="emulated seconds per run")
    parser.add_argument("--time-scale", type=float, default=0.5)
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--budget", type=int, default=2000, help="the key's requests per minute")
    args = parser.parse_args(argv)
    result = failover(args) if args.mode == "failover" else live(args)
    rows = [(k, v) for k, v in result.items() if k != "reattach_seconds_each"]
    print(table(f"scale-out: {args.mode}", rows))
    name = "scale_out_" + args.mode + ("_" + args.store if args.mode == "live" else "")
    print(f"wrote {write_result(name, result)}")
    return result
