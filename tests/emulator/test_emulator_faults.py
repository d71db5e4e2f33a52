"""Each fault the emulator can inject, per request, per run and globally."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from helpers import parse_sse, read_sse
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.streams import UNKNOWN_EVENT_TYPE, UNKNOWN_MSG_KIND

KEY = {"x-api-key": "test-key"}
RUNS = "/v1/tasks/runs"


def create(emu: BackgroundEmulator, *, directives: str = "", processor: str = "pro", duration: int = 200) -> str:
    meta = {"emulator": f"duration={duration};{directives}".rstrip(";")}
    resp = httpx.post(emu.url + RUNS, json={"input": "x", "processor": processor, "metadata": meta}, headers=KEY)
    assert resp.status_code == 202, resp.text
    run_id: str = resp.json()["run_id"]
    return run_id


def events_url(emu: BackgroundEmulator, run_id: str) -> str:
    return f"{emu.url}{RUNS}/{run_id}/events"


def test_drop_cuts_the_body_mid_event_after_n_bytes(emulator: BackgroundEmulator) -> None:
    # A long run: a run already over (a loaded machine connecting late) would lead with a
    # state carrying the output, longer than the 700 bytes before the cut.
    run_id = create(emulator, duration=5000)
    read = read_sse(events_url(emulator, run_id), headers={"x-emulator": "drop=700"})
    assert read.cut
    assert len(read.raw) == 700
    assert not read.raw.endswith(b"\n\n")  # mid-event
    assert parse_sse(read.raw)[0].json["type"] == "task_run.state"  # whole events before the cut


def test_run_level_fault_with_count_applies_to_first_connections_only(emulator: BackgroundEmulator) -> None:
    run_id = create(emulator, directives="drop=300*2")
    assert read_sse(events_url(emulator, run_id)).cut
    assert read_sse(events_url(emulator, run_id)).cut
    third = read_sse(events_url(emulator, run_id))
    assert not third.cut and third.events[-1].json["run"]["status"] == "completed"
    stats = httpx.get(f"{emulator.url}/_emulator/runs/{run_id}").json()
    assert stats["total_streams"] == 3 and stats["max_open_streams"] == 1 and stats["open_streams"] == 0


@pytest.mark.parametrize("code", [500, 502, 503])
def test_error_status_on_connect(emulator: BackgroundEmulator, code: int) -> None:
    run_id = create(emulator)
    read = read_sse(events_url(emulator, run_id), headers={"x-emulator": f"error={code}"})
    assert read.status == code
    assert json.loads(read.raw)["type"] == "error"


def test_error_with_probability_is_seeded(make_emulator: Any) -> None:
    outcomes = []
    for _ in range(2):
        emu = make_emulator(seed=7, faults="get:error=503%0.5")
        run_id = create(emu)
        codes = [httpx.get(f"{emu.url}{RUNS}/{run_id}", headers=KEY).status_code for _ in range(40)]
        outcomes.append(codes)
        assert 5 <= codes.count(503) <= 35 and codes.count(200) + codes.count(503) == 40
    assert outcomes[0] == outcomes[1]  # same seed, same draws


def test_ratelimit_fault_has_retry_after(emulator: BackgroundEmulator) -> None:
    run_id = create(emulator)
    read = read_sse(events_url(emulator, run_id), headers={"x-emulator": "ratelimit=2"})
    assert read.status == 429
    resp = httpx.get(events_url(emulator, run_id), headers={**KEY, "x-emulator": "ratelimit=2"})
    assert resp.headers["retry-after"] == "2"


def test_create_target_faults(emulator: BackgroundEmulator) -> None:
    body = {"input": "x", "processor": "lite"}
    resp = httpx.post(emulator.url + RUNS, json=body, headers={**KEY, "x-emulator": "create:ratelimit=1"})
    assert resp.status_code == 429
    resp = httpx.post(emulator.url + RUNS, json=body, headers={**KEY, "x-emulator": "events:error=503"})
    assert resp.status_code == 202  # an events fault does not touch a create


def test_hang_sends_headers_then_nothing(emulator: BackgroundEmulator) -> None:
    run_id = create(emulator)
    headers = {**KEY, "x-emulator": "hang=3"}
    with (
        httpx.Client(timeout=httpx.Timeout(5.0, read=0.3)) as client,
        client.stream("GET", events_url(emulator, run_id), headers=headers) as resp,
    ):
        assert resp.status_code == 200
        with pytest.raises(httpx.ReadTimeout):
            for _ in resp.iter_raw():
                pass
    started = time.monotonic()
    read = read_sse(events_url(emulator, run_id), headers={"x-emulator": "hang=0.5"})
    assert read.raw == b"" and not read.cut and time.monotonic() - started >= 0.5


def test_malformed_line_then_the_stream_goes_on(emulator: BackgroundEmulator) -> None:
    run_id = create(emulator, processor="lite", duration=30)
    read = read_sse(events_url(emulator, run_id), headers={"x-emulator": "malformed"})
    bad = [e for e in read.events if not _is_json(e.data)]
    assert len(bad) == 1
    good = [e.json for e in read.events if _is_json(e.data)]
    assert good[0]["type"] == "task_run.state" and good[-1]["run"]["status"] == "completed"


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def test_unknown_event_type_and_message_kind_are_stable_across_connections(emulator: BackgroundEmulator) -> None:
    run_id = create(emulator, directives="unknown")
    first = [e.json for e in read_sse(events_url(emulator, run_id)).events]
    second = [e.json for e in read_sse(events_url(emulator, run_id)).events]
    for events in (first, second):
        types = [e["type"] for e in events]
        assert UNKNOWN_EVENT_TYPE in types and UNKNOWN_MSG_KIND in types
    pick = [e for e in first if e["type"] in (UNKNOWN_EVENT_TYPE, UNKNOWN_MSG_KIND)]
    assert pick == [e for e in second if e["type"] in (UNKNOWN_EVENT_TYPE, UNKNOWN_MSG_KIND)]


def test_keepalive_comments_and_crlf(make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.01)
    run_id = create(emu, processor="lite", duration=100)  # 1 s real, few events
    read = read_sse(events_url(emu, run_id), headers={"x-emulator": "keepalive=0.05;crlf"})
    assert b": ping\r\n\r\n" in read.raw
    assert b"\n" not in read.raw.replace(b"\r\n", b"")
    events = [e.json for e in parse_sse(read.raw)]
    assert events[0]["type"] == "task_run.state" and events[-1]["run"]["status"] == "completed"


def test_global_faults_apply_to_every_run(make_emulator: Any) -> None:
    emu = make_emulator(faults="drop=250*1")
    a = create(emu)
    b = create(emu)
    assert read_sse(events_url(emu, a)).cut  # the one global drop
    assert not read_sse(events_url(emu, b)).cut


def test_xss_directive_puts_payloads_in_messages_and_output(emulator: BackgroundEmulator) -> None:
    run_id = create(emulator, directives="xss", processor="pro")
    events = [e.json for e in read_sse(events_url(emulator, run_id)).events]
    messages = " ".join(e.get("message", "") for e in events)
    assert "<script>" in messages
    output = events[-1]["output"]
    assert "<script>" in json.dumps(output)
    urls = [c["url"] for b in output["basis"] for c in b["citations"]]
    assert any(u.startswith("javascript:") for u in urls)
