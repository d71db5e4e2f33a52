"""The three event streams: a run's events, a group's events, and a group's runs.

Run streams follow contract §8 exactly: every connection starts with a
``task_run.state`` for the current status; then the whole progress-message
history with original timestamps; then only the latest stats snapshot; then
live events; the stream ends with the final ``task_run.state`` (with output when
completed) or closes when its lifetime is over. A connection to a run that has
already ended sends the leading state (with output), the history, the final
stats and the final state again, then closes; clients de-duplicate state events
by (status, modified_at).

A run that vanishes (``vanish`` directive) is forgotten at a planned instant: an
open stream then just ends there, cleanly and with no terminal state, as when a
stream's lifetime is over.
"""

from __future__ import annotations

import heapq
import time
from typing import Any

from taskdeck.emulator.group import (
    STATUS_AFTER,
    Group,
    GroupEventKey,
    format_event_id,
    mono_from_ns,
    now_ns,
)
from taskdeck.emulator.run import Planned, Run, rfc3339
from taskdeck.emulator.sse import SseWriter
from taskdeck.taskspec import compact_json

__all__ = [
    "UNKNOWN_EVENT_TYPE",
    "UNKNOWN_MSG_KIND",
    "stream_group_events",
    "stream_group_runs",
    "stream_run_events",
]

UNKNOWN_EVENT_TYPE = "task_run.emulator_diagnostic"
UNKNOWN_MSG_KIND = "task_run.progress_msg.tool"  # the guide's sample kind, absent from the spec's enum


async def _emit(writer: SseWriter, run: Run, event_type: str, data: str) -> bool:
    """Send one run event, and remember it when the emulator records what it sent."""
    ok = await writer.event(event_type, data)
    if ok and run.sent is not None:
        run.sent[(event_type, data)] = None
    return ok


async def _inject(writer: SseWriter, run: Run, faults: dict[str, float | None]) -> bool:
    """Extra events right after the leading state: unknown types, then a malformed line."""
    if "unknown" in faults:
        # Stable content (stamped with the run's creation time) so a client sees the
        # same unknown events on every connection and can de-duplicate them.
        stamp = rfc3339(run.created_wall)
        if not await _emit(
            writer,
            run,
            UNKNOWN_EVENT_TYPE,
            compact_json({"type": UNKNOWN_EVENT_TYPE, "note": "an event type clients do not know", "at": stamp}),
        ):
            return False
        text = "Calling a tool through a message kind clients do not know"
        if not await _emit(
            writer, run, UNKNOWN_MSG_KIND, compact_json({"type": UNKNOWN_MSG_KIND, "message": text, "timestamp": stamp})
        ):
            return False
    malformed = 'event: task_run.progress_msg.plan\ndata: {"type":"task_run.progress_msg.pl\n\n'
    return "malformed" not in faults or await writer.raw(malformed)


def _history(run: Run, elapsed: float) -> list[Planned]:
    past: list[Planned] = [m for m in run.messages if m.offset <= elapsed]
    stats = [s for s in run.stats if s.offset <= elapsed]
    if stats:
        past.append(stats[-1])  # only the latest snapshot is replayed
    return past


async def stream_run_events(writer: SseWriter, run: Run, lifetime: float, faults: dict[str, float | None]) -> None:
    """Serve one connection to a run's event stream (headers already sent)."""
    connected = time.monotonic()
    gone = run.vanishes_mono  # the run is forgotten then: every stream open on it ends at once
    if "hang" in faults:
        await writer.sleep_until(min(connected + float(faults["hang"] or 0), gone))
        return
    if connected >= gone:  # vanished between the lookup and now
        return
    elapsed = run.elapsed(connected)
    leading = run.state_event(elapsed)
    if not await _emit(writer, run, "task_run.state", compact_json(leading)):
        return
    if not await _inject(writer, run, faults):
        return
    for ev in _history(run, elapsed):
        if not await _emit(writer, run, ev.type, ev.data):
            return
    if run.is_done(elapsed):
        await _emit(writer, run, "task_run.state", compact_json(run.state_event(run.ends_at)))
        return

    deadline = min(connected + lifetime, gone)
    future_messages: list[Planned] = [m for m in run.messages if m.offset > elapsed]
    future_stats: list[Planned] = [s for s in run.stats if s.offset > elapsed]
    upcoming = heapq.merge(future_messages, future_stats, key=lambda e: e.offset)
    for ev in upcoming:
        at = run.created_mono + ev.offset
        if at > deadline:
            break
        if not await writer.sleep_until(at) or not await _emit(writer, run, ev.type, ev.data):
            return
    end = run.created_mono + run.ends_at
    if end > deadline or end >= gone:
        # Lifetime over, or the run forgotten (a run vanishing at its very end never
        # completes for clients): the server closes the stream with no terminal state.
        await writer.sleep_until(deadline)
        return
    if await writer.sleep_until(end):
        await _emit(writer, run, "task_run.state", compact_json(run.state_event(run.ends_at)))


def _status_event(group: Group, key: GroupEventKey) -> str:
    return compact_json({"type": "task_group_status", "event_id": format_event_id(key), "status": group.status()})


def _run_state(group: Group, index: int, key: GroupEventKey) -> str:
    run = group.runs[index]
    event = run.state_event(run.ends_at, event_id=format_event_id(key), with_output=False)
    return compact_json(event)


async def stream_group_events(writer: SseWriter, group: Group, after: GroupEventKey | None, lifetime: float) -> None:
    """Serve a group's event stream from cursor ``after`` until no run is active or ``lifetime`` ends."""
    connected = time.monotonic()
    deadline = connected + lifetime
    connected_ns = now_ns()
    for key, index in group.events_between(after, connected_ns):
        if not await writer.event("task_run.state", _run_state(group, index, key)):
            return
    last: GroupEventKey = (connected_ns, 1 << 40, STATUS_AFTER)
    if after is not None and after > last:
        last = after
    if not await writer.event("task_group_status", _status_event(group, last)):
        return
    # Until no run is active *and* every completion is out. The status alone is not enough: it is read
    # after a batch was written, and a run that ended while the writes waited on a slow client (after
    # the batch was taken) would otherwise never be sent, though the group then reads as done.
    while group.status()["is_active"] or group.has_events_after(last):
        next_ns = group.next_end_ns(last[0])
        # Wake at least every second: runs added meanwhile may end sooner than the next known end.
        wake = min(deadline, mono_from_ns(next_ns) if next_ns else deadline, time.monotonic() + 1.0)
        if not await writer.sleep_until(wake):
            return
        if time.monotonic() >= deadline:
            return
        for key, index in group.events_between(last, now_ns()):
            if not await writer.event("task_run.state", _run_state(group, index, key)):
                return
            status_key = (key[0], key[1], STATUS_AFTER)
            if not await writer.event("task_group_status", _status_event(group, status_key)):
                return
            last = status_key


async def stream_group_runs(
    writer: SseWriter,
    group: Group,
    after_index: int | None,
    status: str | None,
    include_input: bool,
    include_output: bool,
) -> None:
    """Send one ``task_run.state`` per run at once (optionally filtered), then end."""
    now = time.monotonic()
    start = 0 if after_index is None else after_index + 1
    for index in range(start, len(group.runs)):
        run = group.runs[index]
        elapsed = run.elapsed(now)
        if status and run.status_at(elapsed) != status:
            continue
        event: dict[str, Any] = run.state_event(
            elapsed, event_id=f"run-{index}", with_input=include_input, with_output=include_output
        )
        if not await writer.event("task_run.state", compact_json(event)):
            return
