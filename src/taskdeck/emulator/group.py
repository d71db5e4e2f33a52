"""One emulated task group: its runs, its status, and its resumable event log.

Group events are ordered by a key ``(time_ns, run_index, sub)``. A run's
completion lands at its planned end, which is always after the moment it was
added, so events already delivered never change order when runs are added
later: the key, written as an ``event_id``, is a stable resume cursor.

``time_ns`` is a wall-clock instant (nanoseconds since the epoch), reached from the
monotonic clock by one offset fixed when the process starts: runs keep their wall
creation time in the state file, so after a restart the same events get the same
ids (to within the float rounding of a few hundred nanoseconds) and a cursor taken
before the restart still resumes where it was.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from taskdeck.emulator.run import Run, rfc3339

__all__ = ["Group", "GroupEventKey", "mono_from_ns", "now_ns", "parse_event_id"]

GroupEventKey = tuple[int, int, int]
# Sub-positions inside one key: a run's state event, then the status after it.
RUN_STATE, STATUS_AFTER = 0, 1
SNAPSHOT_INDEX = 1 << 40  # a connection's status snapshot sorts after every run at that instant
# Fixed once: the monotonic clock drives everything, this only names its instants in wall time.
WALL_OFFSET_NS = time.time_ns() - time.monotonic_ns()


def now_ns() -> int:
    """This instant on the event-key clock (wall nanoseconds)."""
    return time.monotonic_ns() + WALL_OFFSET_NS


def mono_from_ns(ns: int) -> float:
    """An event-key instant on the monotonic clock (seconds), for sleeping until it."""
    return (ns - WALL_OFFSET_NS) / 1e9


def format_event_id(key: GroupEventKey) -> str:
    return f"{key[0]}-{key[1]}-{key[2]}"


def parse_event_id(text: str) -> GroupEventKey | None:
    """The key an ``event_id`` stands for, or None when it is not one of ours."""
    parts = text.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(slots=True)
class Group:
    """A task group. Runs are appended, never removed."""

    taskgroup_id: str
    owner: str  # SHA-256 of the creating key
    metadata: dict[str, Any] | None
    created_wall: datetime
    created_mono: float = field(default_factory=time.monotonic)
    runs: list[Run] = field(default_factory=list)
    _cached: tuple[float, dict[str, Any]] | None = None  # (when, status) for refresh_status=false

    def cached_status(self, max_age: float = 1.0) -> dict[str, Any]:
        """The status as last computed, recomputed when older than ``max_age`` seconds (cheap for big groups)."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > max_age:
            self._cached = (now, self.status(now))
        return self._cached[1]

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The TaskGroupStatus object at ``now`` (monotonic)."""
        now = time.monotonic() if now is None else now
        counts: Counter[str] = Counter()
        # RFC 3339 strings of one format sort like the instants they name.
        modified = rfc3339(self.created_wall)
        for run in self.runs:
            wire = run.wire(now - run.created_mono)
            counts[wire["status"]] += 1
            modified = max(modified, wire["modified_at"])
        active = counts["queued"] + counts["running"] + counts["cancelling"]
        self._cached = (
            now,
            {
                "num_task_runs": len(self.runs),
                "task_run_status_counts": dict(counts),
                "is_active": active > 0,
                "status_message": None,
                "modified_at": modified,
            },
        )
        return {
            "num_task_runs": len(self.runs),
            "task_run_status_counts": dict(counts),
            "is_active": active > 0,
            "status_message": None,
            "modified_at": modified,
        }

    def wire(self, now: float | None = None) -> dict[str, Any]:
        """The TaskGroupResponse object."""
        return {
            "taskgroup_id": self.taskgroup_id,
            "metadata": self.metadata,
            "status": self.status(now),
            "created_at": rfc3339(self.created_wall),
        }

    def end_key(self, index: int) -> GroupEventKey:
        run = self.runs[index]
        return (int((run.created_mono + run.ends_at) * 1e9) + WALL_OFFSET_NS, index, RUN_STATE)

    def events_between(self, after: GroupEventKey | None, until_ns: int) -> list[tuple[GroupEventKey, int]]:
        """(key, run index) of completions with ``after < key`` and time ``<= until_ns`` (see ``now_ns``), in
        order."""
        found = []
        for i in range(len(self.runs)):
            k = self.end_key(i)
            if k[0] <= until_ns and (after is None or k > after):
                found.append((k, i))
        found.sort()
        return found

    def next_end_ns(self, after_ns: int) -> int | None:
        """The next completion time strictly after ``after_ns``, if any run is still active."""
        ends = [k[0] for k in (self.end_key(i) for i in range(len(self.runs))) if k[0] > after_ns]
        return min(ends) if ends else None

    def cursor_now(self) -> str:
        """An ``event_id`` positioned at this instant: resuming there yields only later events."""
        return format_event_id((now_ns(), SNAPSHOT_INDEX, STATUS_AFTER))

    def run_cursor(self, index: int) -> str:
        """The group-runs cursor just after run ``index``."""
        return f"run-{index}"


def parse_run_cursor(text: str) -> int | None:
    """Index of the last run a group-runs cursor has seen, or None when malformed."""
    if not text.startswith("run-") or not text[4:].isdigit():
        return None
    return int(text[4:])
