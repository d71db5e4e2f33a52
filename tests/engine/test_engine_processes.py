"""Real worker processes: SIGKILL at random moments, two processes on one database, graceful stop."""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from workers import kill, start_worker, wait_for

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings
from taskdeck.engine.intake import enqueue
from taskdeck.models import Origin, TaskStatus
from taskdeck.store.sqlite import SqliteStore

KEY = "process-test-key"


@pytest.fixture
def emu() -> Iterator[BackgroundEmulator]:
    # Runs of 3,000 emulated seconds last 15 s; streams close every 2.85 s.
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005, record_sent=True)) as emulator:
        yield emulator


def enqueue_many(db: Path, n: int, duration: int = 3000) -> list[str]:
    settings = Settings(db_path=db, secret_key="test-secret")
    return [
        enqueue(
            settings,
            KEY,
            {"input": f"Company {i}", "processor": "ultra", "metadata": {"emulator": f"duration={duration}"}},
        ).id
        for i in range(n)
    ]


def statuses(store: SqliteStore, ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in store.get_tasks(ids):
        counts[task.status.value] = counts.get(task.status.value, 0) + 1
    return counts


def check_exactly_once(store: SqliteStore, emu_url: str, ids: list[str]) -> None:
    """Every replayable event the emulator sent is stored exactly once.

    Parallel replays a run's whole message history on every connection, but only its
    latest ``progress_stats`` snapshot and only its *current* ``task_run.state``
    (contract section 8). So a snapshot or an active state (queued, running) that
    reached a process killed before its next commit is gone for good: those must be a
    subset of what was sent, each stored once, and the final ones must be there.
    """
    with httpx.Client(base_url=emu_url) as client:
        for task in store.get_tasks(ids):
            assert task.status == TaskStatus.COMPLETED, (task.id, task.status, task.error)
            assert task.output is not None
            stored = [(e.type, e.data) for e in store.events(task.id) if e.origin == Origin.UPSTREAM]
            info = client.get(f"/_emulator/runs/{task.run_id}").json()
            sent = {(e["type"], e["data"]) for e in info["sent_events"]}
            assert len(stored) == len(set(stored)), f"{task.id}: an event stored twice"
            replayable_sent = {e for e in sent if replayed_whole(e)}
            assert {e for e in stored if replayed_whole(e)} == replayable_sent, f"{task.id}: replayable events differ"
            snapshots = {e for e in stored if not replayed_whole(e)}
            assert snapshots <= sent, f"{task.id}: a stored snapshot was never sent"
            assert any('"progress_meter":100.0' in d for _, d in snapshots)
            assert info["max_open_streams"] <= 1


def replayed_whole(event: tuple[str, str]) -> bool:
    """Whether Parallel sends this event again on every later connection (messages, the final state)."""
    kind, data = event
    if kind == "task_run.progress_stats":
        return False
    return not (kind == "task_run.state" and '"is_active":true' in data)


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path, emu: BackgroundEmulator) -> None:
    db = tmp_path / "taskdeck.db"
    log = tmp_path / "workers.log"
    ids = enqueue_many(db, 200)
    store = SqliteStore(db)
    rng = random.Random(1234)
    worker = start_worker(db, emu.url, log)
    try:
        wait_for(lambda: all(t.run_id for t in store.get_tasks(ids)), 60, "every task to be submitted")
        for _ in range(4):
            time.sleep(rng.uniform(0.3, 2.0))  # chaos timing, not synchronisation
            kill(worker)
            worker = start_worker(db, emu.url, log)
        wait_for(lambda: all(t.status.is_terminal for t in store.get_tasks(ids)), 120, "every run to end")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=15)
    assert statuses(store, ids) == {"completed": 200}, log.read_text()[-3000:]
    assert KEY not in log.read_text()  # the key is never logged
    check_exactly_once(store, emu.url, ids)
    stats = httpx.get(f"{emu.url}/_emulator/stats?runs=false").json()
    assert [k["creates"] for k in stats["keys"].values()] == [200]  # no run created twice
    assert httpx.get(f"{emu.url}/_emulator/stats").json()["max_open_streams_per_run"] == 1
    store.close()


def test_two_processes_share_runs_and_take_over_from_a_dead_one(tmp_path: Path, emu: BackgroundEmulator) -> None:
    db = tmp_path / "taskdeck.db"
    log = tmp_path / "workers.log"
    store = SqliteStore(db)
    first_ids = enqueue_many(db, 20)
    a = start_worker(db, emu.url, log, TASKDECK_MAX_FOLLOWERS="20")
    b = None
    try:
        wait_for(lambda: all(t.run_id for t in store.get_tasks(first_ids)), 60, "worker A to submit its tasks")
        holder_a = {t.lease_owner for t in store.get_tasks(first_ids)}
        assert len(holder_a) == 1
        b = start_worker(db, emu.url, log)
        second_ids = enqueue_many(db, 20)
        ids = first_ids + second_ids
        wait_for(lambda: all(t.run_id for t in store.get_tasks(second_ids)), 60, "worker B to submit its tasks")
        holders = {t.lease_owner for t in store.get_tasks(second_ids)}
        assert holders and holders.isdisjoint(holder_a)  # A is full, so B follows these
        kill(a)
        wait_for(lambda: all(t.status.is_terminal for t in store.get_tasks(ids)), 120, "B to finish every run")
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
    assert statuses(store, ids) == {"completed": 40}
    check_exactly_once(store, emu.url, ids)
    taken_over = [e for t in first_ids for e in store.events(t) if e.type == "taskdeck.stream_connected"]
    assert taken_over  # A's runs got new streams (from B)
    store.close()


def test_a_dead_sibling_on_this_machine_is_taken_over_at_once_not_after_its_lease_ttl(
    tmp_path: Path, emu: BackgroundEmulator
) -> None:
    """A SIGKILLed worker restarted on the same machine (as systemd would): its runs go on within
    seconds, although its leases would hold for a minute; still one stream per run, nothing lost."""
    db = tmp_path / "taskdeck.db"
    log = tmp_path / "workers.log"
    store = SqliteStore(db)
    ids = enqueue_many(db, 20)
    slow_expiry = {"TASKDECK_LEASE_TTL": "60", "TASKDECK_HEARTBEAT_INTERVAL": "0.3"}
    a = start_worker(db, emu.url, log, **slow_expiry)
    b = None
    try:
        wait_for(lambda: all(t.run_id for t in store.get_tasks(ids)), 60, "worker A to submit its tasks")
        holder_a = {t.lease_owner for t in store.get_tasks(ids)}
        assert len(holder_a) == 1 and None not in holder_a
        kill(a)  # and reaped: its pid is gone
        b = start_worker(db, emu.url, log, **slow_expiry)
        # Well inside the 60 s the leases would last: B holds every run still going.
        wait_for(
            lambda: all(t.status.is_terminal or t.lease_owner not in (None, *holder_a) for t in store.get_tasks(ids)),
            30,
            "worker B to take over the dead worker's runs before its leases expire",
        )
        wait_for(lambda: all(t.status.is_terminal for t in store.get_tasks(ids)), 120, "B to finish every run")
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
    assert statuses(store, ids) == {"completed": 20}
    check_exactly_once(store, emu.url, ids)
    assert "takeover: process" in log.read_text()
    assert {p.holder for p in store.processes()}.isdisjoint(holder_a)  # the dead one is gone from the registry
    store.close()


def test_sigterm_stops_within_ten_seconds_and_releases_leases(tmp_path: Path, emu: BackgroundEmulator) -> None:
    db = tmp_path / "taskdeck.db"
    store = SqliteStore(db)
    ids = enqueue_many(db, 30, duration=100_000)
    worker = start_worker(db, emu.url, tmp_path / "w.log")
    wait_for(lambda: all(t.run_id for t in store.get_tasks(ids)), 60, "every task to be submitted")
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    assert all(t.lease_owner is None for t in store.get_tasks(ids))
    wait_for(
        lambda: httpx.get(f"{emu.url}/_emulator/stats?runs=false").json()["open_streams"] == 0,
        5,
        "the emulator to see every stream closed",
    )
    store.close()


def test_sigkill_during_bursts_of_creates_leaves_no_billed_run_untracked(tmp_path: Path) -> None:
    """Five rounds: 200 creates in flight, SIGKILL; every run Parallel created ends up followed, none twice."""
    db = tmp_path / "taskdeck.db"
    log = tmp_path / "workers.log"
    # Half the creates answer 0.3 s late, so each kill finds some in flight; the emulator still
    # creates (and bills) those runs after the client is gone, as Parallel would.
    settings = EmulatorSettings(port=0, time_scale=0.005, faults="create:hang=0.3%0.5")
    store = SqliteStore(db)
    ids: list[str] = []
    with BackgroundEmulator(settings) as emu:
        try:
            for _ in range(5):
                burst = enqueue_many(db, 200, duration=100)
                ids += burst
                worker = start_worker(db, emu.url, log, TASKDECK_CREATE_TIMEOUT="3", TASKDECK_CREATE_SETTLE="6")
                wait_for(
                    lambda burst=burst: any(t.run_id for t in store.get_tasks(burst)),  # type: ignore[misc]
                    60,
                    "the burst's first creates to land",
                )
                kill(worker)
            worker = start_worker(db, emu.url, log, TASKDECK_CREATE_TIMEOUT="3", TASKDECK_CREATE_SETTLE="6")
            wait_for(lambda: all(t.status.is_terminal for t in store.get_tasks(ids)), 180, "every run to end")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=15)
        tasks = store.get_tasks(ids)
        run_ids = [t.run_id for t in tasks if t.run_id]
        stats = httpx.get(f"{emu.url}/_emulator/stats?runs=false").json()
        created_upstream = httpx.get(f"{emu.url}/_emulator/stats").json()["num_runs"]
    assert statuses(store, ids) == {"completed": 1000}, log.read_text()[-3000:]
    assert len(set(run_ids)) == len(run_ids) == 1000  # every task has its own run
    assert created_upstream == 1000, stats  # and Parallel created no other: nothing billed twice or untracked
    reconciled = [e for t in ids for e in store.events(t) if e.type == "taskdeck.reconciled"]
    assert reconciled, "no kill landed during a create; the test proved nothing"
    store.close()
