"""Run endpoints of the emulator over a real socket: bodies, lifecycle, and the event stream."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import jsonschema
import pytest

from helpers import assert_event, assert_response, read_sse
from taskdeck.emulator import BackgroundEmulator

KEY = {"x-api-key": "test-key"}
RUNS = "/v1/tasks/runs"
JSON_SPEC = {
    "output_schema": {
        "type": "json",
        "json_schema": {
            "type": "object",
            "properties": {
                "gdp": {"type": "string", "description": "GDP in USD"},
                "population": {"type": "integer"},
                "growth": {"type": "number"},
                "is_g7": {"type": "boolean"},
                "currency": {"type": "string", "enum": ["EUR", "USD"]},
                "leaders": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "since": {"type": ["integer", "null"]}},
                        "required": ["name", "since"],
                        "additionalProperties": False,
                    },
                },
                "capital": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "population": {"type": ["number", "null"]}},
                    "required": ["name", "population"],
                    "additionalProperties": False,
                },
                "motto": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "required": ["gdp", "population", "growth", "is_g7", "currency", "leaders", "capital", "motto"],
            "additionalProperties": False,
        },
    }
}


def create(emu: BackgroundEmulator, body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(emu.url + RUNS, json=body, headers={**KEY, **(headers or {})}, timeout=30)


def create_ok(emu: BackgroundEmulator, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = create(emu, body, headers)
    assert resp.status_code == 202, resp.text
    run: dict[str, Any] = resp.json()
    return run


def result(emu: BackgroundEmulator, run_id: str, timeout: int = 60) -> httpx.Response:
    return httpx.get(f"{emu.url}{RUNS}/{run_id}/result", params={"timeout": timeout}, headers=KEY, timeout=timeout + 10)


def test_create_returns_202_queued_run_matching_spec(emulator: BackgroundEmulator) -> None:
    resp = create(emulator, {"input": "France GDP", "processor": "core", "metadata": {"team": "x", "n": 3}})
    assert resp.status_code == 202
    assert_response(RUNS, "post", resp)
    run = resp.json()
    assert re.fullmatch(r"trun_[0-9a-f]{32}", run["run_id"])
    assert run["interaction_id"] == run["run_id"]
    assert run["status"] == "queued" and run["is_active"] is True
    assert run["metadata"] == {"team": "x", "n": 3}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", run["created_at"])
    assert list(run) == [
        "run_id", "interaction_id", "status", "is_active", "warnings", "error",
        "processor", "metadata", "taskgroup_id", "created_at", "modified_at",
    ]  # fmt: skip
    # Bodies are compact JSON, as Parallel sends them.
    assert resp.text == json.dumps(run, separators=(",", ":"), ensure_ascii=False)


def test_retrieve_and_input_echo(emulator: BackgroundEmulator) -> None:
    body = {
        "input": {"country": "France"},
        "processor": "base",
        "task_spec": JSON_SPEC,
        "source_policy": {"include_domains": ["worldbank.org"], "exclude_domains": [], "after_date": "2024-01-01"},
        "enable_events": True,
        "previous_interaction_id": "trun_0123",
    }
    run = create_ok(emulator, body)
    got = httpx.get(f"{emulator.url}{RUNS}/{run['run_id']}", headers=KEY)
    assert got.status_code == 200
    assert_response(RUNS + "/{run_id}", "get", got)
    assert got.json()["run_id"] == run["run_id"]
    echo = httpx.get(f"{emulator.url}{RUNS}/{run['run_id']}/input", headers=KEY)
    assert echo.status_code == 200
    assert_response(RUNS + "/{run_id}/input", "get", echo)
    for key, value in body.items():
        assert echo.json()[key] == value


def test_json_result_validates_against_the_given_schema(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "France", "processor": "lite", "task_spec": JSON_SPEC})
    resp = result(emulator, run["run_id"])
    assert resp.status_code == 200
    assert_response(RUNS + "/{run_id}/result", "get", resp)
    out = resp.json()["output"]
    assert out["type"] == "json"
    jsonschema.validate(out["content"], JSON_SPEC["output_schema"]["json_schema"])
    assert [b["field"] for b in out["basis"]] == list(out["content"])
    for basis in out["basis"]:
        assert basis["confidence"] in ("low", "medium", "high")
        assert basis["reasoning"] and basis["citations"]
        assert all(c["url"].startswith("https://") and c["title"] and c["excerpts"] for c in basis["citations"])
    assert resp.json()["run"]["status"] == "completed"


def test_same_seed_and_input_give_the_same_output(emulator: BackgroundEmulator) -> None:
    body = {"input": "Germany", "processor": "lite", "task_spec": JSON_SPEC}
    a = result(emulator, create_ok(emulator, body)["run_id"]).json()["output"]
    b = result(emulator, create_ok(emulator, body)["run_id"]).json()["output"]
    assert a["content"] == b["content"]
    other = result(emulator, create_ok(emulator, {**body, "input": "Spain"})["run_id"]).json()["output"]
    assert other["content"] != a["content"]


def test_text_result_is_markdown_with_one_output_basis(emulator: BackgroundEmulator) -> None:
    spec = {"output_schema": "A short market report"}
    run = create_ok(emulator, {"input": "EV market in Norway", "processor": "lite", "task_spec": spec})
    resp = result(emulator, run["run_id"])
    assert_response(RUNS + "/{run_id}/result", "get", resp)
    out = resp.json()["output"]
    assert out["type"] == "text" and out["content"].startswith("# ")
    assert [b["field"] for b in out["basis"]] == ["output"]
    assert "output_schema" not in out


def test_auto_result_fills_output_schema_and_dotted_basis(emulator: BackgroundEmulator) -> None:
    run = create_ok(
        emulator,
        {"input": "Parallel Web Systems", "processor": "lite", "task_spec": {"output_schema": {"type": "auto"}}},
    )
    out = result(emulator, run["run_id"]).json()["output"]
    assert out["type"] == "json" and isinstance(out["output_schema"], dict)
    jsonschema.validate(out["content"], out["output_schema"])
    fields = [b["field"] for b in out["basis"]]
    assert "key_facts.0" in fields


def test_no_task_spec_means_auto(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "Parallel Web Systems", "processor": "lite"})
    out = result(emulator, run["run_id"]).json()["output"]
    assert out["type"] == "json" and out["output_schema"] is not None


def test_result_times_out_with_408_while_active(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "x", "processor": "lite", "metadata": {"emulator": "duration=20000"}})
    resp = result(emulator, run["run_id"], timeout=0)
    assert resp.status_code == 408
    assert_response(RUNS + "/{run_id}/result", "get", resp)
    assert resp.json()["error"]["message"] == "Request timed out; run still active"


def test_failed_run_has_error_and_result_404(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "x [emulator:fail]", "processor": "lite", "enable_events": True})
    resp = result(emulator, run["run_id"])
    assert resp.status_code == 404
    assert_response(RUNS + "/{run_id}/result", "get", resp)
    got = httpx.get(f"{emulator.url}{RUNS}/{run['run_id']}", headers=KEY).json()
    assert got["status"] == "failed" and got["is_active"] is False
    assert got["error"]["message"] and got["error"]["ref_id"]
    events = read_sse(f"{emulator.url}{RUNS}/{run['run_id']}/events").events
    final = events[-1].json
    assert final["type"] == "task_run.state" and final["run"]["status"] == "failed" and final["output"] is None


def test_failure_by_metadata_directive(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "x", "processor": "lite", "metadata": {"emulator": "fail"}})
    assert result(emulator, run["run_id"]).status_code == 404


@pytest.mark.parametrize("path", [RUNS + "/{run_id}/events", "/v1beta/tasks/runs/{run_id}/events"])
def test_event_stream_whole_life(emulator: BackgroundEmulator, path: str) -> None:
    run = create_ok(emulator, {"input": "France", "processor": "pro", "task_spec": JSON_SPEC})
    read = read_sse(emulator.url + path.format(run_id=run["run_id"]))
    assert read.status == 200 and not read.cut
    events = [e.json for e in read.events]
    assert events[0]["type"] == "task_run.state"
    assert events[-1]["type"] == "task_run.state"
    assert events[-1]["run"]["status"] == "completed" and events[-1]["output"]["type"] == "json"
    kinds = {e["type"] for e in events}
    for kind in ("plan", "search", "tool_call", "result", "exec_status"):
        assert f"task_run.progress_msg.{kind}" in kinds
    assert "task_run.progress_stats" in kinds
    for sse, event in zip(read.events, events, strict=True):
        assert sse.event == event["type"]  # the event: line repeats the JSON type
        assert sse.data == json.dumps(event, separators=(",", ":"), ensure_ascii=False)
        assert_event(path, event)
    meters = [e["progress_meter"] for e in events if e["type"] == "task_run.progress_stats"]
    assert meters == sorted(meters) and meters[-1] == 100.0
    considered = [e["source_stats"]["num_sources_considered"] for e in events if e["type"] == "task_run.progress_stats"]
    assert considered == sorted(considered)
    stamps = [e["timestamp"] for e in events if e["type"].startswith("task_run.progress_msg.")]
    assert stamps == sorted(stamps)
    # Framing: nothing but event and data lines, LF endings, no id or retry lines.
    assert b"\r" not in read.raw and b"\nid:" not in read.raw and b"retry:" not in read.raw


def test_reconnect_replays_history_and_only_latest_stats(make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.01)
    run = create_ok(emu, {"input": "France", "processor": "pro", "metadata": {"emulator": "duration=200"}})
    url = f"{emu.url}{RUNS}/{run['run_id']}/events"
    # First connection: read until several messages have arrived, then leave.
    seen: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client, client.stream("GET", url, headers=KEY) as resp:
        buffer = ""
        for text in resp.iter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                seen.append(json.loads(block.split("data: ", 1)[1]))
            if sum(e["type"] == "task_run.progress_stats" for e in seen) >= 3:
                break
    first_msgs = [e for e in seen if e["type"].startswith("task_run.progress_msg.")]
    first_stats = [e for e in seen if e["type"] == "task_run.progress_stats"]
    # Second connection: the replay, then live events to the end.
    second = read_sse(url)
    events = [e.json for e in second.events]
    assert events[0]["type"] == "task_run.state" and events[0]["run"]["status"] == "running"
    replay_msgs = [e for e in events if e["type"].startswith("task_run.progress_msg.")]
    assert replay_msgs[: len(first_msgs)] == first_msgs  # full history, original timestamps
    timeline = httpx.get(f"{emu.url}/_emulator/runs/{run['run_id']}").json()["timeline"]
    planned_stats = [json.loads(t["data"]) for t in timeline if t["type"] == "task_run.progress_stats"]
    # Between the leading state and the first live event there is exactly one stats snapshot.
    first_stats_index = next(i for i, e in enumerate(events) if e["type"] == "task_run.progress_stats")
    replayed = events[first_stats_index]
    assert replayed in planned_stats
    assert planned_stats.index(replayed) >= planned_stats.index(first_stats[-1])
    n_history = len([t for t in timeline if t["type"].startswith("task_run.progress_msg.")])
    assert n_history > len(first_msgs)


def test_stream_closes_after_its_lifetime(make_emulator: Any) -> None:
    emu = make_emulator(time_scale=0.01, stream_lifetime=100)  # 1 s real
    run = create_ok(emu, {"input": "x", "processor": "ultra", "metadata": {"emulator": "duration=3000"}})
    started = time.monotonic()
    read = read_sse(f"{emu.url}{RUNS}/{run['run_id']}/events")
    took = time.monotonic() - started
    assert not read.cut  # a clean close, not a drop
    assert 0.9 <= took < 10
    assert all(e.json["run"]["is_active"] for e in read.events if e.json["type"] == "task_run.state")
    stats = httpx.get(f"{emu.url}/_emulator/runs/{run['run_id']}").json()
    assert stats["open_streams"] == 0 and stats["total_streams"] == 1


def test_connecting_after_completion_replays_trace_and_final_state(emulator: BackgroundEmulator) -> None:
    run = create_ok(emulator, {"input": "France", "processor": "pro"})
    assert result(emulator, run["run_id"]).status_code == 200
    events = [e.json for e in read_sse(f"{emulator.url}{RUNS}/{run['run_id']}/events").events]
    assert events[0]["type"] == "task_run.state" and events[0]["run"]["status"] == "completed"
    assert events[0]["output"] is not None
    assert sum(e["type"] == "task_run.progress_stats" for e in events) == 1
    assert events[-2]["type"] == "task_run.progress_stats" and events[-2]["progress_meter"] == 100.0
    assert events[-1]["type"] == "task_run.state" and events[-1]["output"] == events[0]["output"]
    assert (events[-1]["run"]["status"], events[-1]["run"]["modified_at"]) == (
        events[0]["run"]["status"],
        events[0]["run"]["modified_at"],
    )


@pytest.mark.parametrize(("processor", "enable", "expect_messages"), [
    ("lite", None, False), ("base", False, False), ("lite", True, True), ("pro", None, True),
    ("pro-fast", None, True), ("ultra", False, False),
])  # fmt: skip
def test_events_default_by_processor(
    emulator: BackgroundEmulator, processor: str, enable: bool | None, expect_messages: bool
) -> None:
    body: dict[str, Any] = {"input": "x", "processor": processor, "metadata": {"emulator": "duration=60"}}
    if enable is not None:
        body["enable_events"] = enable
    run = create_ok(emulator, body)
    events = [e.json for e in read_sse(f"{emulator.url}{RUNS}/{run['run_id']}/events").events]
    has_messages = any(e["type"].startswith("task_run.progress_msg.") for e in events)
    assert has_messages is expect_messages
    assert events[0]["type"] == events[-1]["type"] == "task_run.state"
    assert events[-1]["run"]["status"] == "completed"


def test_durations_follow_the_processor_range(make_emulator: Any) -> None:
    emu = make_emulator(time_scale=1.0)
    for processor, lo, hi in (("lite", 10, 60), ("core", 60, 300), ("ultra8x", 300, 7200), ("pro-fast", 30, 300)):
        for i in range(5):
            run = create_ok(emu, {"input": f"q{i}", "processor": processor})
            info = httpx.get(f"{emu.url}/_emulator/runs/{run['run_id']}").json()
            assert lo - 1 <= info["ends_in_seconds"] <= hi


def test_warnings_for_soft_spec_problems(emulator: BackgroundEmulator) -> None:
    spec = {
        "output_schema": {
            "type": "json",
            "json_schema": {"type": "object", "properties": {"ceo": {"type": "string"}, "sources": {"type": "string"}}},
        },
        "input_schema": {"type": "json", "json_schema": {"type": "object", "required": ["company"]}},
    }
    run = create_ok(emulator, {"input": {"name": "x"}, "processor": "lite", "task_spec": spec})
    kinds = {w["type"] for w in run["warnings"]}
    assert kinds == {"spec_validation_warning", "input_validation_warning"}
    text = " ".join(w["message"] for w in run["warnings"])
    assert "not required" in text and "additionalProperties" in text and "'sources'" in text


def test_mcp_tool_calls_in_output(emulator: BackgroundEmulator) -> None:
    servers = [
        {"type": "url", "url": "https://mcp.example.com", "name": "one", "allowed_tools": ["lookup"]},
        {"type": "url", "url": "https://mcp2.example.com", "name": "two"},
    ]
    run = create_ok(emulator, {"input": "x", "processor": "core", "mcp_servers": servers})
    calls = result(emulator, run["run_id"]).json()["output"]["mcp_tool_calls"]
    assert len(calls) == 1  # core calls at most one tool
    assert calls[0]["server_name"] == "one" and calls[0]["tool_name"] == "lookup"
    assert json.loads(calls[0]["arguments"])
