"""``taskdeck run``, ``tasks``, ``show`` and ``watch`` on the local database: the command starts its own
engine for ``run`` (no server), and reads the database for the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings

KEY = "local-task-cli-key"


@pytest.fixture
def emu() -> Iterator[BackgroundEmulator]:
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005)) as emulator:
        yield emulator


def _cli(tmp_path: Path, emu: BackgroundEmulator, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARALLEL_API_KEY": key, "TASKDECK_SECRET_KEY": "local-cli-secret"}
    env.pop("TASKDECK_URL", None)
    cmd = [sys.executable, "-m", "taskdeck", *args, "--db", str(tmp_path / "t.db")]
    if args[0] == "run":
        cmd += ["--base-url", emu.url]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


def test_run_on_the_local_database_then_list_show_and_watch(tmp_path: Path, emu: BackgroundEmulator) -> None:
    done = _cli(tmp_path, emu, "run", "What is the capital of France?", "--processor", "lite", "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    task = lines[-1]["task"]
    assert task["status"] == "completed" and task["output"]["content"]
    assert any(line.get("type", "").startswith("task_run.") for line in lines[:-1])  # events, as they came

    listed = _cli(tmp_path, emu, "tasks", "--json")
    assert [t["id"] for t in json.loads(listed.stdout)["tasks"]] == [task["id"]]
    assert json.loads(_cli(tmp_path, emu, "tasks", "--json", key="someone-else").stdout)["tasks"] == []
    shown = _cli(tmp_path, emu, "show", task["id"])
    assert shown.returncode == 0 and "completed" in shown.stdout
    watched = _cli(tmp_path, emu, "watch", task["id"])
    assert watched.returncode == 0 and watched.stdout.strip()  # the result again
    missing = _cli(tmp_path, emu, "show", "tsk_000000000000000000000000")
    assert missing.returncode == 2 and "taskdeck tasks" in missing.stderr
