"""The per-key rate budget: no request beyond it, whatever the runs want."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import fast_settings
from taskdeck.engine import Engine
from taskdeck.engine.ratelimit import KeyLimiter, RateBudget


async def test_limiter_never_exceeds_its_window() -> None:
    limiter = KeyLimiter(5, window=0.5)
    stamps: list[float] = []
    for _ in range(12):
        await limiter.acquire()
        stamps.append(time.monotonic())
    for i, t in enumerate(stamps):
        in_window = [s for s in stamps if t <= s < t + limiter.window]
        assert len(in_window) <= 5, i
    assert stamps[-1] - stamps[0] >= 2 * 0.5  # 12 calls at 5 per window need three windows


async def test_pause_holds_every_caller() -> None:
    limiter = KeyLimiter(100)
    limiter.pause(0.3)
    started = time.monotonic()
    await asyncio.gather(limiter.acquire(), limiter.acquire())
    assert time.monotonic() - started >= 0.3


async def test_creates_scope_counts_only_creates() -> None:
    budget = RateBudget(1, "creates")
    started = time.monotonic()
    for _ in range(50):
        await budget.acquire("owner", creates=False)
    await budget.acquire("owner", creates=True)
    assert time.monotonic() - started < 1.0


async def test_stream_reopens_go_before_creates_waiting_for_the_budget() -> None:
    """A worker taking over a dead one's runs must not wait behind its queue of creates."""
    budget = RateBudget(2, "all", window=0.3)
    await budget.acquire("owner", creates=True)
    await budget.acquire("owner", creates=True)  # the window is full now
    order: list[str] = []

    async def take(name: str, creates: bool) -> None:
        await budget.acquire("owner", creates=creates)
        order.append(name)

    creates = [asyncio.create_task(take(f"create{i}", True)) for i in range(4)]
    for _ in range(5):  # let every create queue up (no I/O: each turn of the loop is deterministic)
        await asyncio.sleep(0)
    reopens = [asyncio.create_task(take(f"reopen{i}", False)) for i in range(2)]
    await asyncio.gather(*creates, *reopens)
    # create0 already held the lock, waiting for the window; both reopens come right after it.
    assert order[:3] == ["create0", "reopen0", "reopen1"], order
    assert sorted(order[3:]) == ["create1", "create2", "create3"]


@pytest.mark.parametrize("scope", ["all", "creates"])
async def test_emulator_never_sees_more_than_the_budget(tmp_path: Path, make_emulator: Any, scope: str) -> None:
    """Runs whose streams close every 0.5 s want ~16 requests/s; the budget allows 10 per 4 s window.

    The same as Parallel's 2,000/min, in a window shrunk to seconds (TASKDECK_RATE_WINDOW).
    """
    window = 4.0
    emu = make_emulator(time_scale=0.01, stream_lifetime=50)
    settings = fast_settings(tmp_path / "r.db", emu.url, rate_limit_per_minute=10, rate_window=window)
    engine = Engine(replace(settings, rate_limit_scope=scope))
    await engine.start()
    try:
        # In the creates scope only creates count: 24 of them want more than two windows.
        for i in range(8 if scope == "all" else 24):
            await engine.submit(
                "budget-key", {"input": f"q{i}", "processor": "ultra", "metadata": {"emulator": "duration=100000"}}
            )
        await asyncio.sleep(3 * window)  # observe several full windows of demand
    finally:
        await engine.stop()
    # Measured over a window 1 s shorter: requests sent inside one window can arrive a little closer together
    # when the machine is loaded (the limiter's own margin is 0.5 s; with both cores busy, delays vary more).
    keys = httpx.get(f"{emu.url}/_emulator/stats?runs=false&window={window - 1.0}").json()["keys"]
    (counters,) = keys.values()
    if scope == "all":
        busiest = counters["max_requests_per_window"]
    else:  # only creates count (streams run free): the budget spreads the 24 creates over three windows
        busiest = counters["max_requests_per_window_by_route"]["add_group_runs"]
        assert counters["by_route"]["add_group_runs"] == 24
    assert 5 <= busiest <= 10  # never above the budget, and the budget (not something else) was the limit
    assert counters["by_status"].get("429", 0) == 0


async def test_requests_of_other_processes_count_against_the_window() -> None:
    limiter = KeyLimiter(5, window=1.0)
    now = int(time.time())
    limiter.external = {now: 5}  # another process spent the whole budget this second
    started = time.monotonic()
    await limiter.acquire()
    assert time.monotonic() - started >= 0.5  # had to wait for those to leave the window


def test_usage_round_trips_through_the_store(tmp_path: Path) -> None:
    from taskdeck.store import SqliteStore

    store = SqliteStore(tmp_path / "u.db")
    now = time.time()
    s = int(now)
    store.put_usage("A", {"owner1": {s: 3, s - 1: 2}}, now)
    store.put_usage("B", {"owner1": {s: 1}, "owner2": {s: 7}}, now, final=True)
    reports = store.get_usage(now - 70, "C")
    assert sorted((r.holder, r.owner, r.final) for r in reports) == [
        ("A", "owner1", False), ("B", "owner1", True), ("B", "owner2", True),
    ]  # fmt: skip
    assert store.get_usage(now + 1, "C") == []
    budget = RateBudget(10, "all")
    budget.set_external(reports, now, 1.0)  # fresh reports: counted as they are
    assert budget.limiter("owner1").external == {s: 4, s - 1: 2}
    budget.set_external(reports, now + 5, 1.0)  # A went silent without a final report: it may have spent
    assert budget.limiter("owner1").external[s + 1] == min(10 - 5, 2 * 3)  # twice its busiest second, capped
    assert budget.limiter("owner2").external == {s: 7}  # B stopped cleanly: no allowance
    store.close()
