"""`taskdeck serve --demo` as a real process: the engine and the emulator behind the API, no key needed upstream."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from taskdeck.store.sqlite import SqliteStore


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
            while "Taskdeck on" not in banner:
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
            # The real server (uvicorn as `serve` configures it) believes no X-Forwarded-* header, not even
            # from loopback: only TASKDECK_TRUSTED_PROXIES may say a request came over https.
            forged = httpx.get(f"{url}/api/csrf", headers={"x-forwarded-proto": "https", "x-forwarded-for": "1.2.3.4"})
            cookie = forged.headers["set-cookie"]
            assert not cookie.startswith("__Host-") and "secure" not in cookie.lower(), cookie
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


def test_sigterm_stops_serve_within_ten_seconds_with_a_hundred_open_streams(tmp_path: Path) -> None:
    port = free_port()
    db = tmp_path / "t.db"
    cmd = [sys.executable, "-m", "taskdeck", "serve", "--demo", "--port", str(port), "--db", str(db)]
    with subprocess.Popen(cmd, stderr=subprocess.DEVNULL) as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/-/health")
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "serve did not start listening"
                time.sleep(0.1)
        long = {"input": "x", "processor": "lite", "metadata": {"emulator": "duration=100000"}}
        with httpx.Client(base_url=url, headers={"x-api-key": "demo-key"}, timeout=60) as client:
            task = client.post("/api/tasks", json=long).json()["task"]
        streams = []
        limits = httpx.Limits(max_connections=200)
        with httpx.Client(base_url=url, headers={"x-api-key": "demo-key"}, timeout=60, limits=limits) as client:
            for i in range(100):
                path = "/api/tasks/stream" if i % 2 else task["urls"]["events"]
                stream = client.stream("GET", path)
                response = stream.__enter__()
                assert response.status_code == 200
                streams.append(stream)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            # uvicorn re-raises the signal after a graceful stop, so "killed by SIGTERM" is the clean exit here.
            assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
            elapsed = time.monotonic() - started
            for stream in streams:
                stream.__exit__(None, None, None)
    assert elapsed < 10
    store = SqliteStore(db)
    try:
        stored = store.get_task(task["id"])
        assert stored is not None and stored.lease_owner is None  # the lease was released on the way out
    finally:
        store.close()
