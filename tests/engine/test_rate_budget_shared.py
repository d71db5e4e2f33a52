"""The rate budget on PostgreSQL is one per key across processes: two workers together stay inside it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from workers import kill, start_worker, wait_for

from pg import fresh_schema
from taskdeck.config import Settings
from taskdeck.engine.intake import enqueue
from taskdeck.store.open import open_store

KEY = "shared-budget-key"


def test_two_workers_on_one_key_never_exceed_its_budget(tmp_path: Path, make_emulator: Any) -> None:
    """Runs whose streams close every 0.5 s want ~16 requests/s; the key's budget is 10 per 4 s window.

    Each worker follows half of the runs, so each alone would happily spend the whole budget.
    """
    window = 4.0
    emu = make_emulator(time_scale=0.01, stream_lifetime=50)
    with fresh_schema() as url:
        settings = Settings(db_path=tmp_path / "unused.db", database_url=url, secret_key="test-secret")
        open_store(url).close()  # migrated before the workers race to it
        for i in range(8):
            request = {"input": f"q{i}", "processor": "ultra", "metadata": {"emulator": "duration=100000"}}
            enqueue(settings, KEY, request)
        env = {
            "TASKDECK_DATABASE_URL": url,
            "TASKDECK_RATE_LIMIT_PER_MINUTE": "10",
            "TASKDECK_RATE_WINDOW": str(window),
            "TASKDECK_MAX_FOLLOWERS": "4",
        }
        workers = [start_worker(tmp_path / "unused.db", emu.url, tmp_path / f"w{i}.log", **env) for i in range(2)]
        try:
            store = open_store(url)
            try:
                wait_for(lambda: len(store.leases(time.time())) == 2, 30, "both workers holding runs")
            finally:
                store.close()
            started = time.monotonic()
            wait_for(lambda: time.monotonic() - started > 3 * window, 4 * window, "three windows of demand")
        finally:
            for worker in workers:
                kill(worker)
    # Measured over a window 1 s shorter, as in the single-process test (send and arrival times differ a little).
    keys = httpx.get(f"{emu.url}/_emulator/stats?runs=false&window={window - 1.0}").json()["keys"]
    (counters,) = keys.values()
    assert 5 <= counters["max_requests_per_window"] <= 10, counters["max_requests_per_window"]
    assert counters["by_status"].get("429", 0) == 0
