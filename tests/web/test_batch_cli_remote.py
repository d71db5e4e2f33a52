"""The batch commands against a running Taskdeck (``--url`` / ``TASKDECK_URL``): the real CLI process,
the real server over loopback, the emulator as Parallel."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
from web_helpers import Web

KEY = "remote-cli-key"


def _creates(web: Web) -> int:
    stats = httpx.get(f"{web.emulator.url}/_emulator/stats").json()
    return sum(int(k["runs"]) for k in stats["keys"].values())


def _cli(web: Web, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PARALLEL_API_KEY": key, "TASKDECK_URL": web.url}
    return subprocess.run(
        [sys.executable, "-m", "taskdeck", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_enrich_through_a_server_then_list_export_and_rerun_without_paying_twice(web: Web, tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    source.write_text("person,org\nAda,Analytical\nGrace,Navy\n=cmd,Evil\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    before = _creates(web)
    args = ["enrich", str(source), "-o", str(out), "--processor", "lite", "--output", "role: their role", "--json"]
    done = _cli(web, *args)
    assert done.returncode == 0, done.stderr
    assert _creates(web) - before == 3
    with out.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == ["person", "org", "role", "status", "error"]
    assert [r[0] for r in table[1:]] == ["Ada", "Grace", "'=cmd"]  # row order, spreadsheet-safe
    assert all(r[3] == "completed" and r[2] for r in table[1:])

    listed = _cli(web, "batches", "--json")
    assert listed.returncode == 0, listed.stderr
    (batch,) = [b for b in json.loads(listed.stdout)["batches"] if b["name"] == "people.csv"]
    exported = _cli(web, "export", batch["id"], "-o", str(tmp_path / "x.jsonl"))
    assert exported.returncode == 0, exported.stderr
    rows = [json.loads(line) for line in (tmp_path / "x.jsonl").read_text().splitlines()]
    assert [r["values"]["person"] for r in rows] == ["Ada", "Grace", "=cmd"]

    again = _cli(web, *args)
    assert again.returncode == 0, again.stderr
    assert "resumed batch" in again.stderr and _creates(web) - before == 3

    # Someone else's key: the server says no such batch, and the CLI says so (exit 2), writing nothing.
    stranger = _cli(web, "export", batch["id"], "-o", str(tmp_path / "no.csv"), key="remote-cli-stranger")
    assert stranger.returncode == 2 and "404" in stranger.stderr
    assert not (tmp_path / "no.csv").exists()


def test_enrich_against_a_server_refuses_bad_options_with_the_servers_reason(web: Web, tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    source.write_text("company\nAcme\n", encoding="utf-8")
    bad = _cli(web, "enrich", str(source), "--processor", "lite", "--output", "ceo: x", "--column", "nope")
    assert bad.returncode == 2 and "spec.columns.0" in bad.stderr
