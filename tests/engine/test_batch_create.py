"""Creating a batch reads its table a row at a time (checked, then stored) and stores all of it or nothing."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import fast_settings
from taskdeck.engine import Engine
from taskdeck.engine.intake import IntakeError
from taskdeck.engine.writer import WriteFailed

KEY = "batch-create-key"
SPEC: dict[str, Any] = {"processor": "lite", "columns": ["company"]}


def companies(n: int, *, bad_at: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows made as they are read, as a file's would be: nothing of the table exists beforehand."""
    for i in range(n):
        yield {"company": "x" * 30_000 if i == bad_at else f"Company {i:06d} of a long name", "city": "Paris"}


async def peak_bytes_of_create(engine: Engine, rows: int, digest: str) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        batch, resumed = await engine.create_batch(
            KEY, name="t.csv", columns=["company", "city"], rows=lambda: companies(rows), spec=SPEC, digest=digest
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not resumed and batch.row_count == rows
    assert engine.store.batch_counts(batch.id) == {"pending": rows}
    return peak


async def test_a_batch_is_stored_without_holding_its_table(tmp_path: Path) -> None:
    """Ten times the rows, about the same memory: the rows are never all in memory at once."""
    engine = Engine(fast_settings(tmp_path / "t.db", "http://127.0.0.1:9"), follow=False)
    await engine.start()
    try:
        small = await peak_bytes_of_create(engine, 2_000, "small")
        large = await peak_bytes_of_create(engine, 20_000, "large")
    finally:
        await engine.stop()
    # Holding the 20,000 rows and their tasks would take well over 10 MB (and 10x the small peak).
    assert large < 2.5 * small, (small, large)


async def test_a_bad_row_late_in_the_table_stores_nothing(tmp_path: Path) -> None:
    engine = Engine(fast_settings(tmp_path / "t.db", "http://127.0.0.1:9"), follow=False)
    await engine.start()
    try:
        with pytest.raises(IntakeError) as caught:
            await engine.create_batch(
                KEY,
                name="t.csv",
                columns=["company", "city"],
                rows=lambda: companies(5_000, bad_at=4_321),
                spec=SPEC,
                digest="bad",
            )
        assert caught.value.message.startswith("row 4322: input")
        assert engine.store.list_batches(engine.owner_of(KEY)) == []
        assert engine.store.count_tasks() == {}
    finally:
        await engine.stop()


async def test_a_table_that_fails_while_being_stored_leaves_no_half_batch(tmp_path: Path) -> None:
    """The rows are stored in the batch's one transaction: a read failing at row 1,500 rolls all back."""
    engine = Engine(fast_settings(tmp_path / "t.db", "http://127.0.0.1:9"), follow=False)
    passes: list[int] = []

    def rows() -> Iterator[dict[str, Any]]:
        passes.append(1)
        for i, row in enumerate(companies(3_000)):
            if len(passes) > 1 and i == 1_500:
                raise OSError("the file changed while it was read")
            yield row

    await engine.start()
    try:
        with pytest.raises(WriteFailed):
            await engine.create_batch(
                KEY, name="t.csv", columns=["company", "city"], rows=rows, spec=SPEC, digest="changed"
            )
        assert len(passes) >= 2  # checked whole, then failed while stored
        assert engine.store.list_batches(engine.owner_of(KEY)) == []
        assert engine.store.count_tasks() == {}
    finally:
        await engine.stop()
