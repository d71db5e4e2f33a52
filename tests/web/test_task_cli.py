"""``taskdeck run``, ``tasks``, ``show`` and ``watch`` against a running Taskdeck (``--url``), as a person
or a script runs them: the real CLI process, the real server over loopback, the emulator as Parallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from web_helpers import Web

from taskdeck.emulator.run import FAIL_MARKER

KEY = "task-cli-key"


def _cli(web: Web, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARALLEL_API_KEY": KEY, "TASKDECK_URL": web.url}
    return subprocess.run(
        [sys.executable, "-m", "taskdeck", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_run_follows_live_then_prints_the_result_and_the_task_is_listed_shown_and_watched(web: Web) -> None:
    schema = json.dumps({"type": "object", "properties": {"ceo": {"type": "string", "description": "the CEO"}}})
    done = _cli(web, "run", "Who runs Acme?", "--processor", "lite", "--output", schema)
    assert done.returncode == 0, done.stderr
    assert "[state] completed" in done.stderr or "[taskdeck]" in done.stderr  # live lines on stderr
    assert done.stdout.startswith("ceo") and "(" in done.stdout  # the field, its value and its confidence
    task_id = done.stderr.split("task ", 1)[1].split(" ", 1)[0]

    listed = _cli(web, "tasks", "--json")
    assert listed.returncode == 0 and task_id in {t["id"] for t in json.loads(listed.stdout)["tasks"]}
    shown = _cli(web, "show", task_id)
    assert shown.returncode == 0 and "completed" in shown.stdout and "ceo" in shown.stdout
    watched = _cli(web, "watch", task_id, "--json")
    assert watched.returncode == 0
    lines = [json.loads(line) for line in watched.stdout.splitlines()]
    assert lines[-1]["task"]["id"] == task_id and lines[-1]["task"]["status"] == "completed"
    assert any(line.get("type") == "task_run.state" for line in lines[:-1])  # the history, replayed


def test_run_of_a_failing_task_exits_1_with_the_reason_and_json_for_scripts(web: Web) -> None:
    failed = _cli(web, "run", f"Please fail {FAIL_MARKER}", "--processor", "lite", "--json")
    assert failed.returncode == 1
    final = json.loads(failed.stdout.splitlines()[-1])
    assert final["task"]["status"] == "failed" and final["task"]["error"]


def test_bad_input_is_refused_with_the_servers_reason(web: Web) -> None:
    bad = _cli(web, "run", "x", "--processor", "warp-speed")
    assert bad.returncode == 2 and "processor" in bad.stderr
    missing = _cli(web, "show", "tsk_000000000000000000000000")
    assert missing.returncode == 2 and "404" in missing.stderr
