"""Batches through one task group: rows added in chunks, outcomes in bulk, in order, never paid twice."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from conftest import fast_settings
from taskdeck.emulator import BackgroundEmulator
from taskdeck.engine import Engine
from taskdeck.engine.batches import CHUNK, row_tag
from taskdeck.models import BatchStatus, TaskStatus

KEY = "batch-test-key"
SPEC: dict[str, Any] = {
    "processor": "lite",
    "columns": ["company"],
    "metadata": {"emulator": "duration=100"},
    "task_spec": {
        "output_schema": {
            "type": "json",
            "json_schema": {"type": "object", "properties": {"ceo": {"type": "string"}}, "required": ["ceo"]},
        }
    },
}


def _rows(n: int) -> list[dict[str, Any]]:
    return [{"company": f"Company {i}", "city": "Paris"} for i in range(n)]


def _source(n: int) -> Callable[[], Iterator[dict[str, Any]]]:
    rows = _rows(n)
    return lambda: iter(rows)


def _creates(emu_url: str) -> int:
    """Runs the emulator created (and would bill), over every key."""
    stats = httpx.get(f"{emu_url}/_emulator/stats").json()
    return sum(int(k["runs"]) for k in stats["keys"].values())


async def _until(engine: Engine, check: Callable[[], bool], timeout: float = 90.0) -> None:
    """Wait until ``check()`` (a store read) holds, looking again at each change on the live feed."""
    with engine.feed.subscribe() as sub:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(check):
                # A batch's own end is no feed item (its rows' ends are): look again after a quiet second too.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sub.queue.get(), 1.0)


async def _wait_batch_done(engine: Engine, batch_id: str) -> None:
    def done() -> bool:
        batch = engine.store.get_batch(batch_id)
        return batch is not None and batch.status == BatchStatus.COMPLETED

    await _until(engine, done)


async def test_a_batch_completes_with_every_row_in_order_and_its_output(
    tmp_path: Path, recording_emulator: BackgroundEmulator
) -> None:
    engine = Engine(fast_settings(tmp_path / "t.db", recording_emulator.url))
    await engine.start()
    try:
        before = _creates(recording_emulator.url)
        rows = _rows(CHUNK + 5)  # two add_runs requests
        batch, resumed = await engine.create_batch(
            KEY, name="companies.csv", columns=["company", "city"], rows=lambda: iter(rows), spec=SPEC, digest="d1"
        )
        assert not resumed and batch.row_count == len(rows)
        await _wait_batch_done(engine, batch.id)
        stored = engine.store.batch_rows(batch.id, limit=10_000)
        assert [t.row_index for t in stored] == list(range(len(rows)))
        assert [t.input for t in stored] == [{"company": r["company"]} for r in rows]  # only the chosen column
        assert {t.status for t in stored} == {TaskStatus.COMPLETED}
        assert all(t.output and "ceo" in t.output["content"] for t in stored)
        assert len({t.run_id for t in stored}) == len(rows)
        assert _creates(recording_emulator.url) - before == len(rows)
        assert engine.store.list_tasks(engine.owner_of(KEY)) == []  # rows are not single tasks
        # Parallel's runs per status (the group's task_group_status), kept for the queued/running split.
        final = engine.store.get_batch(batch.id)
        assert final is not None and final.upstream_counts is not None
        assert final.upstream_counts.get("completed") == len(rows)

        # The same input and spec again: the same batch, nothing created, nothing paid.
        again, resumed = await engine.create_batch(
            KEY, name="companies.csv", columns=["company", "city"], rows=lambda: iter(rows), spec=SPEC, digest="d1"
        )
        assert resumed and again.id == batch.id
        assert _creates(recording_emulator.url) - before == len(rows)
    finally:
        await engine.stop()


async def test_rows_added_by_a_process_that_died_before_storing_their_runs_are_adopted_not_created_again(
    tmp_path: Path, recording_emulator: BackgroundEmulator
) -> None:
    """The crash between add_runs and storing its answer: the next supervisor finds the runs by their tags."""
    settings = fast_settings(tmp_path / "t.db", recording_emulator.url, create_settle=2.0, create_timeout=1.0)
    first = Engine(settings)
    await first.start()
    batch, _ = await first.create_batch(
        KEY, name="x.csv", columns=["company"], rows=_source(12), spec=SPEC, digest="d2"
    )
    # Wait until the runs exist upstream and are stored, then forget them in the store, as if the process had
    # died between Parallel's answer and our commit.
    await _until(first, lambda: all(t.run_id for t in first.store.batch_rows(batch.id)))
    await first.stop()
    created = _creates(recording_emulator.url)
    rows = first.store.batch_rows(batch.id)
    from taskdeck.store.base import PatchBatch, PatchTask

    first.store.apply(
        [
            *(PatchTask(t.id, {"run_id": None, "status": "submitting", "submit_started_at": 0.0}) for t in rows[:7]),
            PatchBatch(batch.id, {"status": BatchStatus.PENDING, "lease_owner": None, "lease_expires": None}),
        ]
    )
    second = Engine(settings)
    await second.start()
    try:
        await _wait_batch_done(second, batch.id)
        after = second.store.batch_rows(batch.id)
        assert {t.status for t in after} == {TaskStatus.COMPLETED}
        assert [t.run_id for t in after] == [t.run_id for t in rows]  # the same runs, adopted
        assert _creates(recording_emulator.url) == created  # nothing created again
        assert all(t.submit_token == row_tag(batch.id, t.row_index or 0) for t in after)
    finally:
        await second.stop()


async def test_outcomes_are_stored_while_other_rows_still_run(
    tmp_path: Path, recording_emulator: BackgroundEmulator
) -> None:
    """Rows end at different times (ultra: 5-25 emulated minutes, 1.5-7.5 s here): each one's output is
    stored a few seconds after it ends, while the others still run, not all at the batch's end."""
    engine = Engine(fast_settings(tmp_path / "t.db", recording_emulator.url))
    await engine.start()
    try:
        spec = {k: v for k, v in SPEC.items() if k != "metadata"} | {"processor": "ultra"}
        batch, _ = await engine.create_batch(
            KEY, name="spread.csv", columns=["company", "city"], rows=_source(30), spec=spec, digest="spread"
        )

        def some_but_not_all() -> bool:
            statuses = [t.status for t in engine.store.batch_rows(batch.id)]
            done = sum(1 for s in statuses if s == TaskStatus.COMPLETED)
            return 0 < done < len(statuses)

        await _until(engine, some_but_not_all, timeout=60)
        await _wait_batch_done(engine, batch.id)
        assert {t.status for t in engine.store.batch_rows(batch.id)} == {TaskStatus.COMPLETED}
    finally:
        await engine.stop()
