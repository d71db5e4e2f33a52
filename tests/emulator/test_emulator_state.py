"""The state file: runs and groups survive an emulator restart, on real loopback sockets."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import read_sse
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings

FAST_SCALE = 0.002  # as tests/conftest.py
KEY = {"x-api-key": "state-key"}
RUNS = "/v1/tasks/runs"
GROUPS = "/v1/tasks/groups"
# At FAST_SCALE (0.002) a run of 100 emulated seconds lasts 0.2 s, one of 2000 lasts 4 s: the long run is
# still running when the first emulator stops (checked, not assumed) and ends soon after the restart.
SHORT, LONG = 100, 2000

TEXT_RUN = {
    "input": "Write a short profile of the Eiffel Tower",
    "processor": "core",
    "enable_events": True,
    "task_spec": {"output_schema": {"type": "text", "description": "a Markdown profile"}},
    "metadata": {"emulator": f"duration={SHORT}", "team": "a"},
}
JSON_RUN = {
    "input": {"company": "Parallel"},
    "processor": "lite",
    "enable_events": True,
    "task_spec": {
        "output_schema": {
            "type": "json",
            "json_schema": {
                "type": "object",
                "properties": {"ceo": {"type": "string"}, "founded": {"type": "integer"}},
            },
        }
    },
    "metadata": {"emulator": f"duration={SHORT}"},
}


def start(state: Path, **settings: Any) -> BackgroundEmulator:
    settings.setdefault("time_scale", FAST_SCALE)
    return BackgroundEmulator(EmulatorSettings(port=0, state_path=str(state), **settings)).start()


def get(emu: BackgroundEmulator, path: str, key: dict[str, str] = KEY, **params: Any) -> httpx.Response:
    return httpx.get(emu.url + path, headers=key, params=params, timeout=30)


def snapshot(emu: BackgroundEmulator, run_id: str) -> dict[str, Any]:
    """Everything a client can learn about an ended run (the result long-poll first: waits for the end)."""
    result = get(emu, f"{RUNS}/{run_id}/result", timeout=60).json()
    events = read_sse(f"{emu.url}{RUNS}/{run_id}/events", key=KEY["x-api-key"]).events
    return {
        "result": result,
        "run": get(emu, f"{RUNS}/{run_id}").json(),
        "input": get(emu, f"{RUNS}/{run_id}/input").json(),
        "events": [(e.event, e.data) for e in events],
    }


def test_runs_and_groups_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "emulator.jsonl"
    first = start(state)
    try:
        text_id = httpx.post(first.url + RUNS, json=TEXT_RUN, headers=KEY, timeout=30).json()["run_id"]
        json_id = httpx.post(first.url + RUNS, json=JSON_RUN, headers=KEY, timeout=30).json()["run_id"]
        gid = httpx.post(first.url + GROUPS, json={"metadata": {"batch": "b1"}}, headers=KEY).json()["taskgroup_id"]
        inputs = [
            {"input": "short one", "processor": "lite", "metadata": {"emulator": f"duration={SHORT}"}},
            {"input": "long one", "processor": "pro", "metadata": {"emulator": f"duration={LONG}"}},
        ]
        added = httpx.post(f"{first.url}{GROUPS}/{gid}/runs", json={"inputs": inputs}, headers=KEY, timeout=30)
        short_id, long_id = added.json()["run_ids"]
        before = {run_id: snapshot(first, run_id) for run_id in (text_id, json_id, short_id)}
        assert before[text_id]["result"]["output"]["type"] == "text"
        assert before[json_id]["result"]["output"]["type"] == "json"
        assert any(kind.startswith("task_run.progress_msg.") for kind, _ in before[text_id]["events"])
        long_run = get(first, f"{RUNS}/{long_id}").json()
        long_plan = get(first, f"/_emulator/runs/{long_id}").json()
        group_before = get(first, f"{GROUPS}/{gid}").json()
        # The group's stream up to now (the short run's end), and its last event_id as a resume cursor.
        group_events = read_sse(f"{first.url}{GROUPS}/{gid}/events?timeout=0.2", key=KEY["x-api-key"]).events
        cursor = group_events[-1].json["event_id"]
        assert short_id in [e.json["run"]["run_id"] for e in group_events if e.event == "task_run.state"]
        assert long_run["status"] == "running"
    finally:
        first.stop()
    # Still running at the stop: so what follows proves it kept its timeline through the restart.
    assert long_plan["ends_in_seconds"] > 0 and long_plan["status"] == "running"

    second = start(state)  # a new process state, a new port, the same file
    try:
        for run_id, seen in before.items():
            assert snapshot(second, run_id) == seen, run_id
        # The still running run: the same plan, on its original clock (not restarted from zero).
        restored = get(second, f"/_emulator/runs/{long_id}").json()
        assert restored["timeline"] == long_plan["timeline"]
        assert restored["ends_in_seconds"] < long_plan["ends_in_seconds"]
        assert get(second, f"{RUNS}/{long_id}").json()["created_at"] == long_run["created_at"]
        # The group kept its runs, in order, and its metadata; counts add up with the long run now.
        group_after = get(second, f"{GROUPS}/{gid}").json()
        assert group_after["created_at"] == group_before["created_at"]
        assert group_after["metadata"] == {"batch": "b1"} and group_after["status"]["num_task_runs"] == 2
        runs = read_sse(f"{second.url}{GROUPS}/{gid}/runs", key=KEY["x-api-key"]).events
        assert [e.json["run"]["run_id"] for e in runs] == [short_id, long_id]
        # Resuming the group's stream from before the restart yields only the long run's end.
        resumed = read_sse(f"{second.url}{GROUPS}/{gid}/events?last_event_id={cursor}", key=KEY["x-api-key"])
        states = [e.json for e in resumed.events if e.event == "task_run.state"]
        assert [s["run"]["run_id"] for s in states] == [long_id]
        assert states[0]["run"]["status"] == "completed"
        done = get(second, f"{RUNS}/{long_id}/result", timeout=60).json()
        assert done["run"]["status"] == "completed" and done["output"]["type"] == "json"
        # Runs still belong to their key: another key gets the same 404 as an unknown id.
        assert get(second, f"{RUNS}/{text_id}", key={"x-api-key": "someone-else"}).status_code == 404
        assert get(second, f"{GROUPS}/{gid}", key={"x-api-key": "someone-else"}).status_code == 404
    finally:
        second.stop()


def test_state_file_holds_no_key_and_is_private(tmp_path: Path) -> None:
    state = tmp_path / "sub" / "emulator.jsonl"
    emu = start(state)
    try:
        httpx.post(emu.url + RUNS, json=TEXT_RUN, headers=KEY, timeout=30).raise_for_status()
    finally:
        emu.stop()
    text = state.read_text()
    assert KEY["x-api-key"] not in text and "Eiffel Tower" in text
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    state = tmp_path / "emulator.jsonl"
    emu = start(state)
    try:
        kept = httpx.post(emu.url + RUNS, json=JSON_RUN, headers=KEY, timeout=30).json()["run_id"]
    finally:
        emu.stop()
    with state.open("a") as fh:
        fh.write('{"v":1,"kind":"run","run_id":"trun_cut')  # a crash mid-append: no newline
    emu = start(state)
    try:
        assert get(emu, f"{RUNS}/{kept}").status_code == 200
        new = httpx.post(emu.url + RUNS, json=TEXT_RUN, headers=KEY, timeout=30).json()["run_id"]
    finally:
        emu.stop()
    emu = start(state)  # the record after the cut line was written on a line of its own
    try:
        assert get(emu, f"{RUNS}/{kept}").status_code == 200 and get(emu, f"{RUNS}/{new}").status_code == 200
        assert get(emu, "/_emulator/stats").json()["num_runs"] == 2
    finally:
        emu.stop()


def test_restored_runs_keep_the_seed_and_scale_they_were_planned_with(tmp_path: Path) -> None:
    state = tmp_path / "emulator.jsonl"
    emu = start(state, seed=7)
    try:
        run_id = httpx.post(emu.url + RUNS, json=JSON_RUN, headers=KEY, timeout=30).json()["run_id"]
        output = get(emu, f"{RUNS}/{run_id}/result", timeout=60).json()["output"]
    finally:
        emu.stop()
    emu = start(state, seed=8, time_scale=1.0)  # other settings now; the stored run answers as before
    try:
        assert get(emu, f"{RUNS}/{run_id}/result", timeout=0).json()["output"] == output
    finally:
        emu.stop()


def test_without_a_state_file_a_restart_forgets(tmp_path: Path) -> None:
    """The other side of the promise: the default stays a fresh account per process."""
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=FAST_SCALE)) as emu:
        run_id = httpx.post(emu.url + RUNS, json=JSON_RUN, headers=KEY, timeout=30).json()["run_id"]
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=FAST_SCALE)) as emu:
        assert get(emu, f"{RUNS}/{run_id}").status_code == 404


def test_cli_state_option(tmp_path: Path) -> None:
    """`taskdeck emulator --state FILE` as a real subprocess: its creates land in the file."""
    state = tmp_path / "cli.jsonl"
    with subprocess.Popen(
        [sys.executable, "-m", "taskdeck", "emulator", "--port", "0", "--time-scale", "0.01", "--state", str(state)],
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            url = None
            for line in proc.stderr:
                found = re.search(r"Uvicorn running on (http://\S+)", line)
                if found:
                    url = found.group(1)
                    break
            assert url, "the emulator never said where it listens"
            run_id = httpx.post(url + RUNS, json=JSON_RUN, headers=KEY, timeout=30).json()["run_id"]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    records = [json.loads(line) for line in state.read_text().splitlines()]
    assert [(r["kind"], r["run_id"]) for r in records] == [("run", run_id)]
    assert EmulatorSettings.from_env({"TASKDECK_EMULATOR_STATE_PATH": str(state)}).state_path == str(state)


@pytest.mark.parametrize("record", ['{"v":2,"kind":"run"}', '{"v":1,"kind":"run","run_id":"x"}', "[1,2]"])
def test_records_it_does_not_understand_are_skipped(tmp_path: Path, record: str) -> None:
    state = tmp_path / "emulator.jsonl"
    state.write_text(record + "\n")
    emu = start(state)
    try:
        assert get(emu, "/_emulator/stats").json()["num_runs"] == 0
        assert httpx.post(emu.url + RUNS, json=JSON_RUN, headers=KEY, timeout=30).status_code == 202
    finally:
        emu.stop()
    assert json.loads(state.read_text().splitlines()[-1])["kind"] == "run"
