"""Engine worker subprocesses for crash and multi-process tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_for

__all__ = ["FAST_ENV", "kill", "start_worker", "wait_for"]

FAST_ENV = {
    "TASKDECK_SECRET_KEY": "test-secret",
    "TASKDECK_HEARTBEAT_INTERVAL": "0.3",
    "TASKDECK_LEASE_TTL": "1.5",
    "TASKDECK_BACKOFF_BASE": "0.05",
    "TASKDECK_BACKOFF_MAX": "1",
    "TASKDECK_STREAM_READ_TIMEOUT": "3",
    # The budget is not what these tests are about; after several kills in a row, the dead workers'
    # assumed spending would otherwise hold the next one back for up to a minute.
    "TASKDECK_RATE_LIMIT_PER_MINUTE": "100000",
}


def start_worker(db: Path, base_url: str, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """``taskdeck worker`` in its own process, logging to ``log``."""
    full_env = {**os.environ, **FAST_ENV, **env}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskdeck", "worker", "--db", str(db), "--base-url", base_url],
            stdout=out,
            stderr=out,
            env=full_env,
        )


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
