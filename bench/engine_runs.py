"""The engine against the emulator, each in its own process: concurrency, request economy, restart.

``concurrency``  N runs active at once in one worker: time to attach every stream, worker RSS
                 and CPU, events stored per second, and (after the runs end) lost or duplicated
                 events, checked against what the emulator recorded sending. Run it once per
                 SDK transport (``--transport httpx`` / ``aiohttp``).
``economy``      upstream requests per completed run against the minimum: one create plus one
                 stream connection per 570 s of run time.
``restart``      SIGKILL the worker holding N active runs, start another: time until every
                 stream is attached again, 429s, duplicates, busiest minute against the budget.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import EmulatorProcess, start_emulator, table, write_result
from taskdeck.config import Settings
from taskdeck.engine.intake import enqueue_many

KEY = "bench-engine-key"


def _worker(db: Path, url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    full = {**os.environ, "TASKDECK_SECRET_KEY": "bench-secret", **env}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskdeck", "worker", "--db", str(db), "--base-url", url],
            stdout=out,
            stderr=out,
            env=full,
        )


def _stop(worker: subprocess.Popen[bytes]) -> float:
    """SIGTERM the worker and time its exit (it promises 10 s)."""
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    return time.monotonic() - started


def _wait(condition: Callable[[], bool], timeout: float, step: float = 0.25) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"condition not met in {timeout} s")
        time.sleep(step)
    return time.monotonic() - started


def _stats(url: str) -> dict[str, Any]:
    # A generous timeout: an emulator holding 15,000 streams through a reconnect wave can be busy for a
    # minute, and a failed poll would end a 40-minute benchmark.
    data: dict[str, Any] = httpx.get(f"{url}/_emulator/stats?runs=false", timeout=300).json()
    return data


def _db_count(db: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        value: int = conn.execute(sql).fetchone()[0]
        return value
    finally:
        conn.close()


def _enqueue(db: Path, n: int, processor: str, duration: float | None) -> list[str]:
    meta = {"emulator": f"duration={duration:g}"} if duration else None
    requests = [
        {"input": f"Research company number {i}", "processor": processor, **({"metadata": meta} if meta else {})}
        for i in range(n)
    ]
    return [t.id for t in enqueue_many(Settings(db_path=db, secret_key="bench-secret"), KEY, requests)]


def _check_events(db: Path, url: str) -> dict[str, int]:
    """Compare every task's stored upstream events with what the emulator sent for its run."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    runs = conn.execute("SELECT id, run_id, status FROM tasks").fetchall()
    lost = dup = extra = not_completed = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        for task_id, run_id, status in runs:
            if status != "completed":
                not_completed += 1
            stored = conn.execute(
                "SELECT type, data FROM events WHERE task_id = ? AND origin = 'upstream'", (task_id,)
            ).fetchall()
            sent = {(e["type"], e["data"]) for e in client.get(f"/_emulator/runs/{run_id}").json()["sent_events"]}
            dup += len(stored) - len(set(stored))
            lost += len(sent - set(stored))
            extra += len(set(stored) - sent)
    conn.close()
    return {"lost_events": lost, "duplicate_events": dup, "unexpected_events": extra, "not_completed": not_completed}


def concurrency(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-"))
    db, log = tmp / "taskdeck.db", tmp / "worker.log"
    os.environ["TASKDECK_EMULATOR_RECORD_SENT"] = "1"  # read by the emulator process at start
    emu = start_emulator("--time-scale", str(args.time_scale), "--rate-limit", "10000000")
    worker = None
    try:
        _enqueue(db, args.runs, "pro", args.duration)
        t0 = time.monotonic()
        worker = _worker(
            db, emu.url, log, TASKDECK_RATE_LIMIT_PER_MINUTE="10000000", TASKDECK_HTTP_TRANSPORT=args.transport
        )
        attach = _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 600)
        ps = psutil.Process(worker.pid)
        cpu0, seq0, h0 = (
            sum(ps.cpu_times()[:2]),
            _db_count(db, "SELECT COALESCE(MAX(seq),0) FROM events"),
            time.monotonic(),
        )
        time.sleep(args.hold)
        held = time.monotonic() - h0
        cpu = (sum(ps.cpu_times()[:2]) - cpu0) / held
        stored_per_s = (_db_count(db, "SELECT COALESCE(MAX(seq),0) FROM events") - seq0) / held
        rss = ps.memory_info().rss
        streams = _stats(emu.url)["open_streams"]
        emu_cpu = emu.ps.cpu_percent(interval=1.0) / 100
        _wait(lambda: _db_count(db, "SELECT COUNT(*) FROM tasks WHERE status NOT IN ('completed','failed')") == 0, 900)
        total = time.monotonic() - t0
        stop_seconds = _stop(worker)
        checks = _check_events(db, emu.url)
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        emu.stop()
        os.environ.pop("TASKDECK_EMULATOR_RECORD_SENT", None)
    return {
        "transport": args.transport,
        "runs": args.runs,
        "streams_held": streams,
        "seconds_to_attach_all": round(attach, 1),
        "worker_rss_mb": round(rss / 2**20, 1),
        "worker_cpu_cores": round(cpu, 3),
        "emulator_cpu_cores": round(emu_cpu, 3),
        "events_stored_per_second": round(stored_per_s, 1),
        "hold_seconds": round(held, 1),
        "seconds_until_all_ended": round(total, 1),
        "seconds_to_stop_on_sigterm": round(stop_seconds, 2),
        **checks,
        "bar": "10,000 runs, RSS <= 1536 MB, 0 lost",
    }


def economy(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-"))
    db, log = tmp / "taskdeck.db", tmp / "worker.log"
    emu = start_emulator("--time-scale", str(args.time_scale), "--rate-limit", "10000000")
    worker = None
    try:
        ids = _enqueue(db, args.runs, args.processor, None)
        worker = _worker(db, emu.url, log, TASKDECK_RATE_LIMIT_PER_MINUTE="10000000")
        _wait(lambda: _db_count(db, "SELECT COUNT(*) FROM tasks WHERE status NOT IN ('completed','failed')") == 0, 900)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        conn = sqlite3.connect(db)
        run_ids = [r[0] for r in conn.execute("SELECT run_id FROM tasks")]
        conn.close()
        over: list[int] = []
        actual_total = minimum_total = 0
        with httpx.Client(base_url=emu.url, timeout=60) as client:
            for run_id in run_ids:
                info = client.get(f"/_emulator/runs/{run_id}").json()
                minimum = 1 + math.ceil(info["duration_seconds"] / 570.0)
                actual = 1 + info["requests"]  # the create, plus every request naming the run
                actual_total += actual
                minimum_total += minimum
                over.append(actual - minimum)
        keys = _stats(emu.url)["keys"]
        # Requests about the owner's task group rather than one run: its creation, and any search for a run.
        routes = next(iter(keys.values()))["by_route"]
        group_requests = routes.get("create_group", 0) + routes.get("group_runs", 0)
        actual_total += group_requests
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        emu.stop()
    return {
        "processor": args.processor,
        "group_requests": group_requests,
        "runs": len(ids),
        "requests_per_run": round(actual_total / len(ids), 3),
        "minimum_per_run": round(minimum_total / len(ids), 3),
        "max_over_minimum_one_run": max(over),
        "runs_over_minimum_plus_1": sum(1 for o in over if o > 1),
        "requests_by_route": next(iter(keys.values()))["by_route"],
        "bar": "<= minimum + 1 per run",
    }


def restart(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-"))
    db, log = tmp / "taskdeck.db", tmp / "worker.log"
    emu = start_emulator("--time-scale", "1")
    env = {"TASKDECK_LEASE_TTL": str(args.lease_ttl), "TASKDECK_HEARTBEAT_INTERVAL": str(args.lease_ttl / 3)}
    worker = None
    try:
        _enqueue(db, args.runs, "ultra", 100_000)
        worker = _worker(db, emu.url, log, **env)
        _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 600)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        killed = time.monotonic()
        _wait(lambda: _stats(emu.url)["open_streams"] == 0, 60, step=0.05)
        worker = _worker(db, emu.url, log, **env)
        started = time.monotonic()
        _wait(lambda: _stats(emu.url)["open_streams"] >= args.runs, 600, step=0.05)
        attached = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        stats = httpx.get(f"{emu.url}/_emulator/stats", timeout=60).json()
        conn = sqlite3.connect(db)
        dups = conn.execute(
            "SELECT COUNT(*) - COUNT(DISTINCT task_id || type || data) FROM events WHERE origin = 'upstream'"
        ).fetchone()[0]
        conn.close()
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        emu.stop()
    (key,) = stats["keys"].values()
    return {
        "runs": args.runs,
        "lease_ttl_seconds": args.lease_ttl,
        "seconds_from_new_process_to_all_attached": round(attached - started, 2),
        "seconds_from_kill_to_all_attached": round(attached - killed, 2),
        "http_429": key["by_status"].get("429", 0),
        "duplicate_events": dups,
        "max_open_streams_per_run": stats["max_open_streams_per_run"],
        "busiest_minute_requests": key["max_requests_per_minute"],
        "budget_per_minute": 2000,
    }


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench engine-runs", description=__doc__)
    parser.add_argument("mode", choices=["concurrency", "economy", "restart", "all"], nargs="?", default="all")
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--transport", choices=["httpx", "aiohttp"], default="aiohttp")
    parser.add_argument("--time-scale", type=float, default=None)
    parser.add_argument("--duration", type=float, default=600.0, help="emulated seconds per run (concurrency)")
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--processor", default="ultra2x", help="processor for the economy run")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    modes = ["concurrency", "economy", "restart"] if args.mode == "all" else [args.mode]
    for mode in modes:
        a = argparse.Namespace(**vars(args))
        if mode == "concurrency":
            a.runs = a.runs or 10_000
            a.time_scale = a.time_scale or 0.25
            out = concurrency(a)
            name = f"engine_concurrency_{a.transport}"
        elif mode == "economy":
            a.runs = a.runs or 300
            a.time_scale = a.time_scale or 0.01
            out = economy(a)
            name = "engine_economy"
        else:
            a.runs = a.runs or 1_000
            out = restart(a)
            name = "engine_restart"
        print(table(f"engine: {mode}", list(out.items())))
        print(f"wrote {write_result(name, out)}")
        results[mode] = out
    return results


__all__ = ["EmulatorProcess", "run"]
