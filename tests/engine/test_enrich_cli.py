"""``taskdeck enrich`` as a person runs it: a real CSV, the real CLI process, the emulator as Parallel."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from workers import wait_for

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings

KEY = "enrich-cli-key"


@pytest.fixture
def emu() -> Iterator[BackgroundEmulator]:
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005)) as emulator:
        yield emulator


def _runs_created(emu: BackgroundEmulator) -> int:
    # A generous timeout: the emulator may be busy adding a chunk of 1,000 runs on a loaded machine.
    keys = httpx.get(f"{emu.url}/_emulator/stats", timeout=60).json()["keys"]
    return sum(int(k["runs"]) for k in keys.values())


def _enrich(tmp_path: Path, emu: BackgroundEmulator, *args: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PARALLEL_API_KEY": KEY,
        "TASKDECK_SECRET_KEY": "enrich-secret",
        "TASKDECK_HEARTBEAT_INTERVAL": "0.3",
        "TASKDECK_LEASE_TTL": "1.5",
        "TASKDECK_BACKOFF_BASE": "0.05",
        # After a crash mid-add, rows sent but not found in the group are added again only once nothing
        # sent can still land (300 s in production; the emulator answers within a second or two).
        "TASKDECK_CREATE_TIMEOUT": "15",
        "TASKDECK_CREATE_SETTLE": "15",
    }
    cmd = [sys.executable, "-m", "taskdeck", "enrich", *args, "--db", str(tmp_path / "t.db"), "--base-url", emu.url]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _companies(path: Path, n: int) -> Path:
    # A BOM, a semicolon dialect, a quoted newline and a cell a spreadsheet would run as a formula.
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        writer = csv.writer(f, delimiter=";")
        writer.writerow(["company", "note"])
        for i in range(n):
            writer.writerow([f"Company {i}", '=HYPERLINK("x")' if i == 0 else f"line one\nline two {i}"])
    return path


def test_enrich_writes_every_row_in_order_and_a_rerun_pays_nothing(tmp_path: Path, emu: BackgroundEmulator) -> None:
    source = _companies(tmp_path / "companies.csv", 25)
    out = tmp_path / "enriched.csv"
    args = [
        str(source),
        "-o",
        str(out),
        "--processor",
        "lite",
        "--output",
        "ceo: name of the CEO",
        "--output",
        "founded:int: year founded",
    ]
    proc = _enrich(tmp_path, emu, *args)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with out.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["company", "note", "ceo", "founded", "status", "error"]
    assert [r[0] for r in table[1:]] == [f"Company {i}" for i in range(25)]  # input order
    assert all(r[2] and r[3].isdigit() and r[4] == "completed" for r in table[1:])
    assert table[1][1].startswith("'=")  # spreadsheet-safe
    assert table[2][1] == "line one\nline two 1"
    created = _runs_created(emu)
    assert created == 25

    again = _enrich(tmp_path, emu, *args)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "resumed batch" in err
    assert _runs_created(emu) == created  # the same file and options: nothing created twice


def test_ctrl_c_leaves_the_batch_running_and_the_same_command_resumes_it(
    tmp_path: Path, emu: BackgroundEmulator
) -> None:
    source = _companies(tmp_path / "companies.csv", 12)
    # 2,000 emulated seconds: about 10 s here, long enough to interrupt the command mid-batch.
    args = [str(source), "-o", str(tmp_path / "out.csv"), "--processor", "lite", "--template", "Who runs {company}?"]
    env_meta = ["--output", "ceo: name of the CEO", "--metadata", '{"emulator": "duration=2000"}']
    proc = _enrich(tmp_path, emu, *args, *env_meta)
    wait_for(lambda: _runs_created(emu) == 12, 60, "the batch's runs to be created")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "goes on at Parallel" in err
    rerun = _enrich(tmp_path, emu, *args, *env_meta)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert _runs_created(emu) == 12  # paid once
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [r[0] for r in rows] == [f"Company {i}" for i in range(12)] and {r[-2] for r in rows} == {"completed"}


def test_dry_run_prints_the_requests_and_the_cost_and_sends_nothing(tmp_path: Path, emu: BackgroundEmulator) -> None:
    source = _companies(tmp_path / "companies.csv", 40)
    proc = _enrich(tmp_path, emu, str(source), "--processor", "core", "--output", "ceo: the CEO", "--dry-run")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(out.strip().splitlines()) == 3 and '"Company 0"' in out
    assert "40 rows x core: $1.00 in all" in err
    assert _runs_created(emu) == 0


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARALLEL_API_KEY": KEY, "TASKDECK_SECRET_KEY": "enrich-secret"}
    cmd = [sys.executable, "-m", "taskdeck", *args, "--db", str(tmp_path / "t.db")]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_batches_lists_the_batch_and_export_writes_it_with_its_basis(tmp_path: Path, emu: BackgroundEmulator) -> None:
    source = _companies(tmp_path / "companies.csv", 6)
    proc = _enrich(tmp_path, emu, str(source), "-o", str(tmp_path / "out.jsonl"), "--processor", "lite",
                   "--output", "ceo: name of the CEO", "--json")  # fmt: skip
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = (tmp_path / "out.jsonl").read_text().splitlines()  # the format follows the file's extension
    assert [json.loads(line)["index"] for line in lines] == list(range(6))

    listed = _cli(tmp_path, "batches", "--json")
    assert listed.returncode == 0, listed.stderr
    (batch,) = json.loads(listed.stdout)["batches"]
    assert (batch["name"], batch["row_count"], batch["done"], batch["failed"]) == ("companies.csv", 6, 6, 0)
    # Another key sees none of it.
    other = subprocess.run(
        [sys.executable, "-m", "taskdeck", "batches", "--json", "--db", str(tmp_path / "t.db")],
        env={**os.environ, "PARALLEL_API_KEY": "someone-else", "TASKDECK_SECRET_KEY": "enrich-secret"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert other.returncode == 0 and json.loads(other.stdout)["batches"] == []

    exported = _cli(tmp_path, "export", batch["id"], "-o", str(tmp_path / "b.csv"), "--basis")
    assert exported.returncode == 0, exported.stderr
    with (tmp_path / "b.csv").open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == [
        "company",
        "note",
        "ceo",
        "ceo__confidence",
        "ceo__citations",
        "ceo__reasoning",
        "status",
        "error",
    ]
    assert [r[0] for r in table[1:]] == [f"Company {i}" for i in range(6)]
    assert all(r[3] in ("high", "medium", "low") and r[4].startswith("http") and r[5] for r in table[1:])
    missing = _cli(tmp_path, "export", "bat_000000000000000000000000")
    assert missing.returncode == 2 and "taskdeck batches" in missing.stderr


def _row_states(db: Path) -> dict[str, int]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT status, COUNT(*) FROM tasks WHERE batch_id IS NOT NULL GROUP BY status"))


@pytest.mark.parametrize("moment", ["mid-add_runs", "mid-follow"])
def test_sigkill_then_the_same_command_completes_the_batch_and_pays_for_every_row_once(
    tmp_path: Path, emu: BackgroundEmulator, moment: str
) -> None:
    """A real SIGKILL of the process running the batch: while its rows are being added (3 add_runs of
    1,000), or while they are followed. The rerun reconciles what was sent from the group's runs (by
    their tags) and creates only what never reached Parallel: upstream creates == rows."""
    rows = 3000
    source = tmp_path / "many.csv"
    source.write_text("company\n" + "".join(f"Company {i}\n" for i in range(rows)), encoding="utf-8")
    out = tmp_path / "out.csv"
    args = [str(source), "-o", str(out), "--processor", "lite", "--output", "ceo: the CEO"]
    args += ["--metadata", '{"emulator": "duration=1500"}']  # ~7.5 s per run here
    proc = _enrich(tmp_path, emu, *args)
    try:
        if moment == "mid-add_runs":
            wait_for(lambda: _runs_created(emu) >= 1, 120, "the first rows to be added")
        else:
            wait_for(lambda: _runs_created(emu) == rows, 120, "every row to be added")
            wait_for(lambda: _row_states(tmp_path / "t.db").get("completed", 0) > 0, 120, "some rows to complete")
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed or released
        proc.communicate(timeout=30)
    killed_at = _runs_created(emu)
    if moment == "mid-add_runs":
        assert killed_at < rows, "the process should have died before every chunk was added"
    rerun = _enrich(tmp_path, emu, *args)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert _runs_created(emu) == rows, f"killed with {killed_at} created: {_runs_created(emu)} in the end"
    with out.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))[1:]
    assert [r[0] for r in table] == [f"Company {i}" for i in range(rows)]
    assert {r[-2] for r in table} == {"completed"} and all(r[1] for r in table)
