"""How many concurrently open event streams one emulator process serves.

The emulator runs in its own process; this process creates N long runs (via
task groups, 1,000 per request), opens one raw SSE connection per run, holds
them all for a while, and reports: time to open them all, streams the emulator
reports open, its RSS and CPU, and events delivered per second. The baseline is
the same count of idle TCP connections to the same server (what holding a
socket costs, before any SSE work).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field
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


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench emulator-streams", description=__doc__)
    parser.add_argument("--streams", type=int, default=10_000, help="concurrent event streams to open")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold them all open")
    parser.add_argument(
        "--time-scale", type=float, default=0.2, help="emulator time scale (events flow faster below 1)"
    )
    args = parser.parse_args(argv)
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
    print(f"wrote {write_result('emulator_streams', result)}")
    return result
