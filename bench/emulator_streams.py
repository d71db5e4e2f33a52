"""How many concurrently open event streams one emulator process serves, and how big a task group it holds.

The emulator runs in its own process; this process creates N long runs (via
task groups, 1,000 per request), opens one raw SSE connection per run, holds
them all for a while, and reports: time to open them all, streams the emulator
reports open, its RSS and CPU, and events delivered per second. The baseline is
the same count of idle TCP connections to the same server (what holding a
socket costs, before any SSE work).

Then one task group of G runs (10,000 by default), added 1,000 per ``POST
…/groups/{id}/runs`` over HTTP to a fresh emulator process. Once every run has
ended: the time to replay the group's event stream from the start, and to read
its runs stream with ``include_input=true`` (what Taskdeck reads to reconcile a
batch after a crash). Then a second group as large whose runs end one after
another while its event stream is open (the live case, where the stream asks
for the group's status once per event): how late each completion reaches the
client, and the emulator's CPU meanwhile. Each read stops after
``--group-limit`` seconds, so an emulator that cannot keep up is reported
(events delivered, lag so far) rather than waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from bench.common import EmulatorProcess, start_emulator, table, write_result

KEY = "bench-key"


@dataclass
class Counters:
    expected: int
    opened: int = 0
    first_event: int = 0
    events: int = 0
    errors: list[str] = field(default_factory=list)
    settled: asyncio.Event = field(default_factory=asyncio.Event)

    def check(self) -> None:
        """Set ``settled`` once every stream has either delivered its first event or failed."""
        if self.first_event + len(self.errors) >= self.expected:
            self.settled.set()

    def fail(self, why: str) -> None:
        self.errors.append(why)
        self.check()


async def _hold(
    host: str, port: int, path: str, counters: Counters, stop: asyncio.Event, gate: asyncio.Semaphore
) -> None:
    async with gate:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nx-api-key: {KEY}\r\nAccept: text/event-stream\r\n\r\n"
            writer.write(request.encode())
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError) as exc:
            counters.fail(type(exc).__name__)
            return
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            counters.fail(f"HTTP {status}")
            writer.close()
            return
        counters.opened += 1
    tail = b""
    seen_first = False
    try:
        while not stop.is_set():
            read = asyncio.ensure_future(reader.read(65536))
            stopper = asyncio.ensure_future(stop.wait())
            done, _ = await asyncio.wait({read, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper not in done:
                stopper.cancel()
            if read not in done:
                read.cancel()
                break
            data = read.result()
            if not data:
                counters.fail("closed early")
                break
            buf = tail + data
            n = buf.count(b"event: ")
            tail = buf[-6:]
            if n and not seen_first:
                seen_first = True
                counters.first_event += 1
                counters.check()
            counters.events += n
    finally:
        writer.close()


async def _create_runs(url: str, n: int, duration: float) -> list[str]:
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": KEY}, timeout=120) as client:
        group = (await client.post("/v1/tasks/groups", json={})).json()["taskgroup_id"]
        run_ids: list[str] = []
        for start in range(0, n, 1000):
            inputs = [
                {"input": f"bench company {i}", "processor": "ultra", "metadata": {"emulator": f"duration={duration}"}}
                for i in range(start, min(n, start + 1000))
            ]
            resp = await client.post(f"/v1/tasks/groups/{group}/runs", json={"inputs": inputs})
            resp.raise_for_status()
            run_ids += resp.json()["run_ids"]
        return run_ids


async def _stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as client:
        data: dict[str, Any] = (await client.get(f"{url}/_emulator/stats?runs=false")).json()
        return data


async def measure(emu: EmulatorProcess, n: int, hold: float, duration: float) -> dict[str, Any]:
    host, port = emu.url.removeprefix("http://").split(":")
    rss_start = emu.ps.memory_info().rss
    run_ids = await _create_runs(emu.url, n, duration)
    rss_runs = emu.ps.memory_info().rss
    counters = Counters(expected=len(run_ids))
    stop = asyncio.Event()
    gate = asyncio.Semaphore(256)  # connects in flight at once; the rest queue here
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(_hold(host, int(port), f"/v1/tasks/runs/{rid}/events", counters, stop, gate))
        for rid in run_ids
    ]
    await asyncio.wait_for(counters.settled.wait(), timeout=300)
    open_seconds = time.monotonic() - t0
    ps = emu.ps
    cpu0 = sum(ps.cpu_times()[:2])
    events0 = counters.events
    h0 = time.monotonic()
    await asyncio.sleep(hold)
    held = time.monotonic() - h0
    cpu = (sum(ps.cpu_times()[:2]) - cpu0) / held
    events_per_s = (counters.events - events0) / held
    stats = await _stats(emu.url)
    rss = ps.memory_info().rss
    stop.set()
    await asyncio.gather(*tasks)
    return {
        "streams_requested": n,
        "streams_open_client": counters.opened,
        "streams_open_emulator": stats["open_streams"],
        "max_open_streams_per_run": stats["max_open_streams_per_run"],
        "seconds_to_open_all": round(open_seconds, 2),
        "hold_seconds": round(held, 1),
        "events_per_second": round(events_per_s, 1),
        "emulator_cpu_cores": round(cpu, 3),
        "emulator_rss_mb": round(rss / 2**20, 1),
        "emulator_rss_mb_at_start": round(rss_start / 2**20, 1),
        "rss_kb_per_planned_run": round((rss_runs - rss_start) / 1024 / max(1, n), 1),
        "rss_kb_per_open_stream": round((rss - rss_runs) / 1024 / max(1, n), 1),
        "errors": len(counters.errors),
        "error_kinds": sorted(set(counters.errors)),
    }


async def _idle_sockets(emu: EmulatorProcess, n: int) -> dict[str, Any]:
    """Baseline: N idle keep-alive connections to the same server (no SSE)."""
    host, port = emu.url.removeprefix("http://").split(":")
    rss0 = emu.ps.memory_info().rss
    conns = []
    for _ in range(n):
        conns.append(await asyncio.open_connection(host, int(port)))
    await asyncio.sleep(1.0)
    rss = emu.ps.memory_info().rss
    for _, writer in conns:
        writer.close()
    return {"idle_connections": n, "rss_kb_per_idle_connection": round((rss - rss0) / 1024 / n, 1)}


# -- one big task group ------------------------------------------------------------------
GROUP_CHUNK = 1000  # inputs per add-runs request: the contract's limit (§9)


@dataclass
class SseTally:
    """What one read of an SSE response saw."""

    seconds: float = 0.0
    first_event_seconds: float | None = None
    events: int = 0
    body_bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    ended_by_server: bool = False


async def _read_sse(
    client: httpx.AsyncClient,
    path: str,
    params: dict[str, str],
    limit: float,
    on_event: Callable[[str, bytes, float], None] | None = None,
) -> SseTally:
    """Read one SSE response until the server ends it, or until ``limit`` seconds have passed."""
    tally = SseTally()
    t0 = time.monotonic()

    async def consume() -> None:
        buf = b""
        async with client.stream("GET", path, params=params) as resp:
            resp.raise_for_status()
            async for chunk in resp.aiter_raw():
                now = time.monotonic()
                tally.body_bytes += len(chunk)
                *frames, buf = (buf + chunk).split(b"\n\n")
                for frame in frames:
                    if not frame.startswith(b"event: "):
                        continue  # a keep-alive comment
                    head, _, data = frame.partition(b"\ndata: ")
                    kind = head.removeprefix(b"event: ").decode()
                    tally.events += 1
                    tally.by_type[kind] = tally.by_type.get(kind, 0) + 1
                    if tally.first_event_seconds is None:
                        tally.first_event_seconds = now - t0
                    if on_event is not None:
                        on_event(kind, data, now)
        tally.ended_by_server = True

    with contextlib.suppress(TimeoutError):  # cut off: reported, as ended_by_server stays False
        await asyncio.wait_for(consume(), timeout=limit)
    tally.seconds = time.monotonic() - t0
    return tally


async def _fill_group(client: httpx.AsyncClient, n: int, duration: Callable[[int], float]) -> tuple[str, float]:
    """A new group of ``n`` runs (run ``i`` lasting ``duration(i)`` s), added 1,000 per request; (id, seconds)."""
    group: str = (await client.post("/v1/tasks/groups", json={"metadata": {"bench": "group"}})).json()["taskgroup_id"]
    t0 = time.monotonic()
    for start in range(0, n, GROUP_CHUNK):
        inputs = [
            {
                "input": f"bench row {i}",
                "processor": "lite",
                # A tag per run, as Taskdeck tags its runs (it finds them again by it after a crash).
                "metadata": {"bench_row": i, "emulator": f"duration={duration(i):.3f}"},
            }
            for i in range(start, min(n, start + GROUP_CHUNK))
        ]
        resp = await client.post(f"/v1/tasks/groups/{group}/runs", json={"inputs": inputs})
        resp.raise_for_status()
    return group, time.monotonic() - t0


def _cpu(emu: EmulatorProcess) -> float:
    return float(sum(emu.ps.cpu_times()[:2]))


def _tally_rows(prefix: str, tally: SseTally, cpu: float) -> dict[str, Any]:
    return {
        f"{prefix}_seconds": round(tally.seconds, 3),
        f"{prefix}_first_event_seconds": None
        if tally.first_event_seconds is None
        else round(tally.first_event_seconds, 3),
        f"{prefix}_events": tally.events,
        f"{prefix}_mb": round(tally.body_bytes / 2**20, 2),
        f"{prefix}_complete": tally.ended_by_server,
        f"{prefix}_emulator_cpu_seconds": round(cpu, 3),
    }


async def measure_group(emu: EmulatorProcess, n: int, live_window: float, limit: float) -> dict[str, Any]:
    """An ended group of ``n`` runs: replay and runs stream; then the live event stream of another one."""
    timeouts = httpx.Timeout(connect=30.0, read=None, write=60.0, pool=30.0)
    async with httpx.AsyncClient(base_url=emu.url, headers={"x-api-key": KEY}, timeout=timeouts) as client:
        # Runs of 1 to 3 s (time scale 1): all ended a few seconds after the last add.
        group, add_seconds = await _fill_group(client, n, lambda i: 1.0 + 2.0 * (i % 97) / 97)
        for _ in range(600):
            if not (await client.get(f"/v1/tasks/groups/{group}")).json()["status"]["is_active"]:
                break
            await asyncio.sleep(0.5)
        cpu = _cpu(emu)
        replay = await _read_sse(client, f"/v1/tasks/groups/{group}/events", {}, limit)
        replay_cpu = _cpu(emu) - cpu
        cpu = _cpu(emu)
        runs = await _read_sse(client, f"/v1/tasks/groups/{group}/runs", {"include_input": "true"}, limit)
        runs_cpu = _cpu(emu) - cpu

        # Live: the runs end evenly over live_window seconds, starting once every add is surely done.
        lead = 5.0 + n / 1000
        live_group, _ = await _fill_group(client, n, lambda i: lead + live_window * i / max(1, n - 1))
        to_wall = time.time() - time.monotonic()
        lags: list[float] = []

        def on_live(kind: str, data: bytes, at: float) -> None:
            if kind == "task_run.state":
                # modified_at of a terminal run is when it ended: the lag is how late the client hears of it.
                ended = datetime.fromisoformat(json.loads(data)["run"]["modified_at"]).timestamp()
                lags.append(at + to_wall - ended)

        cpu = _cpu(emu)
        live = await _read_sse(client, f"/v1/tasks/groups/{live_group}/events", {}, limit, on_live)
        live_cpu = _cpu(emu) - cpu
    lags.sort()
    return {
        "group_runs": n,
        "group_add_seconds": round(add_seconds, 2),
        "group_add_runs_per_second": round(n / add_seconds, 1),
        **_tally_rows("group_replay", replay, replay_cpu),
        "group_replay_events_per_second": round(replay.events / max(replay.seconds, 1e-9), 1),
        **_tally_rows("group_runs_include_input", runs, runs_cpu),
        "group_runs_include_input_events_per_second": round(runs.events / max(runs.seconds, 1e-9), 1),
        "group_live_window_seconds": live_window,
        **_tally_rows("group_live", live, live_cpu),
        "group_live_completions_delivered": len(lags),
        "group_live_lag_p50_seconds": round(statistics.median(lags), 3) if lags else None,
        "group_live_lag_p99_seconds": round(lags[int(0.99 * (len(lags) - 1))], 3) if lags else None,
        "group_live_lag_max_seconds": round(lags[-1], 3) if lags else None,
    }


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench emulator-streams", description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000, help="concurrent event streams to open (0: skip)")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold them all open")
    parser.add_argument(
        "--time-scale", type=float, default=0.2, help="emulator time scale (events flow faster below 1)"
    )
    parser.add_argument("--group-runs", type=int, default=10_000, help="runs in the big task group (0: skip)")
    parser.add_argument(
        "--group-live-window", type=float, default=20.0, help="seconds over which the live group's runs end"
    )
    parser.add_argument(
        "--group-limit", type=float, default=300.0, help="seconds after which a group stream read is cut off"
    )
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    if args.streams > 0:
        # Runs last 3,600 emulated seconds, so they stay active for the whole benchmark.
        emu = start_emulator("--time-scale", str(args.time_scale), "--stream-lifetime", "1000000")
        try:
            result = asyncio.run(measure(emu, args.streams, args.hold, 3600.0))
        finally:
            emu.stop()
        base_emu = start_emulator()
        try:
            baseline = asyncio.run(_idle_sockets(base_emu, min(args.streams, 2000)))
        finally:
            base_emu.stop()
        result["baseline"] = baseline
        result["rss_ratio_stream_vs_idle_connection"] = round(
            result["rss_kb_per_open_stream"] / max(0.1, baseline["rss_kb_per_idle_connection"]), 1
        )
        print(table("emulator: concurrent event streams", [(k, v) for k, v in result.items() if k != "baseline"]))
        print(table("baseline: idle connections", list(baseline.items())))
    if args.group_runs > 0:
        # A fresh process at time scale 1: run durations below are real seconds.
        group_emu = start_emulator("--time-scale", "1")
        try:
            group = asyncio.run(measure_group(group_emu, args.group_runs, args.group_live_window, args.group_limit))
        finally:
            group_emu.stop()
        result["group"] = group
        print(table("emulator: one big task group", list(group.items())))
    print(f"wrote {write_result('emulator_streams', result)}")
    return result
