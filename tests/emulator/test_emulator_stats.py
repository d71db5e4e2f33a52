"""``/_emulator/stats``: per-key counts of run-creating requests and of the runs they created."""

from __future__ import annotations

from typing import Any

import httpx

from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.metrics import key_label


def key_stats(emu: BackgroundEmulator, key: str) -> dict[str, Any]:
    keys: dict[str, dict[str, Any]] = httpx.get(f"{emu.url}/_emulator/stats").json()["keys"]
    return keys[key_label(key)]


def test_runs_counts_runs_and_creates_counts_requests(emulator: BackgroundEmulator) -> None:
    key = "stats-key"  # a key of its own: the module's emulator is shared with other tests
    headers = {"x-api-key": key}
    group = httpx.post(f"{emulator.url}/v1/tasks/groups", json={}, headers=headers)
    assert group.status_code == 200
    gid = group.json()["taskgroup_id"]
    inputs = [{"input": f"company {i}", "processor": "lite"} for i in range(3)]
    added = httpx.post(f"{emulator.url}/v1/tasks/groups/{gid}/runs", json={"inputs": inputs}, headers=headers)
    assert added.status_code == 200 and len(added.json()["run_ids"]) == 3
    after_group = key_stats(emulator, key)
    assert (after_group["creates"], after_group["runs"]) == (1, 3)

    single = httpx.post(f"{emulator.url}/v1/tasks/runs", json={"input": "x", "processor": "lite"}, headers=headers)
    assert single.status_code == 202
    # A refused create is still a run-creating request, but creates no run.
    refused = httpx.post(f"{emulator.url}/v1/tasks/runs", json={"processor": "lite"}, headers=headers)
    assert refused.status_code == 422
    final = key_stats(emulator, key)
    assert (final["creates"], final["runs"]) == (3, 4)
    assert final["by_route"] == {"create_group": 1, "add_group_runs": 1, "create_run": 2}
