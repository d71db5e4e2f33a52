"""The engine follows runs to their end through every fault, storing each event once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import assert_exactly_once, fast_settings, wait_terminal
from taskdeck.emulator import BackgroundEmulator
from taskdeck.engine import Engine, TaskChange
from taskdeck.engine.intake import IntakeError
from taskdeck.models import Origin, TaskStatus

KEY = "engine-test-key"


def request(i: int, directives: str = "", processor: str = "pro", duration: int = 300) -> dict[str, Any]:
    return {
        "input": f"Company number {i}",
        "processor": processor,
        "metadata": {"emulator": f"duration={duration};{directives}".rstrip(";")},
    }


FAULTS = [
    "",
    "drop=300*2",  # mid-event drops
    "drop=1500*3",
    "error=503*2",
    "error=500*1;error=502*1",
    "ratelimit=0.2*2",  # 429 with Retry-After
    "hang=30*1",  # silent stream: our read timeout (1 s) reopens it
    "malformed*2",
    "unknown",
    "keepalive=0.02;crlf",
]


async def test_every_fault_completes_with_each_event_once(
    engine: Engine, recording_emulator: BackgroundEmulator
) -> None:
    tasks = [await engine.submit(KEY, request(i, d)) for i, d in enumerate(FAULTS)]
    await wait_terminal(engine, [t.id for t in tasks])
    for task, directives in zip(tasks, FAULTS, strict=True):
        stored = engine.store.get_task(task.id)
        assert stored is not None
        assert stored.status == TaskStatus.COMPLETED, (directives, stored.status, stored.error)
        assert stored.output is not None and stored.output["type"] == "json"
        assert_exactly_once(engine, recording_emulator.url, task.id)
        own = [e.type for e in engine.store.events(task.id) if e.origin == Origin.TASKDECK]
        assert own[:2] == ["taskdeck.created", "taskdeck.submitted"] and own[-1] == "taskdeck.result_stored"
        if directives.startswith("malformed"):
            assert "taskdeck.malformed_event" in own
        if "drop" in directives or "hang" in directives:
            assert "taskdeck.stream_closed" in own
        info = httpx.get(f"{recording_emulator.url}/_emulator/runs/{stored.run_id}").json()
        assert info["max_open_streams"] == 1
    unknown = stored_types(engine, tasks[FAULTS.index("unknown")].id)
    assert "task_run.emulator_diagnostic" in unknown and "task_run.progress_msg.tool" in unknown


def stored_types(engine: Engine, task_id: str) -> list[str]:
    return [e.type for e in engine.store.events(task_id)]


async def test_stream_lifetime_closes_are_reopened(tmp_path: Path, make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.005, stream_lifetime=100, record_sent=True)  # 0.5 s streams
    engine = Engine(fast_settings(tmp_path / "t.db", emu.url))
    await engine.start()
    try:
        task = await engine.submit(KEY, request(1, duration=600))  # 3 s: about 6 connections
        await wait_terminal(engine, [task.id])
        assert_exactly_once(engine, emu.url, task.id)
        closes = [
            json.loads(e.data)["reason"] for e in engine.store.events(task.id) if e.type == "taskdeck.stream_closed"
        ]
        assert closes.count("ended") >= 3
        assert "taskdeck.retry_scheduled" not in stored_types(engine, task.id)  # a lifetime close is no error
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED
    finally:
        await engine.stop()


async def test_failed_run_stores_the_error(engine: Engine) -> None:
    task = await engine.submit(KEY, request(1, "fail", processor="lite", duration=20))
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.FAILED
    assert stored.error is not None and "fail" in stored.error["message"]


@pytest.mark.parametrize(
    ("api_key", "body", "status"),
    [
        ("emu-invalid-key", request(1), 401),
        ("emu-nocredit-key", request(1), 402),
    ],
)
async def test_upstream_refusals_end_as_rejected(
    engine: Engine, api_key: str, body: dict[str, Any], status: int
) -> None:
    task = await engine.submit(api_key, body)
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.REJECTED
    assert stored.error is not None and stored.error["status"] == status
    assert stored.message and str(status) in stored.message
    assert stored.run_id is None


async def test_create_is_retried_on_429_and_5xx(tmp_path: Path, make_emulator: Any) -> None:
    emu = make_emulator(faults="create:error=503*2;create:ratelimit=0.2*1", record_sent=True)
    engine = Engine(fast_settings(tmp_path / "c.db", emu.url))
    await engine.start()
    try:
        task = await engine.submit(KEY, request(2, processor="lite", duration=20))
        await wait_terminal(engine, [task.id])
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED
        retries = [json.loads(e.data) for e in engine.store.events(task.id) if e.type == "taskdeck.retry_scheduled"]
        assert [r["action"] for r in retries] == ["create", "create", "create"]
        assert retries[-1]["delay"] >= 0.2  # Retry-After honoured
        keys = httpx.get(f"{emu.url}/_emulator/stats").json()["keys"]
        assert [k["runs"] for k in keys.values()] == [1]  # one billed run, not three
        # Each 503 might have created a run: the group was searched for it before every resend.
        assert [k["by_route"]["group_runs"] for k in keys.values()] == [2]
    finally:
        await engine.stop()


async def test_bad_requests_are_refused_before_anything_is_stored(engine: Engine) -> None:
    before = engine.store.count_tasks()
    with pytest.raises(IntakeError) as info:
        await engine.submit(KEY, {"input": "x", "processor": "lite", "metadata": {"k" * 20: 1}})
    assert info.value.status == 422 and "metadata" in info.value.message
    with pytest.raises(IntakeError) as info:
        await engine.submit(KEY, {"input": "x", "processor": "gigantic"})
    assert "processor" in info.value.message
    assert engine.store.count_tasks() == before


async def test_track_adopts_a_run_created_elsewhere(engine: Engine, recording_emulator: BackgroundEmulator) -> None:
    created = httpx.post(
        f"{recording_emulator.url}/v1/tasks/runs",
        json={"input": "adopt me", "processor": "pro", "metadata": {"emulator": "duration=200"}},
        headers={"x-api-key": KEY},
    ).json()
    task = await engine.track(KEY, created["run_id"])
    assert task.run_id == created["run_id"] and task.request["input"] == "adopt me"
    await wait_terminal(engine, [task.id])
    stored = engine.store.get_task(task.id)
    assert stored is not None and stored.status == TaskStatus.COMPLETED and stored.output is not None
    assert_exactly_once(engine, recording_emulator.url, task.id)
    again = await engine.track(KEY, created["run_id"])
    assert again.id == task.id  # adopting twice gives the same task
    with pytest.raises(IntakeError) as info:
        await engine.track(KEY, "trun_" + "0" * 32)
    assert info.value.status == 404


async def test_follow_up_uses_previous_interaction_id(engine: Engine) -> None:
    first = await engine.submit(KEY, request(1, processor="lite", duration=15))
    await wait_terminal(engine, [first.id])
    second = await engine.submit(KEY, request(2, processor="lite", duration=15), follow_up_of=first.id)
    parent = engine.store.get_task(first.id)
    assert parent is not None
    assert second.request["previous_interaction_id"] == parent.interaction_id
    with pytest.raises(IntakeError):
        await engine.submit("another-key", request(3), follow_up_of=first.id)


async def test_resubmit_a_rejected_task(engine: Engine) -> None:
    task = await engine.submit("emu-nocredit-x", request(1, processor="lite", duration=15))
    await wait_terminal(engine, [task.id])
    with pytest.raises(IntakeError):
        await engine.resubmit("someone-else", task.id)
    again = await engine.resubmit("emu-nocredit-x", task.id)
    assert again.status == TaskStatus.PENDING
    await wait_terminal(engine, [task.id])
    events = stored_types(engine, task.id)
    assert events.count("taskdeck.rejected") == 2 and "taskdeck.resubmitted" in events


async def test_polling_fallback_and_back_to_streaming(tmp_path: Path, recording_emulator: BackgroundEmulator) -> None:
    settings = fast_settings(tmp_path / "p.db", recording_emulator.url, stream_failures_before_polling=2, result_wait=0)
    engine = Engine(settings)
    await engine.start()
    try:
        task = await engine.submit(KEY, request(1, "events:error=503*3", duration=400))
        await wait_terminal(engine, [task.id])
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED and stored.output is not None
        types = stored_types(engine, task.id)
        assert "taskdeck.polling" in types
        assert "taskdeck.streaming_resumed" in types, str([t for t in types if t.startswith("taskdeck")])
        assert types.index("taskdeck.polling") < types.index("taskdeck.streaming_resumed")
        assert_exactly_once(engine, recording_emulator.url, task.id)
    finally:
        await engine.stop()


async def test_two_hour_run_with_many_stream_lifetimes(tmp_path: Path, make_emulator: Any) -> None:
    """ultra8x runs last up to 2 h: about 13 connections of 570 s, all stitched together."""
    emu = make_emulator(time_scale=0.001, record_sent=True)  # 7.2 s run, 0.57 s streams
    engine = Engine(fast_settings(tmp_path / "long.db", emu.url))
    await engine.start()
    try:
        task = await engine.submit(KEY, request(1, processor="ultra8x", duration=7200))
        await wait_terminal(engine, [task.id], timeout=120)
        assert_exactly_once(engine, emu.url, task.id)
        connects = stored_types(engine, task.id).count("taskdeck.stream_connected")
        assert connects >= 12
        stored = engine.store.get_task(task.id)
        assert stored is not None and stored.status == TaskStatus.COMPLETED
    finally:
        await engine.stop()


async def test_status_is_polled_when_no_stream_reports_it(tmp_path: Path, make_emulator: Any) -> None:
    """Without events, queued -> running is never pushed: the engine GETs the run once in a while."""
    emu = make_emulator(time_scale=1.0)  # queued for 0.5-3 s, as planned by the emulator
    engine = Engine(fast_settings(tmp_path / "q.db", emu.url, status_poll_after=0.5, stream_read_timeout=30))
    await engine.start()
    try:
        body = {**request(1, processor="lite", duration=4000), "enable_events": False}
        task = await engine.submit(KEY, body)
        with engine.feed.subscribe(task_id=task.id) as sub:
            async with asyncio.timeout(15):
                while True:
                    item = await sub.queue.get()
                    if isinstance(item, TaskChange) and item.changes.get("status") == "running":
                        break
        routes = httpx.get(f"{emu.url}/_emulator/stats?runs=false").json()["keys"]
        (counters,) = routes.values()
        assert counters["by_route"].get("retrieve_run", 0) >= 1
    finally:
        await engine.stop()
