"""``taskdeck enrich``: a table in, the same table with output columns out, through one batch.

Runs on the local database with an engine inside the command (the batch is a normal batch: the web UI
of a server on the same database shows it live). The batch is keyed by the input's bytes and the spec,
so running the same command again after Ctrl-C or a crash resumes the same batch and pays nothing twice.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskdeck.batchinput import Table, read_table
from taskdeck.config import Settings
from taskdeck.engine.batchspec import OUTPUT_TYPES, outputs_schema
from taskdeck.models import Batch, BatchStatus, TaskStatus
from taskdeck.processors import get_processor

__all__ = ["EnrichResult", "build_spec", "parse_output", "run_enrich"]


def parse_output(text: str) -> tuple[str, dict[str, Any]]:
    """``"name: description"`` or ``"name:type: description"`` → (name, JSON-schema property)."""
    parts = [p.strip() for p in text.split(":", 2)]
    if len(parts) == 3 and parts[1].lower() in OUTPUT_TYPES:
        name, kind, description = parts[0], OUTPUT_TYPES[parts[1].lower()], parts[2]
    elif len(parts) >= 2:
        name, kind, description = parts[0], "string", ":".join(parts[1:]).strip()
    else:
        raise ValueError(f"--output {text!r}: write it as 'name: description' or 'name:type: description'")
    if not name.isidentifier():
        raise ValueError(f"--output {text!r}: the name {name!r} must be a simple identifier (letters, digits, _)")
    if not description:
        raise ValueError(f"--output {text!r}: say what the column should hold after the name")
    return name, {"type": kind, "description": description}


def build_spec(
    processor: str,
    outputs: list[str],
    schema: dict[str, Any] | None,
    columns: list[str] | None,
    template: str | None,
) -> dict[str, Any]:
    """The batch spec from the command's options (one task_spec for every row)."""
    if get_processor(processor) is None:
        raise ValueError(f"--processor {processor!r} is not a Parallel processor")
    spec: dict[str, Any] = {"processor": processor}
    if schema is not None:
        spec["task_spec"] = {"output_schema": {"type": "json", "json_schema": schema}}
    elif outputs:
        parsed = [parse_output(o) for o in outputs]
        json_schema = outputs_schema([(name, prop["type"], prop["description"]) for name, prop in parsed])
        spec["task_spec"] = {"output_schema": {"type": "json", "json_schema": json_schema}}
    if columns:
        spec["columns"] = columns
    if template:
        spec["template"] = template
    return spec


@dataclass(frozen=True)
class EnrichResult:
    batch: Batch
    resumed: bool
    counts: dict[str, int]
    interrupted: bool

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.counts.items() if TaskStatus(s).is_terminal and s != "completed")


async def run_enrich(
    settings: Settings,
    api_key: str,
    source: Path,
    spec: dict[str, Any],
    *,
    progress: Callable[[dict[str, Any]], None],
) -> EnrichResult:
    """Create (or resume) the batch of ``source`` and follow it to its end, or until SIGINT/SIGTERM."""
    # Open for the command's length: the rows are read again, a row at a time, when the batch is stored.
    with read_table(source) as table:
        for warning in table.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        return await _run(settings, api_key, source.name, table, spec, progress)


async def _run(
    settings: Settings,
    api_key: str,
    name: str,
    table: Table,
    spec: dict[str, Any],
    progress: Callable[[dict[str, Any]], None],
) -> EnrichResult:
    from taskdeck.engine import Engine
    from taskdeck.web.batchviews import batch_summary

    engine = Engine(settings, kind="cli")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    try:
        batch, resumed = await engine.create_batch(
            api_key,
            name=name,
            columns=table.columns,
            rows=table.dicts,
            spec=spec,
            digest=table.digest,
        )
        # Resumed: a batch whose command stopped is claimed by this engine's next heartbeat (once its
        # lease expired); one already completed is written out at once.
        while True:
            current = await engine.db(engine.store.get_batch, batch.id)
            counts = await engine.db(engine.store.batch_counts, batch.id)
            if current is not None:
                batch = current
            cost = await engine.db(engine.store.batch_cost, batch.id)
            progress(batch_summary(batch, counts, cost))
            if batch.status == BatchStatus.COMPLETED or stop.is_set():
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=0.5)
            except TimeoutError:
                continue
        return EnrichResult(batch, resumed, counts, interrupted=stop.is_set())
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await engine.stop()
