"""The scale-out topology as local processes on PostgreSQL: 2 workers, 1 web-only server, one database.

Tasks are submitted to the web process (which follows nothing), the workers share them through
``FOR UPDATE SKIP LOCKED`` leases, ``taskdeck status`` sees every process, and a worker killed
with SIGKILL has its runs taken over by the other within the lease TTL plus a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from workers import FAST_ENV, kill, wait_for

from pg import fresh_schema
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings
from taskdeck.store.open import open_store

KEY = "topology-key"


@pytest.fixture
def url() -> Iterator[str]:
    with fresh_schema() as schema_url:
        yield schema_url


def _env(url: str) -> dict[str, str]:
    return {**os.environ, **FAST_ENV, "TASKDECK_DATABASE_URL": url}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _status(url: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "taskdeck", "status", "--json"],
        env=_env(url),
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def test_two_workers_and_a_web_process_share_runs_and_survive_a_sigkill(url: str, tmp_path: Path) -> None:
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.01)) as emu:
        log = (tmp_path / "procs.log").open("ab")
        try:
            migrate = [sys.executable, "-m", "taskdeck", "migrate"]
            assert subprocess.run(migrate, env=_env(url), capture_output=True, check=False).returncode == 0
            web_cmd = [
                sys.executable,
                "-m",
                "taskdeck",
                "serve",
                "--no-engine",
                "--port",
                str(port),
                "--base-url",
                emu.url,
            ]
            procs.append(subprocess.Popen(web_cmd, env=_env(url), stdout=log, stderr=log))
            for _ in range(2):
                # At most 30 runs each: 40 runs must be shared (a worker's first claim takes all it may).
                worker_cmd = [sys.executable, "-m", "taskdeck", "worker", "--base-url", emu.url]
                env = {**_env(url), "TASKDECK_MAX_FOLLOWERS": "30"}
                procs.append(subprocess.Popen(worker_cmd, env=env, stdout=log, stderr=log))
            web = f"http://127.0.0.1:{port}"

            def web_up() -> bool:
                try:
                    return httpx.get(f"{web}/-/health").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(web_up, 30, "the web process")
            wait_for(lambda: sum(p["alive"] for p in _status(url)["processes"]) == 3, 30, "3 registered processes")
            kinds = sorted(p["kind"] for p in _status(url)["processes"])
            assert kinds == ["web", "worker", "worker"]

            body = {"processor": "lite", "metadata": {"emulator": "duration=1000"}}  # about 10 s each
            with httpx.Client(base_url=web, headers={"x-api-key": KEY}, timeout=30) as client:
                ids = [
                    client.post("/api/tasks", json={**body, "input": f"run {i}"}).json()["task"]["id"]
                    for i in range(40)
                ]

                def leased() -> dict[str, int]:
                    return {p["holder"]: p["leases"] for p in _status(url)["processes"] if p["kind"] == "worker"}

                # Both workers take a share (SKIP LOCKED, never the same run), the web process none.
                wait_for(lambda: sum(leased().values()) == 40 and min(leased().values()) > 0, 30, "both workers")
                victim = procs[1]
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=10)
                killed_at = time.monotonic()

                def all_done() -> bool:
                    tasks = [client.get(f"/api/tasks/{i}").json()["task"]["status"] for i in ids]
                    return all(s == "completed" for s in tasks)

                wait_for(all_done, 90, "every run completed after the SIGKILL")
                took = time.monotonic() - killed_at
            # A stream the killed worker left open ended with it (its socket closed): never two at once.
            assert httpx.get(f"{emu.url}/_emulator/stats").json()["max_open_streams_per_run"] == 1
        finally:
            for proc in procs:
                if proc.poll() is None:
                    kill(proc)
            log.close()
    store = open_store(url)
    try:
        tasks = store.get_tasks(ids)
        assert {t.status.value for t in tasks} == {"completed"}
        assert len({t.run_id for t in tasks}) == 40  # each created once
        for task in tasks:
            seqs = [e.seq for e in store.events(task.id)]
            keys = [e.dedup_key for e in store.events(task.id) if e.dedup_key]
            assert seqs == sorted(set(seqs)) and len(keys) == len(set(keys))
    finally:
        store.close()
    assert took < 90


def test_a_worker_that_joins_later_gets_its_share_and_nothing_runs_twice(url: str, tmp_path: Path) -> None:
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.01, record_sent=True)) as emu:
        log = (tmp_path / "procs.log").open("ab")
        procs: list[subprocess.Popen[bytes]] = []
        try:
            settings_env = _env(url)
            store = open_store(url)
            from taskdeck.config import Settings
            from taskdeck.engine.intake import enqueue

            settings = Settings(
                db_path=tmp_path / "unused.db", database_url=url, secret_key=FAST_ENV["TASKDECK_SECRET_KEY"]
            )
            body = {"processor": "lite", "metadata": {"emulator": "duration=2000"}}  # about 20 s each
            ids = [enqueue(settings, KEY, {**body, "input": f"run {i}"}).id for i in range(40)]
            worker_cmd = [sys.executable, "-m", "taskdeck", "worker", "--base-url", emu.url]
            procs.append(subprocess.Popen(worker_cmd, env=settings_env, stdout=log, stderr=log))
            wait_for(lambda: sum(store.leases(time.time()).values()) == 40, 30, "the first worker holding all 40")
            procs.append(subprocess.Popen(worker_cmd, env=settings_env, stdout=log, stderr=log))

            def shared() -> bool:
                held = store.leases(time.time())
                return len(held) == 2 and min(held.values()) >= 15

            wait_for(shared, 30, "the runs shared by both workers")
            wait_for(lambda: {t.status.value for t in store.get_tasks(ids)} == {"completed"}, 90, "every run")
            assert httpx.get(f"{emu.url}/_emulator/stats").json()["max_open_streams_per_run"] == 1
            for task in store.get_tasks(ids):
                keys = [e.dedup_key for e in store.events(task.id) if e.dedup_key]
                assert len(keys) == len(set(keys))
            store.close()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    kill(proc)
            log.close()
