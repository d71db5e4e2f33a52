"""Web benchmarks: the task list at 100,000 tasks, a task page at 5,000 events, and live latency.

``pages``  builds a database with N tasks (and one task with M events) straight through the store,
           serves it with ``taskdeck serve`` in its own process, and times ``GET /api/tasks`` and
           ``GET /task/{id}.json`` (p50/p95/max over repeated requests). Baseline: the same list
           query run directly on the SQLite file.
``live``   R runs active at once (emulator and server in their own processes); SSE clients follow
           some of them through ``/api/tasks/{id}/events`` and record, for each progress message,
           the time from the emulator's emission (its ``timestamp``) to the client's receipt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import start_emulator, table, write_result
from taskdeck.models import Origin, Task, TaskStatus
from taskdeck.store import AppendEvent, InsertTask, PutKey, SqliteStore
from taskdeck.vault import KeyVault

KEY = "bench-web-key"
SECRET = "bench-web-secret"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(db: Path, base_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "TASKDECK_SECRET_KEY": SECRET, "TASKDECK_RATE_LIMIT_PER_MINUTE": "10000000"}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "taskdeck", "serve", "--db", str(db), "--port", str(port), "--base-url", base_url],
            stdout=out,
            stderr=out,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/-/health", timeout=5)
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def _time(client: httpx.Client, path: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        resp = client.get(path)
        out.append((time.perf_counter() - started) * 1000)
        resp.raise_for_status()
    return out


def pages(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-web-"))
    db = tmp / "taskdeck.db"
    vault = KeyVault(SECRET)
    owner = vault.owner(KEY)
    store = SqliteStore(db)
    store.apply([PutKey(owner, vault.encrypt(KEY), KEY[-4:], time.time())])
    now = time.time()
    for start in range(0, args.tasks, 10_000):
        store.apply(
            [
                InsertTask(
                    Task(
                        id=f"tsk_{i:024x}",
                        owner=owner,
                        processor="core",
                        request={"input": f"Company number {i}: find its CEO and revenue", "processor": "core"},
                        status=TaskStatus.COMPLETED,
                        created_at=now - args.tasks + i,
                        cost_usd=0.025,
                    )
                )
                for i in range(start, min(args.tasks, start + 10_000))
            ]
        )
    big = f"tsk_{args.tasks - 1:024x}"
    message = (
        '{"type":"task_run.progress_msg.search","message":"Searching for filings about company %d","timestamp":"%s"}'
    )
    store.apply(
        [
            AppendEvent(
                big,
                "task_run.progress_msg.search",
                Origin.UPSTREAM,
                message % (i, "2026-11-28T00:00:00Z"),
                now,
                None,
                f"k{i}",
            )
            for i in range(args.events)
        ]
    )
    store.close()
    conn = sqlite3.connect(db)
    raw = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        conn.execute(
            "SELECT * FROM tasks WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT 51", (owner,)
        ).fetchall()
        raw.append((time.perf_counter() - started) * 1000)
    conn.close()
    emu = start_emulator()
    proc, url = _serve(db, emu.url, tmp / "serve.log")
    try:
        with httpx.Client(base_url=url, headers={"x-api-key": KEY}, timeout=60) as client:
            _time(client, "/api/tasks", 5)  # warm up
            listing = _time(client, "/api/tasks", args.repeat)
            page = _time(client, f"/task/{big}.json", args.repeat)
            home = _time(client, "/index.json", args.repeat)  # the home page's data: a page of 50 and counts
            assert len(client.get(f"/task/{big}.json").json()["events"]) == args.events
    finally:
        _stop(proc)
        emu.stop()
    return {
        "tasks": args.tasks,
        "events_on_one_task": args.events,
        "list_p50_ms": round(_pct(listing, 0.5), 2),
        "list_p95_ms": round(_pct(listing, 0.95), 2),
        "list_raw_sqlite_p95_ms": round(_pct(raw, 0.95), 2),
        "task_json_p50_ms": round(_pct(page, 0.5), 2),
        "task_json_p95_ms": round(_pct(page, 0.95), 2),
        "task_json_max_ms": round(max(page), 2),
        "home_json_p50_ms": round(_pct(home, 0.5), 2),
        "home_json_p95_ms": round(_pct(home, 0.95), 2),
        "bars": "list p95 <= 50 ms; task json <= 200 ms",
    }


async def _follow(url: str, task_id: str, latencies: list[float], stop: asyncio.Event) -> None:
    async with (
        httpx.AsyncClient(base_url=url, headers={"x-api-key": KEY}, timeout=None) as client,
        client.stream("GET", f"/api/tasks/{task_id}/events") as resp,
    ):
        connected = time.time()
        async for line in resp.aiter_lines():
            if stop.is_set():
                return
            if not line.startswith("data: "):
                continue
            received = time.time()
            event = json.loads(line[6:])
            data = event.get("data") or {}
            # `status` and `end` frames carry no event type; only stored events have one.
            if str(event.get("type", "")).startswith("task_run.progress_msg.") and data.get("timestamp"):
                sent = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
                if sent > connected:  # a live event, not history replayed at connect
                    latencies.append((received - sent) * 1000)


async def _live(
    url: str, runs: int, followers: int, hold: float, ready: Callable[[], object] | None = None
) -> list[float]:
    """Submit ``runs``, wait for ``ready`` (in a thread) if given, then follow ``followers`` of them for ``hold`` s."""
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": KEY}, timeout=60) as client:
        ids = []
        for i in range(runs):
            body = {"input": f"Company {i}", "processor": "pro", "metadata": {"emulator": "duration=3600"}}
            ids.append((await client.post("/api/tasks", json=body)).json()["task"]["id"])
    if ready is not None:
        await asyncio.to_thread(ready)
    return await _follow_many(url, ids[:followers], hold)


async def _follow_many(url: str, ids: list[str], hold: float) -> list[float]:
    """One SSE client per task in ``ids`` for ``hold`` s: emission → receipt (ms) of each live progress message."""
    latencies: list[float] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_follow(url, t, latencies, stop)) for t in ids]
    await asyncio.sleep(hold)
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def _latency_summary(latencies: list[float]) -> dict[str, Any]:
    """events_measured, p50/p99/max in ms (None when nothing was measured)."""
    return {
        "events_measured": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(_pct(latencies, 0.99), 1) if latencies else None,
        "max_ms": round(max(latencies), 1) if latencies else None,
    }


def live(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-web-"))
    emu = start_emulator("--time-scale", str(args.time_scale), "--rate-limit", "10000000")
    proc, url = _serve(tmp / "taskdeck.db", emu.url, tmp / "serve.log")
    try:
        latencies = asyncio.run(_live(url, args.runs, args.followers, args.hold))
    finally:
        _stop(proc)
        emu.stop()
    return {
        "active_runs": args.runs,
        "sse_clients": args.followers,
        **_latency_summary(latencies),
        "bar": "p99 <= 100 ms",
    }


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench web", description=__doc__)
    parser.add_argument("mode", choices=["pages", "live", "all"], nargs="?", default="all")
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--followers", type=int, default=50)
    parser.add_argument("--hold", type=float, default=30.0)
    parser.add_argument("--time-scale", type=float, default=0.2)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    for mode in ["pages", "live"] if args.mode == "all" else [args.mode]:
        out = pages(args) if mode == "pages" else live(args)
        print(table(f"web: {mode}", list(out.items())))
        print(f"wrote {write_result(f'web_{mode}', out)}")
        results[mode] = out
    return results
