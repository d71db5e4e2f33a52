"""Run-level directives that change what a client can get: ``vanish`` (the run is forgotten) and ``nooutput``."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from helpers import assert_event, assert_response, read_sse
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer

KEY = {"x-api-key": "test-key"}
RUNS = "/v1/tasks/runs"
GROUPS = "/v1/tasks/groups"
EVENT_PATHS = (RUNS + "/{run_id}/events", "/v1beta/tasks/runs/{run_id}/events")
UNKNOWN_RUN = "trun_" + "0" * 32


def create_ok(emu: BackgroundEmulator, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(emu.url + RUNS, json=body, headers=KEY, timeout=30)
    assert resp.status_code == 202, resp.text
    run: dict[str, Any] = resp.json()
    return run


def not_found_shape(resp: httpx.Response) -> tuple[int, str, Any]:
    """What a client can tell from a 404: status, message and detail (the ref_id is random per answer)."""
    error = resp.json()["error"]
    return resp.status_code, error["message"], error["detail"]


def test_vanish_closes_the_open_stream_then_every_request_answers_like_an_unknown_id(make_emulator: Any) -> None:
    # 0.01: the run would last 40 s real and a stream 1000 s; it vanishes after 3 s (time
    # enough to connect first even on a loaded machine).
    emu = make_emulator(time_scale=0.01, stream_lifetime=100_000)
    before_create = time.monotonic()
    run = create_ok(emu, {"input": "x", "processor": "pro", "metadata": {"emulator": "duration=4000;vanish=300"}})
    run_id = run["run_id"]

    read = read_sse(f"{emu.url}{RUNS}/{run_id}/events")
    closed_after = time.monotonic() - before_create
    # The server ended the body cleanly at the vanish instant, long before the run's end.
    assert read.status == 200 and not read.cut
    assert 3.0 <= closed_after < 30
    events = [e.json for e in read.events]
    assert events[0]["type"] == "task_run.state"
    assert any(e["type"].startswith("task_run.progress_msg.") for e in events)
    states = [e for e in events if e["type"] == "task_run.state"]
    assert all(e["run"]["is_active"] for e in states)  # no terminal state was sent
    for event in events:
        assert_event(EVENT_PATHS[0], event)

    # From now on the run is answered exactly like an id that never existed.
    for path in ("", "/input", "/result", "/events"):
        spec_path = RUNS + "/{run_id}" + path
        unknown = httpx.get(f"{emu.url}{RUNS}/{UNKNOWN_RUN}{path}", headers=KEY)
        gone = httpx.get(f"{emu.url}{RUNS}/{run_id}{path}", headers=KEY)
        assert not_found_shape(gone) == not_found_shape(unknown) == (404, "Run id not found", None), path
        assert_response(spec_path, "get", gone)
    beta = read_sse(f"{emu.url}/v1beta/tasks/runs/{run_id}/events")
    assert beta.status == 404 and b"Run id not found" in beta.raw

    # Introspection still knows it.
    info = httpx.get(f"{emu.url}/_emulator/runs/{run_id}")
    assert info.status_code == 200
    assert info.json()["run_id"] == run_id and info.json()["vanished"] is True
    assert info.json()["total_streams"] == 1 and info.json()["open_streams"] == 0  # the 404s opened none


def test_vanish_answers_a_waiting_result_and_the_group_run_with_404(make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.01)
    gid = httpx.post(emu.url + GROUPS, json={}, headers=KEY).json()["taskgroup_id"]
    inputs = [
        {"input": "kept", "processor": "lite", "metadata": {"emulator": "duration=10"}},
        {"input": "lost", "processor": "lite", "metadata": {"emulator": "duration=100000;vanish=200"}},
    ]
    added = httpx.post(f"{emu.url}{GROUPS}/{gid}/runs", json={"inputs": inputs}, headers=KEY)
    assert added.status_code == 200, added.text
    kept, lost = added.json()["run_ids"]

    # A long-poll waiting when the run vanishes gets the 404 then, not the 408 of its 60 s timeout.
    started = time.monotonic()
    waiting = httpx.get(f"{emu.url}{RUNS}/{lost}/result", params={"timeout": 60}, headers=KEY, timeout=70)
    assert time.monotonic() - started < 30
    assert not_found_shape(waiting) == (404, "Run id not found", None)
    assert_response(RUNS + "/{run_id}/result", "get", waiting)

    group_run = GROUPS + "/{taskgroup_id}/runs/{run_id}"
    gone = httpx.get(f"{emu.url}{GROUPS}/{gid}/runs/{lost}", headers=KEY)
    assert not_found_shape(gone) == (404, "Run id not found", None)
    assert_response(group_run, "get", gone)
    other = httpx.get(f"{emu.url}{GROUPS}/{gid}/runs/{kept}", headers=KEY)
    assert other.status_code == 200 and other.json()["run_id"] == kept
    assert_response(group_run, "get", other)


def test_a_run_that_vanishes_before_its_end_sends_no_webhook(make_emulator: Any) -> None:
    received: list[str] = []
    control_seen = threading.Event()

    async def hook(request: Request) -> Response:
        run = (await request.json())["data"]
        received.append(run["metadata"]["name"])
        if run["metadata"]["name"] == "control":
            control_seen.set()
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    with BackgroundServer(app) as hook_server:
        emu = make_emulator(time_scale=0.01)
        webhook = {"url": f"{hook_server.url}/hook"}
        # The lost run would end (and be delivered) 1.5 s before the control run.
        for name, directives in (("lost", "duration=50;vanish=20"), ("control", "duration=200")):
            metadata = {"name": name, "emulator": directives}
            create_ok(emu, {"input": name, "processor": "lite", "webhook": webhook, "metadata": metadata})
        assert control_seen.wait(timeout=30)
    assert received == ["control"]


def test_nooutput_state_events_carry_no_output_but_result_has_it(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "France", "processor": "pro", "metadata": {"emulator": "nooutput"}})
    run_id = run["run_id"]
    live = read_sse(f"{emulator.url}{RUNS}/{run_id}/events")  # from queued to the end
    assert live.status == 200 and not live.cut
    events = [e.json for e in live.events]
    assert events[-1]["type"] == "task_run.state" and events[-1]["run"]["status"] == "completed"
    for path in EVENT_PATHS:
        # After the end, on both prefixes: the leading state and the final state are completed too.
        replay = [e.json for e in read_sse(emulator.url + path.format(run_id=run_id)).events]
        assert replay[0]["run"]["status"] == replay[-1]["run"]["status"] == "completed"
        for event in events + replay:
            assert_event(path, event)
        states = [e for e in events + replay if e["type"] == "task_run.state"]
        assert len(states) >= 3 and all(e["output"] is None for e in states)

    result = httpx.get(f"{emulator.url}{RUNS}/{run_id}/result", headers=KEY, timeout=30)
    assert result.status_code == 200
    assert_response(RUNS + "/{run_id}/result", "get", result)
    output = result.json()["output"]
    assert output["type"] == "json" and output["content"] and output["basis"]
