"""Taskdeck's records: tasks, stored events, statuses. Frozen dataclasses, explicit enums."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "ACTIVE_UPSTREAM",
    "Batch",
    "BatchStatus",
    "Event",
    "Origin",
    "Task",
    "TaskStatus",
    "new_batch_id",
    "new_task_id",
]


class TaskStatus(StrEnum):
    """Our status of a task. Upstream statuses map onto the same names where they exist."""

    PENDING = "pending"  # stored, not yet sent upstream; safe to submit
    SUBMITTING = "submitting"  # the create request may be in flight
    SUBMIT_UNKNOWN = "submit_unknown"  # a run may or may not exist, and reconciling could not tell
    REJECTED = "rejected"  # upstream refused the create (401, 402, 403, 422)
    QUEUED = "queued"
    RUNNING = "running"
    ACTION_REQUIRED = "action_required"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_followed(self) -> bool:
        """A supervisor should hold this task (submit it or follow its run)."""
        return self in _FOLLOWED

    @property
    def can_resubmit(self) -> bool:
        """The task ended without a result, so sending it again as a new run makes sense."""
        return self in _RESUBMITTABLE


_TERMINAL = frozenset(
    {TaskStatus.SUBMIT_UNKNOWN, TaskStatus.REJECTED, TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
_RESUBMITTABLE = frozenset({TaskStatus.SUBMIT_UNKNOWN, TaskStatus.REJECTED, TaskStatus.FAILED, TaskStatus.CANCELLED})
_FOLLOWED = frozenset(
    {
        TaskStatus.PENDING,
        TaskStatus.SUBMITTING,  # a crashed holder's create is reconciled by whoever claims the task
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.ACTION_REQUIRED,
        TaskStatus.CANCELLING,
    }
)
# Upstream statuses for which a run is still going (is_active, plus action_required, which
# the spec counts inactive but which is not an end either).
ACTIVE_UPSTREAM = frozenset({"queued", "running", "cancelling", "action_required"})


class Origin(StrEnum):
    """Who produced a stored event."""

    UPSTREAM = "upstream"  # received from Parallel, stored as received
    TASKDECK = "taskdeck"  # our own lifecycle notes (submitted, stream connected, ...)


def new_batch_id() -> str:
    """Our own batch id: ``bat_`` and 24 random hex characters."""
    return "bat_" + secrets.token_hex(12)


def new_task_id() -> str:
    """Our own task id: ``tsk_`` and 24 random hex characters."""
    return "tsk_" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class Task:
    """One task: the request, the upstream run that answers it, and what we know of that run."""

    id: str
    owner: str  # keyed hash of the API key; never the key
    processor: str
    request: dict[str, Any]  # the TaskRunInput sent (or to be sent) upstream
    status: TaskStatus
    created_at: float
    run_id: str | None = None
    interaction_id: str | None = None
    upstream_status: str | None = None
    error: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] | None = None
    output: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None  # the latest progress_stats event
    progress_meter: float | None = None
    cost_usd: float | None = None
    follow_up_of: str | None = None
    submitted_at: float | None = None
    first_event_at: float | None = None
    last_event_at: float | None = None
    completed_at: float | None = None
    message: str | None = None  # a note for people: why rejected, what submit_unknown means
    lease_owner: str | None = None
    lease_expires: float | None = None
    # The current submit attempt: the owner's task group the run is created in, the token it is
    # tagged with, the group's runs cursor before the create, and when the create was last sent.
    submit_group: str | None = None
    submit_token: str | None = None
    submit_cursor: str | None = None
    submit_started_at: float | None = None
    # A row of a batch (its index in the input, from 0): the batch's supervisor follows it, not a follower.
    batch_id: str | None = None
    row_index: int | None = None
    row_values: dict[str, Any] | None = None  # the row as read from the input, every column

    @property
    def input(self) -> Any:
        return self.request.get("input")

    def input_preview(self, limit: int = 120) -> str:
        value = self.input
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Event:
    """One stored event of a task, upstream or ours, in arrival order (``seq``)."""

    seq: int
    task_id: str
    type: str
    origin: Origin
    data: str  # the JSON text as received (upstream) or as we wrote it (ours)
    received_at: float
    upstream_ts: str | None = None
    dedup_key: str | None = None

    @property
    def payload(self) -> Any:
        try:
            return json.loads(self.data)
        except json.JSONDecodeError:
            return None


class BatchStatus(StrEnum):
    """Where a batch is: its rows are being added upstream, its runs are going, or every row ended."""

    PENDING = "pending"  # rows stored; runs not all added to the group yet
    RUNNING = "running"  # every row's run exists; some are still going
    COMPLETED = "completed"  # every row ended (completed or failed: failed rows stay, to be retried)


@dataclass(frozen=True, slots=True)
class Batch:
    """One table enriched row by row: one Parallel task group, one run per row (each row a Task)."""

    id: str
    owner: str
    name: str  # the input file's name, or a label
    status: BatchStatus
    spec: dict[str, Any]  # processor, task_spec, input mapping, source_policy, metadata: the same for every row
    columns: list[str]  # the input's columns, in order
    resume_key: str  # SHA-256 of the input's bytes and the canonical spec: running it again finds this batch
    row_count: int
    created_at: float
    taskgroup_id: str | None = None
    added_rows: int = 0  # rows 0..added_rows-1 have their runs added upstream (added in row order, by chunks)
    events_cursor: str | None = None  # the group events stream's last_event_id
    completed_at: float | None = None
    lease_owner: str | None = None
    lease_expires: float | None = None
    # Runs per status as Parallel last reported them (the group's task_group_status); None before the first.
    upstream_counts: dict[str, int] | None = None
