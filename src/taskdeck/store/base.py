"""The narrow store interface the engine and the web layer use.

Writes are value objects applied in batches, one transaction per batch (the
engine's writer does group commit). Reads return frozen models. Everything is
synchronous; async callers run it in threads. A PostgreSQL store implements the
same protocol (a later issue), so nothing above this module knows which
database it talks to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskdeck.models import Event, Origin, Task, TaskStatus

__all__ = ["AppendEvent", "InsertTask", "PatchTask", "PutKey", "Store", "UsageReport", "Write"]


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


Write = PutKey | InsertTask | PatchTask | AppendEvent


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

    def delete_task(self, task_id: str, *, only_if_status: Sequence[str]) -> bool:
        """Remove a task and its events when its status is one of ``only_if_status``; True if removed."""
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
    ) -> list[Task]:
        """An owner's tasks, newest first; ``before`` is the (created_at, id) of the last one seen."""
        ...

    def events(self, task_id: str, *, after_seq: int = 0, limit: int | None = None) -> list[Event]: ...

    def dedup_keys(self, task_id: str) -> set[str]: ...

    def get_key(self, owner: str) -> bytes | None: ...

    def claim(self, holder: str, now: float, ttl: float, limit: int) -> list[Task]:
        """Lease up to ``limit`` followed tasks that nobody holds (or whose lease expired), newest activity first."""
        ...

    def renew(self, holder: str, task_ids: Sequence[str], expires: float) -> set[str]:
        """Extend ``holder``'s leases; return the ids it still holds."""
        ...

    def release(self, holder: str, task_ids: Sequence[str]) -> None: ...

    def expire_submitting(self, now: float, message: str) -> list[str]:
        """Tasks stuck in ``submitting`` with an expired lease become ``submit_unknown``; return their ids."""
        ...

    def count_tasks(self, owner: str | None = None) -> dict[str, int]: ...

    def put_usage(self, holder: str, usage: dict[str, dict[int, int]], now: float, *, final: bool = False) -> None:
        """Record this process's upstream requests per owner per second (the last minute)."""
        ...

    def get_usage(self, since: float, exclude_holder: str) -> list[UsageReport]:
        """Other processes' latest reports, made since ``since``."""
        ...
