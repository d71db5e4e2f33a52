"""What both stores share about rows: the task columns, JSON text, row ↔ model, the migration files,
and the grouping of a batch of writes (runs of events and unguarded patches go together)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from taskdeck.models import Batch, BatchStatus, Event, Origin, Task, TaskStatus
from taskdeck.store.base import AppendEvent, PatchTask, Write

__all__ = [
    "BATCH_COLUMNS",
    "BATCH_JSON_COLUMNS",
    "FOLLOWED",
    "JSON_COLUMNS",
    "TASK_COLUMNS",
    "Gathered",
    "batch_changes",
    "batch_from_row",
    "batch_values",
    "event_from_row",
    "gather",
    "migration_files",
    "task_from_row",
    "to_json",
]

JSON_COLUMNS = frozenset({"request", "error", "warnings", "output", "progress", "row_values"})
TASK_COLUMNS = (
    "id owner processor request status created_at run_id interaction_id upstream_status error warnings output "
    "progress progress_meter cost_usd follow_up_of submitted_at first_event_at last_event_at completed_at message "
    "lease_owner lease_expires submit_group submit_token submit_cursor submit_started_at batch_id row_index row_values"
).split()
FOLLOWED = [s.value for s in TaskStatus if s.is_followed]


def migration_files(folder: str = "migrations") -> list[tuple[int, str]]:
    """(version, SQL) of every numbered migration in ``folder`` (SQLite: migrations, PostgreSQL: migrations_pg)."""
    found = []
    for entry in (resources.files("taskdeck.store") / folder).iterdir():
        if entry.name.endswith(".sql") and entry.name[:4].isdigit():
            found.append((int(entry.name[:4]), entry.read_text()))
    return sorted(found)


def to_json(value: Any) -> str | None:
    """Compact JSON text, as both stores keep it (non-ASCII kept), or None."""
    return None if value is None else json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def task_from_row(row: Mapping[str, Any]) -> Task:
    values = {k: row[k] for k in TASK_COLUMNS}
    for k in JSON_COLUMNS:
        if values[k] is not None:
            values[k] = json.loads(values[k])
    values["status"] = TaskStatus(values["status"])
    return Task(**values)


def event_from_row(row: Mapping[str, Any]) -> Event:
    return Event(
        seq=row["seq"],
        task_id=row["task_id"],
        type=row["type"],
        origin=Origin(row["origin"]),
        data=row["data"],
        received_at=row["received_at"],
        upstream_ts=row["upstream_ts"],
        dedup_key=row["dedup_key"],
    )


@dataclass(slots=True)
class Gathered:
    """A run of consecutive events and unguarded patches, to be written together."""

    events: list[AppendEvent] = field(default_factory=list)
    patches: dict[str, dict[str, Any]] = field(default_factory=dict)  # task id -> merged changes


def gather(writes: Sequence[Write]) -> Iterator[Gathered | Write]:
    """The writes in order, with runs of events and unguarded patches gathered into one :class:`Gathered`.

    A follower patches its task on every event, and one UPDATE per task per batch is enough. Any other
    write (a new task, a guarded patch, a key…) comes alone, after what was gathered before it.
    """
    run = Gathered()
    for write in writes:
        if isinstance(write, AppendEvent):
            run.events.append(write)
        elif isinstance(write, PatchTask) and write.only_if_status is None:
            run.patches.setdefault(write.task_id, {}).update(write.changes)
        else:
            if run.events or run.patches:
                yield run
                run = Gathered()
            yield write
    if run.events or run.patches:
        yield run


BATCH_COLUMNS = (
    "id owner name status spec columns resume_key row_count created_at taskgroup_id added_rows events_cursor "
    "completed_at lease_owner lease_expires upstream_counts"
).split()
BATCH_JSON_COLUMNS = frozenset({"spec", "columns", "upstream_counts"})


def batch_values(batch: Batch) -> list[Any]:
    """A batch's column values in ``BATCH_COLUMNS`` order, JSON columns as text."""
    values = []
    for col in BATCH_COLUMNS:
        value = getattr(batch, col)
        values.append(to_json(value) if col in BATCH_JSON_COLUMNS else value.value if col == "status" else value)
    return values


def batch_changes(changes: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """The columns and stored values of a batch patch; raises ValueError for an unknown or fixed column."""
    cols: list[str] = []
    values: list[Any] = []
    for key, value in changes.items():
        if key not in BATCH_COLUMNS or key in ("id", "owner", "resume_key"):
            raise ValueError(f"unknown or fixed batch column {key!r}")
        cols.append(key)
        values.append(to_json(value) if key in BATCH_JSON_COLUMNS else getattr(value, "value", value))
    return cols, values


def batch_from_row(row: Mapping[str, Any]) -> Batch:
    values = {k: row[k] for k in BATCH_COLUMNS}
    for k in BATCH_JSON_COLUMNS:
        values[k] = None if values[k] is None else json.loads(values[k])
    values["status"] = BatchStatus(values["status"])
    return Batch(**values)
