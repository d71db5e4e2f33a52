"""Shared benchmark plumbing: starting the emulator as a process, tables, JSON results."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

RESULTS = Path(__file__).parent / "results"


@dataclass
class EmulatorProcess:
    """The emulator in its own process, so the load generator does not share its CPU time."""

    proc: subprocess.Popen[str]
    url: str

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_emulator(*args: str, log: Path | None = None) -> EmulatorProcess:
    """Start ``taskdeck emulator --port 0 ARGS`` and wait until it says where it listens (its output: ``log``)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskdeck", "emulator", "--port", "0", "--log-level", "info", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    stream: IO[str] | None = proc.stderr
    assert stream is not None
    out = log.open("a") if log is not None else None
    for line in stream:
        if out is not None:
            out.write(line)
        found = re.search(r"Uvicorn running on (http://\S+)", line)
        if found:
            # Keep draining stderr so a chatty emulator never blocks on a full pipe.
            threading.Thread(target=_drain, args=(stream, out), daemon=True).start()
            return EmulatorProcess(proc, found.group(1))
    raise RuntimeError("the emulator exited before it started listening")


def _drain(stream: IO[str], out: IO[str] | None) -> None:
    for line in stream:
        if out is not None:
            out.write(line)
            out.flush()
    if out is not None:
        out.close()


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(title: str, rows: list[tuple[str, Any]]) -> str:
    """A two-column text table."""
    width = max(len(k) for k, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **data}, indent=2) + "\n")
    return path
