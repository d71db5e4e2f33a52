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

A group may hold 10,000 runs or more, and its event stream asks for the status
once per event, so nothing here walks the runs per question. Every run is planned
in full at creation (run.py): the instants it starts running and ends are known
when it is added. :class:`_Timeline` keeps those instants in sorted lists, updated
as runs are appended (each run once), and answers the status, ``modified_at`` and
the next completions by bisection.
"""

from __future__ import annotations

import math
import struct
import time
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


def end_key_of(run: Run, index: int) -> GroupEventKey | None:
    """The group-event key of run ``index``'s completion, or None for a run that never ends.

    ``duration=inf`` passes the directive parser; such a run stays running forever, so it has
    no completion event (``int(inf)`` would raise).
    """
    end = (run.created_mono + run.ends_at) * 1e9
    if not math.isfinite(end):
        return None
    return (int(end) + WALL_OFFSET_NS, index, RUN_STATE)


# -- exact thresholds -----------------------------------------------------------------
def _ordered(x: float) -> int:
    """A float's bits as an integer that sorts like the float (for bisecting between two floats)."""
    bits: int = struct.unpack("<q", struct.pack("<d", x))[0]
    return bits if bits >= 0 else -(bits & 0x7FFF_FFFF_FFFF_FFFF)


def _from_ordered(n: int) -> float:
    bits = n if n >= 0 else (-n) | -0x8000_0000_0000_0000
    value: float = struct.unpack("<d", struct.pack("<q", bits))[0]
    return value


def threshold(created: float, offset: float, *, steps: int = 8) -> float:
    """The least float ``now`` with ``now - created >= offset`` (``+inf`` when there is none).

    A run's status compares ``elapsed = now - created`` with its planned offsets (run.py). To
    answer by bisecting over instants, each offset must become one instant ``T`` with
    ``now - created >= offset`` exactly when ``now >= T``. ``created + offset`` is not that
    instant to the last bit (both the sum and the subtraction round), but the subtraction is
    monotone in ``now``, so such a least ``T`` exists and lies within a few ulps of the sum:
    step there (``steps`` at most), and bisect over the floats' bit patterns in the unlikely case
    the steps run out (tests pass ``steps=0`` to check that path).
    """
    if math.isnan(offset) or offset == math.inf:
        return math.inf  # the comparison never holds at a finite instant

    def holds(now: float) -> bool:
        return now - created >= offset

    t = created + offset
    if holds(t):
        for _ in range(steps):
            below = math.nextafter(t, -math.inf)
            if not holds(below):
                return t
            t = below
        lo, hi = -math.inf, t  # lo: holds nowhere at -inf for a finite created and offset
    else:
        for _ in range(steps):
            t = math.nextafter(t, math.inf)
            if holds(t):
                return t
        lo, hi = t, math.inf
        if not holds(hi):
            return math.inf
    # Invariant: not holds(lo), holds(hi). Bisect over the ordered bit patterns (at most 64 steps).
    a, b = _ordered(lo), _ordered(hi)
    while b - a > 1:
        mid = (a + b) // 2
        if holds(_from_ordered(mid)):
            b = mid
        else:
            a = mid
    return _from_ordered(b)


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC, as ``rfc3339`` reads it (a naive time counts as local)."""
    return moment.astimezone(UTC)


def _wall_at(run: Run, offset: float) -> datetime | None:
    """The instant ``modified_at`` of ``run`` names once it is ``offset`` seconds old (run.py's arithmetic).

    None when the instant is beyond what a datetime can hold (a ``duration`` of a billion
    years): it is never reached, and the old per-run loop would have failed there anyway.
    """
    try:
        return _utc(run.created_wall + timedelta(seconds=offset))
    except (OverflowError, ValueError):
        return None


class _Timeline:
    """Sorted transition instants of a group's runs (monotonic seconds), for answers by bisection.

    A run ``i`` is queued before ``S_i``, running in ``[S_i, E_i)`` and terminal from ``E_i``, where
    ``R_i = threshold(created, running_at)``, ``E_i = threshold(created, ends_at)`` and
    ``S_i = min(R_i, E_i)`` (a run whose end comes first skips running, as ``Run.status_at`` does).

    Runs only ever arrive with an index above all others, which is what keeps each structure
    cheap to extend: a prefix or suffix minimum of run indexes changes only at the new entry.
    """

    __slots__ = (
        "end_keys",
        "ends",
        "ends_first",
        "gap_hi",
        "gap_lo",
        "indexed",
        "leave_queue",
        "mod_at",
        "mod_max",
        "queued_first",
        "run_hi",
        "run_idx",
        "run_lo",
        "runs_created_max",
    )

    def __init__(self) -> None:
        self.indexed = 0  # runs[:indexed] are in the timeline
        # S_i sorted; queued_first[j] = least run index among the runs of leave_queue[j:] (still queued).
        self.leave_queue: list[float] = []
        self.queued_first: list[int] = []
        # E_i of the runs that complete / fail, sorted; ends_first[...][j] = least index among [:j + 1].
        self.ends: dict[bool, list[float]] = {False: [], True: []}
        self.ends_first: dict[bool, list[int]] = {False: [], True: []}
        # The least index of the runs running at each instant, a step function: on [run_lo[j], run_hi[j])
        # it is run_idx[j]; gaps are the intervals where no run runs. A new run (the highest index yet)
        # can only be the least one where nobody else runs, so it fills the gaps it overlaps, and
        # nothing it does not overlap changes: each gap is filled once, splits add at most one per run.
        self.run_lo: list[float] = []
        self.run_hi: list[float] = []
        self.run_idx: list[int] = []
        self.gap_lo: list[float] = [-math.inf]
        self.gap_hi: list[float] = [math.inf]
        # modified_at: every run's creation counts at any instant (runs_created_max); the instants it
        # starts running and ends, sorted, with the running maximum of the wall times they show. Wall
        # order need not follow monotonic order (restored runs map wall to monotonic time afresh; the
        # two clocks are read apart; microsecond rounding), hence a running maximum. The old loop took
        # the maximum of RFC 3339 strings; one format, so the string of the latest instant is the same.
        self.runs_created_max: datetime | None = None
        self.mod_at: list[float] = []
        self.mod_max: list[datetime] = []
        # Completion keys of group events, sorted: events_between and next_end_ns bisect them.
        self.end_keys: list[GroupEventKey] = []

    # -- adding ------------------------------------------------------------------------
    def add(self, run: Run, index: int) -> None:
        """Take in run ``index`` (the highest index yet)."""
        r = threshold(run.created_mono, run.running_at)
        e = threshold(run.created_mono, run.ends_at)
        s = min(r, e)

        pos = bisect_right(self.leave_queue, s)
        # Below pos nothing changes (each entry already counts a lower index); at pos, the new run is
        # the least only when nothing is after it.
        self.queued_first.insert(pos, self.queued_first[pos] if pos < len(self.queued_first) else index)
        self.leave_queue.insert(pos, s)

        if e != math.inf:
            ends, first = self.ends[run.fails], self.ends_first[run.fails]
            pos = bisect_right(ends, e)
            first.insert(pos, first[pos - 1] if pos else index)
            ends.insert(pos, e)

        if s < e:
            self._fill_gaps(s, e, index)

        created = _utc(run.created_wall)
        if self.runs_created_max is None or created > self.runs_created_max:
            self.runs_created_max = created
        if r < e:  # a run that skips running never shows running_at as its modified_at
            self._add_modified(r, _wall_at(run, run.running_at))
        if e != math.inf:
            self._add_modified(e, _wall_at(run, run.ends_at))

        key = end_key_of(run, index)
        if key is not None:
            self.end_keys.insert(bisect_right(self.end_keys, key), key)
        self.indexed = index + 1

    def _fill_gaps(self, start: float, end: float, index: int) -> None:
        """Make run ``index`` the least running one wherever no run ran within ``[start, end)``."""
        gap_lo, gap_hi = self.gap_lo, self.gap_hi
        first = bisect_right(gap_lo, start) - 1
        if first < 0 or gap_hi[first] <= start:
            first += 1  # that gap ends before the run starts
        last = first
        keep_lo: list[float] = []
        keep_hi: list[float] = []
        while last < len(gap_lo) and gap_lo[last] < end:
            lo, hi = gap_lo[last], gap_hi[last]
            piece_lo, piece_hi = max(lo, start), min(hi, end)
            at = bisect_right(self.run_lo, piece_lo)
            self.run_lo.insert(at, piece_lo)
            self.run_hi.insert(at, piece_hi)
            self.run_idx.insert(at, index)
            if lo < start:
                keep_lo.append(lo)
                keep_hi.append(start)
            if hi > end:
                keep_lo.append(end)
                keep_hi.append(hi)
            last += 1
        gap_lo[first:last] = keep_lo
        gap_hi[first:last] = keep_hi

    def _add_modified(self, at: float, wall: datetime | None) -> None:
        if wall is None:
            return
        pos = bisect_right(self.mod_at, at)
        self.mod_at.insert(pos, at)
        self.mod_max.insert(pos, max(self.mod_max[pos - 1], wall) if pos else wall)
        # Later maxima below the new one rise to it. They are non-decreasing, so this stops at the first
        # that is already as late; wall times mostly follow monotonic ones, so nearly always at once.
        for j in range(pos + 1, len(self.mod_max)):
            if self.mod_max[j] >= wall:
                break
            self.mod_max[j] = wall

    # -- asking --------------------------------------------------------------------------
    def counts(self, now: float) -> dict[str, int]:
        """``task_run_status_counts`` at ``now``, keys in the order the per-run loop met them.

        That loop filled a Counter in run order, so a status appears at the first run having it;
        the least run index of each status is what orders the keys (byte-for-byte the old JSON).
        """
        n = self.indexed
        left = bisect_right(self.leave_queue, now)
        completed = bisect_right(self.ends[False], now)
        failed = bisect_right(self.ends[True], now)
        found: list[tuple[int, str, int]] = []
        if left < n:
            found.append((self.queued_first[left], "queued", n - left))
        if left - completed - failed > 0:
            j = bisect_right(self.run_lo, now) - 1
            found.append((self.run_idx[j], "running", left - completed - failed))
        if completed:
            found.append((self.ends_first[False][completed - 1], "completed", completed))
        if failed:
            found.append((self.ends_first[True][failed - 1], "failed", failed))
        found.sort()
        return {name: count for _, name, count in found}

    def modified(self, now: float) -> datetime | None:
        """The latest run ``modified_at`` at ``now`` (None for no run)."""
        pos = bisect_right(self.mod_at, now)
        if not pos:
            return self.runs_created_max
        assert self.runs_created_max is not None  # a transition means a run
        return max(self.runs_created_max, self.mod_max[pos - 1])

    def events_between(self, after: GroupEventKey | None, until_ns: int) -> list[tuple[GroupEventKey, int]]:
        lo = 0 if after is None else bisect_right(self.end_keys, after)
        # Every key below (until_ns + 1, -1, -1) has time <= until_ns (indexes and subs are >= 0).
        hi = bisect_left(self.end_keys, (until_ns + 1, -1, -1))
        return [(key, key[1]) for key in self.end_keys[lo:hi]]

    def next_end_ns(self, after_ns: int) -> int | None:
        pos = bisect_left(self.end_keys, (after_ns + 1, -1, -1))
        return self.end_keys[pos][0] if pos < len(self.end_keys) else None

    def has_events_after(self, key: GroupEventKey) -> bool:
        return bisect_right(self.end_keys, key) < len(self.end_keys)


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
    # Whoever appends to ``runs`` (app, state file) need not tell: the timeline takes in new runs
    # on the next question.
    _timeline: _Timeline = field(default_factory=_Timeline, init=False, repr=False, compare=False)

    def _synced(self) -> _Timeline:
        timeline = self._timeline
        for index in range(timeline.indexed, len(self.runs)):
            timeline.add(self.runs[index], index)
        return timeline

    def cached_status(self, max_age: float = 1.0) -> dict[str, Any]:
        """The status as last computed, recomputed when older than ``max_age`` seconds (cheap for big groups)."""
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > max_age:
            self._cached = (now, self.status(now))
        return self._cached[1]

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The TaskGroupStatus object at ``now`` (monotonic); O(log n) in the group's runs."""
        now = time.monotonic() if now is None else now
        timeline = self._synced()
        counts = timeline.counts(now)
        # The latest instant, written once: RFC 3339 strings of one format sort like the instants they name.
        latest = timeline.modified(now)
        created = _utc(self.created_wall)
        modified = rfc3339(created if latest is None or created >= latest else latest)
        active = counts.get("queued", 0) + counts.get("running", 0) + counts.get("cancelling", 0)
        # Two equal dicts, not one: a caller changing its answer must not change the cached one.
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
            "task_run_status_counts": counts,
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

    def end_key(self, index: int) -> GroupEventKey | None:
        """The event key of run ``index``'s completion (None when it never ends)."""
        return end_key_of(self.runs[index], index)

    def events_between(self, after: GroupEventKey | None, until_ns: int) -> list[tuple[GroupEventKey, int]]:
        """(key, run index) of completions with ``after < key`` and time ``<= until_ns`` (see ``now_ns``), in
        order; O(log n + found)."""
        return self._synced().events_between(after, until_ns)

    def next_end_ns(self, after_ns: int) -> int | None:
        """The next completion time strictly after ``after_ns``, if any run is still active; O(log n)."""
        return self._synced().next_end_ns(after_ns)

    def has_events_after(self, key: GroupEventKey) -> bool:
        """True when some completion sorts after ``key`` (sent or not yet happened); O(log n)."""
        return self._synced().has_events_after(key)

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
