"""Task groups: create, add runs, status, resumable events, runs stream."""

from __future__ import annotations

from typing import Any

import httpx

from helpers import assert_event, assert_response, read_sse
from taskdeck.emulator import BackgroundEmulator

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
