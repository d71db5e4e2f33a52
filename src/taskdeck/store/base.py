"""The narrow store interface the engine and the web layer use.

Writes are value objects applied in batches, one transaction per batch (the
engine's writer does group commit). Reads return frozen models. Everything is
synchronous; async callers run it in threads. A PostgreSQL store implements the
same protocol (store/postgres.py), so nothing above this module knows which
database it talks to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskdeck.models import Batch, Event, Origin, Task, TaskStatus

__all__ = [
    "AdvanceGroupCursor",
    "Announce",
    "AppendEvent",
    "FeedNote",
    "InsertBatch",
    "InsertTask",
    "OwnerGroup",
    "PatchBatch",
    "PatchTask",
    "ProcessInfo",
    "PutKey",
    "Store",
    "UsageReport",
    "Write",
    "filled_notes",
]


@dataclass(frozen=True, slots=True)
class PutKey:
    """Store (or refresh) an owner's encrypted API key."""

    owner: str
    ciphertext: bytes
    last4: str
    at: float


@dataclass(frozen=True, slots=True)
class InsertTask:
    """A new task row."""

    task: Task


@dataclass(frozen=True, slots=True)
class PatchTask:
    """Set some columns of a task. ``only_if_status`` guards against overwriting a newer state."""

    task_id: str
    changes: dict[str, Any]
    only_if_status: tuple[TaskStatus, ...] | None = None


@dataclass(frozen=True, slots=True)
class AppendEvent:
    """One event to store; ignored when ``(task_id, dedup_key)`` is already there."""

    task_id: str
    type: str
    origin: Origin
    data: str
    received_at: float
    upstream_ts: str | None = None
    dedup_key: str | None = None
    owner: str = field(default="", compare=False)  # carried for the live feed, not stored


@dataclass(frozen=True, slots=True)
class AdvanceGroupCursor:
    """Remember a newer runs cursor of an owner's task group (ignored if the group was replaced)."""

    owner: str
    taskgroup_id: str
    run_cursor: str


@dataclass(frozen=True, slots=True)
class FeedNote:
    """What one transaction changed about one task, for the live feed of other processes.

    Carries ids and small values only (PostgreSQL notifications hold at most 8 KB): the events
    themselves are read from the store by whoever wants them.
    """

    task_id: str
    owner: str
    changes: dict[str, Any] = field(default_factory=dict)  # small scalar changes (status, progress_meter…)
    first_seq: int | None = None  # the task's events inserted by the transaction, if any
    last_seq: int | None = None
    at: float | None = None  # when it was committed (as the writer's clock says), for the feed's lag


@dataclass(frozen=True, slots=True)
class Announce:
    """Publish feed notes to every process sharing the database, atomically with the transaction.

    The store fills each note's seq range from the events it inserted for that task in the same
    ``apply`` (so put it last). SQLite appends rows to ``feed_log``; PostgreSQL sends ``NOTIFY``,
    which is delivered at commit: other processes never see what was not stored.
    """

    holder: str
    notes: tuple[FeedNote, ...]


@dataclass(frozen=True, slots=True)
class InsertBatch:
    """A new batch row and its rows, in the same transaction.

    ``tasks`` makes the batch's rows (tasks with its id) one at a time when called: the store inserts
    them as they come, so a 50,000-row table is never held whole, and calls it again if the apply is
    retried. Nothing of the batch is stored unless every row is.
    """

    batch: Batch
    tasks: Callable[[], Iterable[Task]] | None = None


@dataclass(frozen=True, slots=True)
class PatchBatch:
    """Set some columns of a batch (status, taskgroup_id, added_rows, events_cursor, completed_at)."""

    batch_id: str
    changes: dict[str, Any]


Write = PutKey | InsertTask | PatchTask | AppendEvent | AdvanceGroupCursor | Announce | InsertBatch | PatchBatch


@dataclass(frozen=True, slots=True)
class OwnerGroup:
    """The task group at Parallel in which Taskdeck creates an owner's runs."""

    owner: str
    taskgroup_id: str
    run_cursor: str | None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One Taskdeck process as it last reported itself (``taskdeck status``)."""

    holder: str
    kind: str  # serve, web or worker
    host: str
    pid: int
    started_at: float
    seen_at: float
    following: int
    feed_lag: float | None = None


@dataclass(frozen=True, slots=True)
class UsageReport:
    """One process's upstream requests with one key, per unix second, as of ``updated_at``."""

    owner: str
    holder: str
    buckets: dict[int, int]
    updated_at: float
    final: bool  # the process stopped cleanly: nothing after this report


class Store(Protocol):
    """What Taskdeck needs from a database."""

    def close(self) -> None: ...

    def apply(self, writes: Sequence[Write]) -> list[Event]:
        """Apply writes in order in one transaction; return the events actually inserted."""
        ...

    def get_task(self, task_id: str) -> Task | None: ...

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]: ...

    def get_task_by_run(self, run_id: str) -> Task | None: ...

    def delete_task(self, task_id: str, *, only_if_status: Sequence[str] | None = None) -> bool:
        """Remove a task and its events (only when its status is one of ``only_if_status``, if given)."""
        ...

    def list_tasks(
        self,
        owner: str,
        *,
        statuses: Sequence[str] | None = None,
        processor: str | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        oldest_first: bool = False,
        follow_up_of: str | None = None,
    ) -> list[Task]:
        """An owner's tasks, newest first (or oldest first); ``before`` is the (created_at, id) of the
        last one seen, in that order. ``follow_up_of`` keeps only the follow-ups of one task."""
        ...

    def events(self, task_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]: ...

    def dedup_keys(self, task_id: str) -> set[str]: ...

    def get_key(self, owner: str) -> bytes | None:
        """The owner's encrypted key, or None when none is stored (or it was forgotten)."""
        ...

    def forget_key(self, owner: str) -> bool:
        """Erase the owner's encrypted key (the row keeps only the owner hash); True if one was stored."""
        ...

    def owners_with_keys(self, owners: Sequence[str]) -> set[str]:
        """Those of ``owners`` that still have a stored key."""
        ...

    def spent_since(self, owner: str, since: float) -> float:
        """USD of the owner's tasks created since ``since`` that were not refused upstream."""
        ...

    # -- owner groups ------------------------------------------------------------------
    def get_owner_group(self, owner: str) -> OwnerGroup | None: ...

    def claim_owner_group(self, owner: str, taskgroup_id: str, now: float) -> OwnerGroup:
        """Record ``taskgroup_id`` as the owner's group unless one is recorded; return the one that is."""
        ...

    def drop_owner_group(self, owner: str, taskgroup_id: str) -> None:
        """Forget the owner's group if it is ``taskgroup_id`` (Parallel no longer knows it)."""
        ...

    # -- sessions ----------------------------------------------------------------------
    def put_session(self, id_hash: str, owner: str, now: float, expires_at: float) -> None: ...

    def get_session(self, id_hash: str, now: float) -> str | None:
        """The owner of an unexpired session, or None."""
        ...

    def delete_session(self, id_hash: str) -> bool: ...

    def delete_sessions(self, owner: str) -> int:
        """End every session of ``owner``; return how many there were."""
        ...

    def claim(self, holder: str, now: float, ttl: float, limit: int) -> list[Task]:
        """Lease up to ``limit`` followed tasks that nobody holds (or whose lease expired), newest activity first."""
        ...

    def renew(self, holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        """Extend ``holder``'s leases; return the ids it still holds."""
        ...

    def release(self, holder: str, task_ids: Sequence[str]) -> None: ...

    def put_process(self, info: ProcessInfo) -> None:
        """Register or refresh a process (at each heartbeat); rows unseen for a day are removed."""
        ...

    def drop_process(self, holder: str) -> None: ...

    # -- batches (a batch's rows are tasks with its id; list_tasks, count_tasks and claim skip them) --
    def get_batch(self, batch_id: str) -> Batch | None: ...

    def find_batch(self, owner: str, resume_key: str) -> Batch | None:
        """The owner's batch of this input and spec, if one was made (running it again resumes it)."""
        ...

    def list_batches(self, owner: str, *, limit: int = 50) -> list[Batch]:
        """The owner's batches, newest first."""
        ...

    def batch_rows(
        self,
        batch_id: str,
        *,
        after_index: int = -1,
        limit: int = 1000,
        statuses: Sequence[str] | None = None,
        changed_since: float | None = None,
    ) -> list[Task]:
        """A batch's rows in input order, from the first with ``row_index > after_index``; only those of
        ``statuses`` when given, and only those added upstream or ended after ``changed_since`` when given."""
        ...

    def batch_counts(self, batch_id: str) -> dict[str, int]:
        """A batch's rows per status."""
        ...

    def batch_cost(self, batch_id: str) -> float:
        """What the runs of a batch's rows cost so far, in USD (each attempt of a retried row counts)."""
        ...

    def claim_batches(self, holder: str, now: float, ttl: float, limit: int) -> list[Batch]:
        """Lease up to ``limit`` unfinished batches nobody holds, oldest first."""
        ...

    def renew_batches(self, holder: str, batch_ids: Sequence[str], expires: float) -> set[str]:
        """Extend the holder's leases on these batches; returns the ids still held."""
        ...

    def release_batches(self, holder: str, batch_ids: Sequence[str]) -> None: ...

    def bury_process(self, holder: str) -> int:
        """A process known to be dead: release every lease it held and remove it; returns the leases freed.

        Only for a death proven beyond doubt (its pid gone on this very machine): its streams closed
        with it, so the runs may be followed again at once instead of after their leases expire.
        """
        ...

    def processes(self) -> list[ProcessInfo]: ...

    def engines_alive(self, since: float) -> int:
        """Processes that follow runs (serve, worker) seen at or after ``since``."""
        ...

    def leases(self, now: float) -> dict[str, int]:
        """Live leases per holder."""
        ...

    def count_tasks(
        self, owner: str | None = None, *, processor: str | None = None, statuses: Sequence[str] | None = None
    ) -> dict[str, int]:
        """Tasks per status (of one owner, of one processor, in some statuses, when given)."""
        ...

    def put_usage(self, holder: str, usage: dict[str, dict[int, int]], now: float, *, final: bool = False) -> None:
        """Record this process's upstream requests per owner per second (the last minute)."""
        ...

    def get_usage(self, since: float, exclude_holder: str) -> list[UsageReport]:
        """Other processes' latest reports, made since ``since``."""
        ...


def filled_notes(announce: Announce, inserted: Sequence[Event]) -> list[FeedNote]:
    """``announce``'s notes with the seq range of the events inserted for each task; empty notes dropped."""
    ranges: dict[str, tuple[int, int]] = {}
    for event in inserted:
        low, high = ranges.get(event.task_id, (event.seq, event.seq))
        ranges[event.task_id] = (min(low, event.seq), max(high, event.seq))
    out = []
    for note in announce.notes:
        span = ranges.get(note.task_id)
        if span is None and not note.changes:
            continue
        out.append(
            FeedNote(note.task_id, note.owner, note.changes, span[0] if span else None, span[1] if span else None)
        )
    return out
