"""Task groups: create, add runs, status, resumable events, runs stream."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.types import Message

from helpers import assert_event, assert_response, read_sse
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.directives import parse_directives
from taskdeck.emulator.group import Group, parse_event_id
from taskdeck.emulator.run import plan_run
from taskdeck.emulator.sse import SseWriter
from taskdeck.emulator.streams import stream_group_events
from taskdeck.processors import get_processor

KEY = {"x-api-key": "test-key"}
GROUPS = "/v1/tasks/groups"


def new_group(emu: BackgroundEmulator, prefix: str = "/v1") -> str:
    resp = httpx.post(f"{emu.url}{prefix}/tasks/groups", json={"metadata": {"batch": "b1"}}, headers=KEY)
    assert resp.status_code == 200, resp.text
    assert_response(GROUPS, "post", resp)
    assert resp.json()["metadata"] == {"batch": "b1"}
    gid: str = resp.json()["taskgroup_id"]
    return gid


def add(emu: BackgroundEmulator, gid: str, inputs: list[dict[str, Any]], **extra: Any) -> httpx.Response:
    return httpx.post(f"{emu.url}{GROUPS}/{gid}/runs", json={"inputs": inputs, **extra}, headers=KEY, timeout=30)


def test_group_lifecycle_with_default_spec(emulator: BackgroundEmulator) -> None:
    gid = new_group(emulator)
    spec = {
        "output_schema": {"type": "json", "json_schema": {"type": "object", "properties": {"ceo": {"type": "string"}}}}
    }
    resp = add(
        emulator, gid, [{"input": f"company {i}", "processor": "lite"} for i in range(3)], default_task_spec=spec
    )
    assert resp.status_code == 200, resp.text
    assert_response(GROUPS + "/{taskgroup_id}/runs", "post", resp)
    body = resp.json()
    assert len(body["run_ids"]) == 3 and body["run_cursor"] is None and body["event_cursor"] is None
    assert body["status"]["num_task_runs"] == 3 and body["status"]["is_active"] is True

    read = read_sse(f"{emulator.url}{GROUPS}/{gid}/events")
    events = [e.json for e in read.events]
    for event in events:
        assert_event(GROUPS + "/{taskgroup_id}/events", event)
    states = [e for e in events if e["type"] == "task_run.state"]
    assert sorted(e["run"]["run_id"] for e in states) == sorted(body["run_ids"])
    assert all(e["event_id"] and e["output"] is None and e["run"]["taskgroup_id"] == gid for e in states)
    final = events[-1]
    assert final["type"] == "task_group_status" and final["status"]["is_active"] is False
    assert final["status"]["task_run_status_counts"] == {"completed": 3}

    got = httpx.get(f"{emulator.url}{GROUPS}/{gid}", headers=KEY)
    assert_response(GROUPS + "/{taskgroup_id}", "get", got)
    assert got.json()["status"]["num_task_runs"] == 3

    run_id = body["run_ids"][0]
    one = httpx.get(f"{emulator.url}{GROUPS}/{gid}/runs/{run_id}", headers=KEY)
    assert one.status_code == 200
    assert_response(GROUPS + "/{taskgroup_id}/runs/{run_id}", "get", one)
    result = httpx.get(f"{emulator.url}/v1/tasks/runs/{run_id}/result", headers=KEY).json()
    assert set(result["output"]["content"]) == {"ceo"}  # the default spec applied


def test_group_events_resume_from_last_event_id(emulator: BackgroundEmulator) -> None:
    gid = new_group(emulator)
    add(emulator, gid, [{"input": f"q{i}", "processor": "lite"} for i in range(4)])
    events = [e.json for e in read_sse(f"{emulator.url}{GROUPS}/{gid}/events").events]
    states = [e for e in events if e["type"] == "task_run.state"]
    cursor = states[1]["event_id"]
    resumed = [e.json for e in read_sse(f"{emulator.url}{GROUPS}/{gid}/events?last_event_id={cursor}").events]
    resumed_ids = [e["run"]["run_id"] for e in resumed if e["type"] == "task_run.state"]
    assert resumed_ids == [e["run"]["run_id"] for e in states[2:]]


def test_second_batch_cursors_point_at_the_new_runs(emulator: BackgroundEmulator) -> None:
    gid = new_group(emulator)
    first = add(emulator, gid, [{"input": "a", "processor": "lite"}]).json()
    read_sse(f"{emulator.url}{GROUPS}/{gid}/events")  # wait for the first batch to finish
    second = add(emulator, gid, [{"input": "b", "processor": "lite"}, {"input": "c", "processor": "lite"}]).json()
    assert second["run_cursor"] and second["event_cursor"]
    runs = read_sse(f"{emulator.url}{GROUPS}/{gid}/runs?last_event_id={second['run_cursor']}").events
    assert [e.json["run"]["run_id"] for e in runs] == second["run_ids"]
    evs = read_sse(f"{emulator.url}{GROUPS}/{gid}/events?last_event_id={second['event_cursor']}").events
    ids = [e.json["run"]["run_id"] for e in evs if e.json["type"] == "task_run.state"]
    assert sorted(ids) == sorted(second["run_ids"]) and first["run_ids"][0] not in ids


def test_group_runs_stream_filters_and_includes(emulator: BackgroundEmulator) -> None:
    gid = new_group(emulator)
    ids = add(
        emulator,
        gid,
        [
            {"input": "done", "processor": "lite"},
            {"input": "slow", "processor": "lite", "metadata": {"emulator": "duration=100000"}},
        ],
    ).json()["run_ids"]
    httpx.get(f"{emulator.url}/v1/tasks/runs/{ids[0]}/result", headers=KEY, timeout=30)
    url = f"{emulator.url}{GROUPS}/{gid}/runs"
    everything = [e.json for e in read_sse(url).events]
    assert [e["run"]["run_id"] for e in everything] == ids
    assert all(e["input"] is None and e["output"] is None for e in everything)
    for event in everything:
        assert_event(GROUPS + "/{taskgroup_id}/runs", event)
    done = [e.json for e in read_sse(url + "?status=completed&include_input=true&include_output=true").events]
    assert [e["run"]["run_id"] for e in done] == [ids[0]]
    assert done[0]["input"]["input"] == "done" and done[0]["output"]["type"] == "json"
    running = [e.json for e in read_sse(url + "?status=running&include_output=true").events]
    assert [e["run"]["run_id"] for e in running] == [ids[1]] and running[0]["output"] is None


def test_group_limits_and_validation(emulator: BackgroundEmulator) -> None:
    gid = new_group(emulator)
    too_many = add(emulator, gid, [{"input": "x", "processor": "lite"}] * 1001)
    assert too_many.status_code == 422
    assert_response(GROUPS + "/{taskgroup_id}/runs", "post", too_many)
    assert too_many.json()["detail"][0]["loc"] == ["body", "inputs"]
    assert add(emulator, gid, [{"input": "x", "processor": "lite"}] * 1000).status_code == 200
    bad = add(
        emulator, gid, [{"input": "x", "processor": "lite"}, {"processor": "lite"}, {"input": "y", "processor": "x"}]
    )
    assert bad.status_code == 422
    locs = [d["loc"] for d in bad.json()["detail"]]
    assert ["body", "inputs", 1, "input"] in locs and ["body", "inputs", 2, "processor"] in locs
    unknown = httpx.get(f"{emulator.url}{GROUPS}/tgrp_nope", headers=KEY)
    assert unknown.status_code == 404
    other_key = httpx.get(f"{emulator.url}{GROUPS}/{gid}", headers={"x-api-key": "someone-else"})
    assert other_key.status_code == 404
    bad_cursor = httpx.get(f"{emulator.url}{GROUPS}/{gid}/events?last_event_id=garbage", headers=KEY)
    assert bad_cursor.status_code == 422


def test_v1beta_group_paths(emulator: BackgroundEmulator) -> None:
    gid = new_group(emulator, prefix="/v1beta")
    resp = httpx.post(
        f"{emulator.url}/v1beta/tasks/groups/{gid}/runs",
        json={"inputs": [{"input": "x", "processor": "lite"}]},
        headers=KEY,
    )
    assert resp.status_code == 200
    assert httpx.get(f"{emulator.url}/v1beta/tasks/groups/{gid}", headers=KEY).json()["status"]["num_task_runs"] == 1


def test_group_events_stream_closes_after_timeout(make_emulator: Any) -> None:
    emu = make_emulator()
    gid = new_group(emu)
    add(emu, gid, [{"input": "x", "processor": "lite", "metadata": {"emulator": "duration=1000000"}}])
    read = read_sse(f"{emu.url}{GROUPS}/{gid}/events?timeout=0.5")
    assert not read.cut
    assert [e.json["type"] for e in read.events] == ["task_group_status"]


class SlowClientWriter(SseWriter):
    """An SSE writer whose every event takes ``delay`` seconds to go out (a client reading slowly)."""

    def __init__(self, delay: float) -> None:
        async def send(message: Message) -> None:
            pass

        async def receive() -> Message:
            await asyncio.Event().wait()  # the client never leaves
            return {"type": "http.disconnect"}

        super().__init__(send, receive)
        self.delay = delay
        self.sent: list[dict[str, Any]] = []

    async def event(self, event_type: str, data: str) -> bool:
        await asyncio.sleep(self.delay)
        self.sent.append(json.loads(data))
        return True


def test_group_events_reach_a_slow_client_in_full() -> None:
    """Every completion is sent, even when the group ends while the stream is still writing a batch.

    The stream used to stop as soon as the status read inactive, so runs that ended after a batch was
    taken, while a slow client held up its writes, were never sent (the benchmark lost 8,000 of 10,000).
    """
    group = Group("tgrp_slow", "o", None, created_wall=datetime.now(UTC))
    processor = get_processor("lite")
    assert processor is not None
    for i in range(12):
        group.runs.append(
            plan_run(
                run_id=f"trun_{i}",
                owner="o",
                processor=processor,
                request={"input": f"q{i}", "metadata": {"row": i}},
                warnings=[],
                directives=parse_directives(f"duration={0.05 + 0.02 * i}"),
                seed=0,
                time_scale=1.0,
                taskgroup_id=group.taskgroup_id,
            )
        )
    writer = SlowClientWriter(delay=0.03)  # a completion and its status take 0.06 s: the stream falls behind
    asyncio.run(stream_group_events(writer, group, None, lifetime=30.0))
    states = [e for e in writer.sent if e["type"] == "task_run.state"]
    assert sorted(e["run"]["run_id"] for e in states) == sorted(f"trun_{i}" for i in range(12))  # each once
    assert writer.sent[-1]["type"] == "task_group_status" and writer.sent[-1]["status"]["is_active"] is False
    ids = [e["event_id"] for e in writer.sent]
    keys = [key for key in map(parse_event_id, ids) if key is not None]
    # In event-id order, so resuming from any of them is a comparison.
    assert len(keys) == len(ids) and keys == sorted(keys)


def test_runs_stream_finds_batches_by_their_tags(emulator: BackgroundEmulator) -> None:
    """What Taskdeck does after a crash (contract §9): list the runs after a batch's ``run_cursor`` and match
    them by their metadata tags; every ``event_id`` of the runs stream resumes right after its run."""
    gid = new_group(emulator)
    sizes = [3, 2, 4]
    answers = []
    for b, size in enumerate(sizes):
        inputs = [
            {"input": f"b{b} r{i}", "processor": "lite", "metadata": {"taskdeck_id": f"tok-{b}-{i}", "row": i}}
            for i in range(size)
        ]
        resp = add(emulator, gid, inputs)
        assert resp.status_code == 200, resp.text
        assert_response(GROUPS + "/{taskgroup_id}/runs", "post", resp)
        answers.append(resp.json())
    assert answers[0]["run_cursor"] is None and answers[0]["event_cursor"] is None  # the group's first batch
    url = f"{emulator.url}{GROUPS}/{gid}/runs"
    for b in (1, 2):
        listed = [e.json for e in read_sse(f"{url}?last_event_id={answers[b]['run_cursor']}&include_input=true").events]
        later = [rid for a in answers[b:] for rid in a["run_ids"]]
        assert [e["run"]["run_id"] for e in listed] == later  # these runs and the later ones, in order
        by_tag = {e["run"]["metadata"]["taskdeck_id"]: e for e in listed}
        for i, run_id in enumerate(answers[b]["run_ids"]):
            event = by_tag[f"tok-{b}-{i}"]
            assert event["run"]["run_id"] == run_id and event["run"]["taskgroup_id"] == gid
            assert event["input"]["input"] == f"b{b} r{i}"
            assert event["input"]["metadata"] == {"taskdeck_id": f"tok-{b}-{i}", "row": i}
            assert event["output"] is None  # not asked for
    everything = [e.json for e in read_sse(url).events]
    assert [e["run"]["run_id"] for e in everything] == [rid for a in answers for rid in a["run_ids"]]
    for k, event in enumerate(everything):
        assert event["input"] is None
        rest = [e.json["run"]["run_id"] for e in read_sse(f"{url}?last_event_id={event['event_id']}").events]
        assert rest == [e["run"]["run_id"] for e in everything[k + 1 :]]
    # A status filter and a cursor together: only the later runs with that status.
    read_sse(f"{emulator.url}{GROUPS}/{gid}/events")  # returns once every run has ended
    done = read_sse(f"{url}?status=completed&last_event_id={answers[2]['run_cursor']}").events
    assert [e.json["run"]["run_id"] for e in done] == answers[2]["run_ids"]
    assert read_sse(f"{url}?status=running").events == []
    bad = httpx.get(f"{url}?status=finished", headers=KEY)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "status"]
