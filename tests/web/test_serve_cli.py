"""`taskdeck serve --demo` as a real process: the engine and the emulator behind the API, no key needed upstream."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_demo_runs_a_task_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "taskdeck", "serve", "--demo", "--port", str(port), "--db", str(tmp_path / "t.db")]
    with subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()
            assert "demo: simulated API" in banner
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:  # the socket opens after the engine has started
                try:
                    health = httpx.get(f"{url}/-/health")
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline, "serve did not start listening"
                    time.sleep(0.1)
            assert health.json()["demo"] is True
            with httpx.Client(base_url=url, headers={"x-api-key": "demo-key"}, timeout=60) as client:
                task = client.post("/api/tasks", json={"input": "Who makes Taskdeck?", "processor": "lite"}).json()[
                    "task"
                ]
                with client.stream("GET", task["urls"]["events"]) as resp:
                    last = [line for line in resp.iter_lines() if line.startswith("event: ")][-1]
                assert last == "event: end"
                assert client.get(task["urls"]["json"]).json()["status"] == "completed"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        assert proc.stderr is not None
        assert "demo-key" not in banner + proc.stderr.read()  # the key is never logged
