"""The upstream client's task-group calls for batches, against the emulator over real HTTP with the SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings
from taskdeck.engine.ratelimit import RateBudget
from taskdeck.upstream.client import EVENTS_BETA, Upstream, UpstreamError

KEY = "group-client-key"
OWNER = "owner"


@pytest.fixture
def emulator() -> Iterator[BackgroundEmulator]:
    # 100 emulated seconds per run last 0.5 s here.
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005)) as emu:
        yield emu


def _inputs(n: int, batch: str = "bat_1") -> list[dict[str, object]]:
    return [
        {
            "input": {"company": f"Company {i}"},
            "processor": "lite",
            "metadata": {"taskdeck_batch": batch, "taskdeck_row": i, "emulator": "duration=100"},
        }
        for i in range(n)
    ]


async def test_add_runs_tags_each_run_and_the_runs_stream_finds_them_by_their_tags(
    emulator: BackgroundEmulator,
) -> None:
    budget = RateBudget(2000, "all")
    upstream = Upstream(emulator.url, budget)
    try:
        group = await upstream.create_group(OWNER, KEY, {"taskdeck": "test"})
        spec = {
            "output_schema": {
                "type": "json",
                "json_schema": {"type": "object", "properties": {"ceo": {"type": "string"}}},
            }
        }
        added = await upstream.add_runs(
            OWNER, KEY, group["taskgroup_id"], _inputs(3), default_task_spec=spec, betas=[EVENTS_BETA], timeout=30
        )
        assert len(added["run_ids"]) == 3
        states = await upstream.group_run_states(OWNER, KEY, group["taskgroup_id"], after=None, include_input=True)
        by_row = {s["input"]["metadata"]["taskdeck_row"]: s["run"]["run_id"] for s in states}
        assert by_row == dict(enumerate(added["run_ids"]))  # a crash after add_runs is reconciled from this
        later = await upstream.group_run_states(OWNER, KEY, group["taskgroup_id"], after=states[0]["event_id"])
        assert [s["run"]["run_id"] for s in later] == added["run_ids"][1:]  # resumable
        assert all("input" not in s or s["input"] is None for s in later)
    finally:
        await upstream.close()


async def test_group_events_report_each_run_ending_and_resume_after_the_last_id(
    emulator: BackgroundEmulator,
) -> None:
    upstream = Upstream(emulator.url, RateBudget(2000, "all"))
    try:
        group = await upstream.create_group(OWNER, KEY, {})
        added = await upstream.add_runs(
            OWNER, KEY, group["taskgroup_id"], _inputs(2), default_task_spec=None, betas=[EVENTS_BETA], timeout=30
        )
        ended: list[str] = []
        last: str | None = None
        async with upstream.group_events(OWNER, KEY, group["taskgroup_id"], after=None, read_timeout=30) as messages:
            async for message in messages:
                payload = message.payload or {}
                last = payload.get("event_id") or last
                if payload.get("type") == "task_run.state":
                    ended.append(payload["run"]["run_id"])
        assert sorted(ended) == sorted(added["run_ids"])  # the stream closes once no run is active
        async with upstream.group_events(OWNER, KEY, group["taskgroup_id"], after=last, read_timeout=30) as messages:
            again = [
                m.payload
                for m in [m async for m in messages]
                if m.payload and m.payload.get("type") == "task_run.state"
            ]
        assert again == []  # nothing is replayed after the last id
        states = await upstream.group_run_states(OWNER, KEY, group["taskgroup_id"], after=None, include_output=True)
        assert all(s["run"]["status"] == "completed" and s["output"] is not None for s in states)
        assert json.dumps(states)  # storable as is
    finally:
        await upstream.close()


async def test_add_runs_refuses_more_than_a_thousand_inputs_before_sending(emulator: BackgroundEmulator) -> None:
    upstream = Upstream(emulator.url, RateBudget(2000, "all"))
    try:
        with pytest.raises(UpstreamError) as err:
            await upstream.add_runs(OWNER, KEY, "tgrp_x", _inputs(1001), default_task_spec=None, betas=[], timeout=5)
        assert err.value.local and upstream.requests == 0
    finally:
        await upstream.close()


async def test_the_runs_stream_is_handed_over_in_pages_of_the_one_request(emulator: BackgroundEmulator) -> None:
    budget = RateBudget(2000, "all")
    upstream = Upstream(emulator.url, budget)
    try:
        group = await upstream.create_group(OWNER, KEY, {"taskdeck": "pages"})
        added = await upstream.add_runs(
            OWNER, KEY, group["taskgroup_id"], _inputs(5), default_task_spec=None, betas=[EVENTS_BETA], timeout=30
        )
        pages = [
            [s["run"]["run_id"] for s in page]
            async for page in upstream.group_run_pages(OWNER, KEY, group["taskgroup_id"], after=None, page_size=2)
        ]
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [r for p in pages for r in p] == added["run_ids"]
    finally:
        await upstream.close()
