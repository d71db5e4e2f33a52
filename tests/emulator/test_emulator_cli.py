"""`taskdeck emulator` as a real subprocess, driven by the official sync SDK."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

from parallel import Parallel


def test_cli_emulator_serves_the_sdk() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "taskdeck", "emulator", "--port", "0", "--time-scale", "0.01"],
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _drive(proc)


def _drive(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                url = found.group(1)
                break
        assert url, "the emulator never said where it listens"
        with Parallel(api_key="cli-key", base_url=url) as client:
            run = client.task_run.create(input="Who founded Parallel?", processor="lite")
            result = client.task_run.result(run.run_id, api_timeout=60)
        assert result.run.status == "completed" and result.output.type == "json"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells of it.
    assert code in (0, -signal.SIGTERM)
    assert proc.stderr is not None and "Finished server process" in proc.stderr.read()
