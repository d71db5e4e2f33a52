"""Recovery paths, each driven through the emulator and asserted on stored state (issue 7, items 2, 4, 17, 19)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import assert_exactly_once, fast_settings, stored_upstream, wait_terminal
from taskdeck.emulator import BackgroundEmulator
from taskdeck.engine import Engine
from taskdeck.engine.follower import dedup_key
from taskdeck.engine.intake import key_record, new_task
from taskdeck.models import Event, TaskStatus
from taskdeck.processors import get_processor
from taskdeck.store import SqliteStore
from taskdeck.store.base import AppendEvent, InsertTask, Write
from taskdeck.upstream.sse import SseMessage

KEY = "recovery-test-key"


def body(directives: str = "", processor: str = "pro", duration: int = 300, text: str = "Recover me") -> dict[str, Any]:
    return {"input": text, "processor": processor, "metadata": {"emulator": f"duration={duration};{directives}"}}


class MessageFailingStore(SqliteStore):
    """The real store, except that the first ``fail`` transactions holding a progress message fail."""

    fail = 0

    def apply(self, writes: Sequence[Write]) -> list[Event]:
        has_message = any(isinstance(w, AppendEvent) and w.type.startswith("task_run.progress_msg.") for w in writes)
        if has_message and self.fail > 0:
            self.fail -= 1
            raise OSError("disk I/O error (injected)")
        return super().apply(writes)


async def test_an_event_whose_write_failed_is_stored_at_the_next_replay(tmp_path: Path, make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.005, stream_lifetime=100, record_sent=True)  # 0.5 s streams
    store = MessageFailingStore(tmp_path / "r.db")
    store.fail = 2  # the batch holding the first message, then that message's own retry
    engine = Engine(fast_settings(tmp_path / "r.db", emu.url), store=store)
    await engine.start()
    try:
        task = await engine.submit(KEY, body(duration=600))
        await wait_terminal(engine, [task.id])
        assert store.fail == 0, "the injected failure never happened"
        # Every distinct event the emulator sent is stored once: the lost one came back with a replay.
        assert_exactly_once(engine, emu.url, task.id, ordered=False)
    finally:
        await engine.stop()


async def test_polling_returns_to_streaming_and_stops_polling(tmp_path: Path, make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.005, stream_lifetime=100, record_sent=True)  # 0.5 s streams
    settings = fast_settings(tmp_path / "p.db", emu.url, stream_failures_before_polling=2, result_wait=0)
    engine = Engine(settings)
    await engine.start()
    try:
        task = await engine.submit(KEY, body("events:error=503*3", duration=1000))  # 5 s: about 10 streams
        await wait_terminal(engine, [task.id])
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED and stored.output is not None
        events = [e.type for e in engine.store.events(task.id)]
        resumed = events.index("taskdeck.streaming_resumed")
        assert "taskdeck.polling" in events[:resumed]
        assert events[resumed:].count("taskdeck.stream_connected") >= 4
        # Back on the stream, the follower polls no more: the GETs all happened while it was polling.
        keys = httpx.get(f"{emu.url}/_emulator/stats?runs=false").json()["keys"]
        (counters,) = keys.values()
        assert counters["by_route"].get("retrieve_run", 0) <= 2, counters["by_route"]
        assert_exactly_once(engine, emu.url, task.id)
    finally:
        await engine.stop()


async def test_a_run_that_finishes_while_polling_is_stored_with_its_output(tmp_path: Path, make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.005, record_sent=True)
    settings = fast_settings(tmp_path / "f.db", emu.url, stream_failures_before_polling=1, result_wait=0)
    engine = Engine(settings)
    await engine.start()
    try:
        task = await engine.submit(KEY, body("events:error=503", processor="lite", duration=60))  # never streams
        await wait_terminal(engine, [task.id])
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED
        result = httpx.get(f"{emu.url}/v1/tasks/runs/{stored.run_id}/result", headers={"x-api-key": KEY}).json()
        assert stored.output == result["output"]
        assert stored_upstream(engine, task.id) == []  # nothing came by stream
        assert "taskdeck.result_stored" in [e.type for e in engine.store.events(task.id)]
    finally:
        await engine.stop()


async def test_tracking_a_run_that_already_ended(engine: Engine, recording_emulator: BackgroundEmulator) -> None:
    url = recording_emulator.url
    created = httpx.post(f"{url}/v1/tasks/runs", json=body(processor="lite", duration=20), headers={"x-api-key": KEY})
    run_id = created.json()["run_id"]
    result = await asyncio.to_thread(
        httpx.get,
        f"{url}/v1/tasks/runs/{run_id}/result",
        params={"timeout": 60},
        headers={"x-api-key": KEY},
        timeout=90,
    )
    assert result.status_code == 200  # the run is over before Taskdeck hears of it
    task = await engine.track(KEY, run_id)
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.COMPLETED
    assert stored.output == result.json()["output"]
    assert_exactly_once(engine, url, task.id)


async def test_a_lost_lease_stops_the_follower_and_never_leaves_two_streams(
    tmp_path: Path, recording_emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "l.db"
    first = Engine(fast_settings(db, recording_emulator.url))
    second = Engine(fast_settings(db, recording_emulator.url))
    await first.start()
    try:
        # A run far longer than the test: only losing the lease can make the first follower stop.
        task = await first.submit(KEY, body(duration=1_000_000))
        await _until(lambda: first.store.get_task(task.id).run_id is not None)  # type: ignore[union-attr]
        run_id = first.store.get_task(task.id).run_id  # type: ignore[union-attr]
        await _until(lambda: _open_streams(recording_emulator.url, run_id) == 1)
        # Another process took the lease (as after a stall longer than the lease): the first must let go.
        assert isinstance(first.store, SqliteStore)
        first.store._conn().execute(
            "UPDATE tasks SET lease_owner = 'elsewhere', lease_expires = ? WHERE id = ?", (time.time() + 3, task.id)
        )
        await _until(lambda: task.id not in first.followers)
        await _until(lambda: _open_streams(recording_emulator.url, run_id) == 0)
        # Once that lease expires, a live process (the second, or the first again) claims and follows the run.
        await second.start()
        await _until(lambda: task.id in first.followers or task.id in second.followers)
        await _until(lambda: _open_streams(recording_emulator.url, run_id) == 1)
        info = httpx.get(f"{recording_emulator.url}/_emulator/runs/{run_id}").json()
        assert info["max_open_streams"] == 1  # never two at once, across the handover
        assert not (task.id in first.followers and task.id in second.followers)
    finally:
        await first.stop()
        await second.stop()


def _open_streams(url: str, run_id: str | None) -> int:
    return int(httpx.get(f"{url}/_emulator/runs/{run_id}").json()["open_streams"])


async def _until(condition: Any, timeout: float = 30.0) -> None:
    """Re-check a condition until it holds (a condition wait, not a timed sleep)."""
    async with asyncio.timeout(timeout):
        # Polls state outside this loop (the database, the emulator), which no event announces.
        while not await asyncio.to_thread(condition):  # noqa: ASYNC110
            await asyncio.sleep(0.05)


class CrashOnceStore(SqliteStore):
    """The real store, whose first read of a task's stored event keys fails (as a corrupt page would)."""

    crashes = 1

    def dedup_keys(self, task_id: str) -> set[str]:
        if self.crashes > 0:
            self.crashes -= 1
            raise RuntimeError("database disk image is malformed (injected)")
        return super().dedup_keys(task_id)


async def test_a_crashed_follower_is_replaced_and_the_run_finishes(
    tmp_path: Path, recording_emulator: BackgroundEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    store = CrashOnceStore(tmp_path / "c.db")
    engine = Engine(fast_settings(tmp_path / "c.db", recording_emulator.url), store=store)
    await engine.start()
    try:
        task = await engine.submit(KEY, body(duration=400))
        await wait_terminal(engine, [task.id])
        assert store.crashes == 0
        assert any("crashed" in r.getMessage() for r in caplog.records)
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED
        assert_exactly_once(engine, recording_emulator.url, task.id)
    finally:
        await engine.stop()


async def test_a_local_error_during_create_ends_the_task_rejected(engine: Engine) -> None:
    """A request that cannot even be sent (a float JSON cannot encode) is rejected, not retried for ever."""
    # Intake refuses such a request (strict JSON); an older Taskdeck stored some, so it is planted directly.
    request = {"input": "unsendable", "processor": "lite", "metadata": {"n": float("nan")}}
    task = new_task(engine.vault.owner(KEY), request, get_processor("lite"))  # type: ignore[arg-type]
    engine.store.apply([key_record(engine.vault, KEY), InsertTask(task)])
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.REJECTED, stored
    assert stored.message is not None and "could not send" in stored.message
    assert stored.run_id is None
    assert "taskdeck.retry_scheduled" not in [e.type for e in engine.store.events(task.id)]


def test_unknown_events_are_deduplicated_by_their_canonical_json() -> None:
    def message(data: str) -> SseMessage:
        return SseMessage("task_run.custom", data, json.loads(data))

    one = message('{"type":"task_run.custom","a":1,"b":[1,2]}')
    spaced = message('{ "b": [1, 2],  "type": "task_run.custom", "a": 1 }')
    other = message('{"type":"task_run.custom","a":2,"b":[1,2]}')
    assert dedup_key(one) == dedup_key(spaced) != dedup_key(other)
    # Lone surrogates (from escapes) still hash instead of crashing the follower.
    odd = message('{"type":"task_run.progress_msg.plan","message":"\\ud800","timestamp":"t"}')
    assert dedup_key(odd).startswith("msg:")


async def test_a_run_that_vanishes_mid_follow_ends_failed_not_retried(
    engine: Engine, recording_emulator: BackgroundEmulator
) -> None:
    """Parallel forgets the run (404) while it is being followed: the task ends, with what to do next."""
    task = await engine.submit(KEY, body("vanish=100", duration=100_000))  # 0.5 s in: every request 404s
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.FAILED
    assert stored.error is not None and stored.error["status"] == 404
    assert stored.message is not None and "does not know this run" in stored.message
    # Both causes named: the run gone upstream (an emulator restarted without its state), or another key.
    assert "gone upstream" in stored.message and "API key" in stored.message
    types = [e.type for e in engine.store.events(task.id)]
    assert "taskdeck.run_not_found" in types
    # A 404 is an answer, not a failure to retry: no backoff, no polling.
    assert "taskdeck.retry_scheduled" not in types and "taskdeck.polling" not in types


async def test_a_terminal_state_without_output_is_completed_from_result(
    engine: Engine, recording_emulator: BackgroundEmulator
) -> None:
    task = await engine.submit(KEY, body("nooutput", duration=200))
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.COMPLETED and stored.output is not None
    result = await asyncio.to_thread(
        httpx.get, f"{recording_emulator.url}/v1/tasks/runs/{stored.run_id}/result", headers={"x-api-key": KEY}
    )
    assert stored.output == result.json()["output"]  # fetched from /result, since the state event had none
    states = [json.loads(e.data) for e in engine.store.events(task.id) if e.type == "task_run.state"]
    assert states and all(s["output"] is None for s in states)


class SlowRenewStore(SqliteStore):
    """The real store, whose lease renewals wait until the test lets them go (a slow disk, a busy host)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.renewing = threading.Event()
        self.go = threading.Event()

    def renew(self, holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        self.renewing.set()
        self.go.wait(30)
        return super().renew(holder, task_ids, expires)


async def test_a_task_started_while_leases_are_renewed_is_not_taken_for_lost(
    tmp_path: Path, recording_emulator: BackgroundEmulator
) -> None:
    store = SlowRenewStore(tmp_path / "s.db")
    engine = Engine(fast_settings(tmp_path / "s.db", recording_emulator.url), store=store)
    await engine.start()
    try:
        first = await engine.submit(KEY, body(duration=2000))  # a follower, so the heartbeat renews
        store.go.clear()
        store.renewing.clear()
        await asyncio.to_thread(store.renewing.wait, 30)  # a renewal is in flight now...
        second = await engine.submit(KEY, body(duration=100, text="started meanwhile"))  # ...and this one starts
        store.go.set()
        await wait_terminal(engine, [second.id])
        assert "taskdeck.reconciled" not in [e.type for e in engine.store.events(second.id)]
        assert engine.store.get_task(second.id).status == TaskStatus.COMPLETED  # type: ignore[union-attr]
        assert first.id in engine.followers
    finally:
        store.go.set()
        await engine.stop()


def test_state_events_differing_only_in_modified_at_are_both_kept() -> None:
    def state(status: str, modified: str) -> SseMessage:
        payload = {"type": "task_run.state", "run": {"status": status, "modified_at": modified}}
        return SseMessage("task_run.state", json.dumps(payload), payload)

    assert dedup_key(state("running", "t1")) != dedup_key(state("running", "t2"))
    assert dedup_key(state("running", "t1")) == dedup_key(state("running", "t1"))
    assert dedup_key(state("running", "t1")) != dedup_key(state("completed", "t1"))


async def test_a_create_that_got_no_answer_is_found_not_sent_again(tmp_path: Path, make_emulator: Any) -> None:
    """The create times out at 0.5 s, but the emulator creates the run at 0.8 s: found, adopted, billed once."""
    emu = make_emulator(faults="create:hang=0.8*1", record_sent=True)
    engine = Engine(fast_settings(tmp_path / "t.db", emu.url, create_timeout=0.5, create_settle=1.5))
    await engine.start()
    try:
        task = await engine.submit(KEY, body(processor="lite", duration=20))
        await wait_terminal(engine, [task.id])
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED
        keys = (await asyncio.to_thread(httpx.get, f"{emu.url}/_emulator/stats?runs=false")).json()["keys"]
        assert [k["runs"] for k in keys.values()] == [1]  # one billed run, though the create was sent once only
        submitted = [json.loads(e.data) for e in engine.store.events(task.id) if e.type == "taskdeck.submitted"]
        assert submitted == [{"run_id": stored.run_id, "how": "found_after_error"}]
    finally:
        await engine.stop()
