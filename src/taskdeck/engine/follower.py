"""One run's supervisor: submit it if needed, then follow its events to the end.

A follower exists only while its process holds the task's lease, so a run has
at most one follower anywhere. It keeps the event stream open, reopening it at
once when it ends without a terminal state (the 570 s close, a drop), backing
off on errors, and falling back to polling (``GET`` + ``/result`` long-poll)
after repeated stream failures, trying the stream again after each poll.

Getting the run id in the first place (create, or find what a crashed process
created) is the :class:`~taskdeck.engine.submitter.Submitter`'s job.

De-duplication (contract §8: streams replay history on every connect):
``progress_msg.*`` by (type, timestamp, message); ``task_run.state`` by
(status, modified_at); anything else (``progress_stats`` included) by its
canonical JSON. The keys already stored are loaded when the follower starts, so a
restart stores nothing twice; a key counts as seen only once its event is
committed, so an event whose write failed is stored at the next replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import Enum
from functools import partial
from typing import Any

from taskdeck.config import Settings
from taskdeck.engine.groups import OwnerGroups
from taskdeck.engine.submitter import Stopped, Submitter
from taskdeck.engine.writer import WriteFailed, Writer, note
from taskdeck.jsonbody import storable
from taskdeck.models import ACTIVE_UPSTREAM, Origin, Task, TaskStatus
from taskdeck.store.base import AppendEvent, PatchTask, Write
from taskdeck.upstream.client import Upstream, UpstreamError, betas_for
from taskdeck.upstream.sse import SseMessage

__all__ = ["Follower", "FollowerPorts", "dedup_key"]

log = logging.getLogger("taskdeck.follower")

# A 404 on a run we created or were following: the key is one possible cause, not the only one. The
# usual one in practice is an upstream that forgot its runs (an emulator restarted without its state
# file, as the demo's was before it kept one), so the message names both and blames neither.
RUN_NOT_FOUND_MESSAGE = (
    "Parallel does not know this run (404 'not found'): the run is gone upstream (for example an emulator "
    "restarted without its state file forgets every run), or the API key is not the one that created it."
)


def _digest(*parts: str) -> str:
    # surrogatepass: upstream text may hold lone surrogates (from \ud800 escapes); they still hash.
    return hashlib.sha1("\x1f".join(parts).encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def _canonical(payload: Any) -> str:
    """One text per JSON value, whatever whitespace or key order it arrived with."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def dedup_key(message: SseMessage) -> str:
    """The key under which an upstream event is stored once."""
    payload = message.payload
    kind = message.type
    if payload is None:
        return "raw:" + _digest(message.event or "", message.data)
    if kind == "task_run.state":
        run = payload.get("run") or {}
        return f"state:{run.get('status')}:{run.get('modified_at')}"
    if kind.startswith("task_run.progress_msg."):
        return "msg:" + _digest(kind, str(payload.get("timestamp")), str(payload.get("message")))
    return "data:" + _digest(kind, _canonical(payload))


class Outcome(Enum):
    TERMINAL = "terminal"  # the run ended; the follower is done
    ENDED = "ended"  # the server closed the stream (lifetime) with no terminal state
    DROPPED = "dropped"  # the connection broke mid-stream
    SILENT = "silent"  # nothing arrived within the read timeout
    FAILED = "failed"  # the stream could not be opened


@dataclass
class StreamResult:
    outcome: Outcome
    progressed: bool = False  # at least one new event was stored
    error: UpstreamError | None = None


@dataclass(frozen=True)
class FollowerPorts:
    """All a follower may use of its process: one set, shared by every follower of an engine.

    Narrow on purpose: a follower never sees the store or the engine, so either can change under it.
    """

    settings: Settings
    writer: Writer  # every write goes through the group-committing writer
    upstream: Upstream  # every call to Parallel (it takes the key's rate budget first)
    groups: OwnerGroups  # the per-owner task group a create goes into
    lease_fresh: Callable[[str], bool]  # whether a task's lease was written recently enough to send a create
    stored_keys: Callable[[str], Awaitable[set[str]]]  # the de-dup keys already stored for a task


class Follower:
    """Supervises one task while this process holds its lease."""

    def __init__(self, ports: FollowerPorts, task: Task, api_key: str) -> None:
        self.ports = ports
        self.task = task
        self.api_key = api_key
        self.status = task.status
        self.seen: set[str] = set()  # keys of events committed
        self.inflight: set[str] = set()  # keys of events queued to the writer, not yet committed
        self.last_status_at = time.monotonic()
        self.first_event_at = task.first_event_at
        self.failures = 0
        self.polling = False
        self._stop = asyncio.Event()

    # -- plumbing ----------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.ports.settings

    def stop(self) -> None:
        self._stop.set()

    async def _pause(self, seconds: float) -> bool:
        """Sleep unless asked to stop; True when the full time passed."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return True
        return False

    def _own(self, kind: str, **data: Any) -> AppendEvent:
        return note(self.task, kind, **data)

    async def _put(self, *writes: Write, key: str | None = None) -> None:
        """Queue writes as one unit; ``key`` (an event's dedup key) counts as seen once they commit."""
        on_done = None
        if key is not None:

            def on_done(ok: bool, key: str = key) -> None:
                self.inflight.discard(key)
                if ok:
                    self.seen.add(key)

        await self.ports.writer.put(*writes, owner=self.task.owner, on_done=on_done)

    async def _commit(self, *writes: Write) -> None:
        """Commit writes that must be stored, retrying until they are (or the process stops)."""
        attempt = 0
        while True:
            try:
                await self.ports.writer.commit(list(writes), self.task.owner)
                return
            except WriteFailed as exc:
                attempt += 1
                delay = min(self.settings.backoff_max, self.settings.backoff_base * 2.0**attempt)
                log.error("could not store the state of %s (%s); retrying in %.1f s", self.task.id, exc, delay)
                if not await self._pause(delay):
                    raise Stopped from exc

    def _patch(self, **changes: Any) -> PatchTask:
        return PatchTask(self.task.id, changes)

    def _backoff(self, retry_after: float | None) -> float:
        s = self.settings
        delay: float = min(s.backoff_max, s.backoff_base * 2.0 ** max(0, self.failures - 1))
        return max(delay * random.uniform(0.5, 1.0), retry_after or 0.0)

    # -- entry -------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if self.status in (TaskStatus.PENDING, TaskStatus.SUBMITTING):
                submitter = Submitter(
                    self.task,
                    self.api_key,
                    settings=self.settings,
                    upstream=self.ports.upstream,
                    groups=self.ports.groups,
                    writer=self.ports.writer,
                    lease_fresh=partial(self.ports.lease_fresh, self.task.id),
                    stopping=self._stop,
                )
                fresh = self.status == TaskStatus.PENDING
                run_id = await (submitter.submit() if fresh else submitter.reconcile())
                self.status = submitter.status
                if run_id is None:
                    return
                self.task = replace(self.task, run_id=run_id)
                self.last_status_at = time.monotonic()
            self.seen = await self.ports.stored_keys(self.task.id)
            await self._follow()
        except Stopped:
            return

    # -- follow ------------------------------------------------------------------
    async def _follow(self) -> None:
        s = self.settings
        while not self._stop.is_set():
            if self.polling:
                if await self._poll_once():
                    return
                # Try the stream again after every poll; one failure sends us back to polling.
                result = await self._stream_once(resuming=True)
                if result.outcome is Outcome.TERMINAL:
                    return
                if result.outcome is not Outcome.FAILED:
                    self.polling = False
                    self.failures = 0
                elif not await self._pause(s.poll_interval):
                    return
                continue
            result = await self._stream_once()
            if result.outcome is Outcome.TERMINAL:
                return
            if result.outcome is Outcome.ENDED:
                self.failures = 0
                continue  # the 570 s close: reopen at once
            if result.progressed and result.outcome is not Outcome.FAILED:
                self.failures = 1  # a drop after progress: reopen at once, but remember it
                continue
            self.failures += 1
            if result.error is not None and result.error.status == 404:
                await self._end_lost(result.error)
                return
            if self.failures >= s.stream_failures_before_polling:
                self.polling = True
                await self._put(self._own("polling", reason=f"{self.failures} stream failures in a row"))
                continue
            delay = self._backoff(result.error.retry_after if result.error else None)
            await self._put(
                self._own("retry_scheduled", action="stream", reason=result.outcome.value, delay=round(delay, 3))
            )
            if not await self._pause(delay):
                return

    async def _stream_once(self, *, resuming: bool = False) -> StreamResult:
        run_id = self.task.run_id
        assert run_id is not None
        progressed = False
        # A connection to an ended run starts with the terminal state, then replays the
        # history: keep reading to the end of the stream before finishing.
        ended: dict[str, Any] | None = None
        try:
            async with self.ports.upstream.events(
                self.task.owner, self.api_key, run_id, self.settings.stream_read_timeout
            ) as messages:
                await self._put(self._own("stream_connected"))
                if resuming:
                    await self._put(self._own("streaming_resumed"))
                first = True
                try:
                    async for message in messages:
                        event, changes, terminal = self._absorb(message)
                        progressed = progressed or event is not None
                        if terminal is not None and not first:
                            await self._finish(terminal, event)
                            return StreamResult(Outcome.TERMINAL, progressed)
                        if terminal is not None:
                            ended = terminal
                        first = False
                        await self._put(
                            *([event] if event else []),
                            *([self._patch(**changes)] if changes else []),
                            key=event.dedup_key if event else None,
                        )
                except Stopped:
                    raise
                except Exception as exc:
                    outcome = Outcome.SILENT if "Timeout" in type(exc).__name__ else Outcome.DROPPED
                    await self._put(self._own("stream_closed", reason=outcome.value, error=type(exc).__name__))
                    return StreamResult(outcome, progressed)
        except UpstreamError as err:
            await self._put(self._own("stream_closed", reason="failed", error=str(err)))
            return StreamResult(Outcome.FAILED, progressed, err)
        await self._put(self._own("stream_closed", reason="ended"))
        if ended is not None:
            await self._finish(ended, None)
            return StreamResult(Outcome.TERMINAL, progressed)
        return StreamResult(Outcome.ENDED, progressed)

    def _absorb(self, message: SseMessage) -> tuple[AppendEvent | None, dict[str, Any], dict[str, Any] | None]:
        """What one upstream message means: the event to store (None when already stored),
        task changes, and the state payload when the run ended."""
        payload = message.payload
        if payload is not None and "\\u" in message.data:
            # Escapes may decode to text no store holds (lone surrogates, NUL); the raw data keeps them.
            payload = storable(payload)
        kind = message.type
        terminal: dict[str, Any] | None = None
        changes: dict[str, Any] = {}
        if kind == "task_run.state" and payload is not None:
            run = payload.get("run") or {}
            self.last_status_at = time.monotonic()
            if run.get("status") not in ACTIVE_UPSTREAM:
                terminal = payload
            else:
                status = _our_status(run.get("status"))
                if status != self.status:
                    changes.update(status=status.value, upstream_status=run.get("status"))
                    self.status = status
                if run.get("warnings"):
                    changes["warnings"] = run["warnings"]
            if run.get("interaction_id") and self.task.interaction_id != run["interaction_id"]:
                # A run created in a group is answered with its id only; the stream says the rest.
                self.task = replace(self.task, interaction_id=run["interaction_id"])
                changes["interaction_id"] = run["interaction_id"]
        elif kind.startswith("task_run.progress_msg.") and self.status == TaskStatus.QUEUED:
            # Progress means it runs, though queued -> running is not always pushed.
            changes.update(status=TaskStatus.RUNNING.value, upstream_status="running")
            self.status = TaskStatus.RUNNING
        elif kind == "task_run.progress_stats" and payload is not None:
            changes.update(progress=payload, progress_meter=payload.get("progress_meter"))
        key = dedup_key(message)
        if key in self.seen or key in self.inflight:
            return None, changes, terminal
        self.inflight.add(key)
        now = time.time()
        event = AppendEvent(
            task_id=self.task.id,
            type=kind if payload is not None else "taskdeck.malformed_event",
            origin=Origin.UPSTREAM if payload is not None else Origin.TASKDECK,
            data=message.data if payload is not None else _compact({"event": message.event, "raw": message.data}),
            received_at=now,
            upstream_ts=_upstream_ts(kind, payload),
            dedup_key=key,
            owner=self.task.owner,
        )
        changes["last_event_at"] = now
        if self.first_event_at is None:
            self.first_event_at = now
            changes["first_event_at"] = now
        return event, changes, terminal

    async def _finish(self, payload: dict[str, Any], event: AppendEvent | None) -> None:
        """Store the end of the run: the output (confirmed with /result when missing) or the error."""
        run = payload.get("run") or {}
        status = _our_status(run.get("status"))
        changes: dict[str, Any] = {
            "status": status.value,
            "upstream_status": run.get("status"),
            "completed_at": time.time(),
            "warnings": run.get("warnings"),
        }
        output = payload.get("output")
        if status == TaskStatus.COMPLETED and output is None:
            output = await self._fetch_output()
        if status == TaskStatus.COMPLETED:
            changes["output"] = output
            changes["progress_meter"] = 100.0
        if run.get("error") is not None:
            changes["error"] = run["error"]
        if run.get("interaction_id") and self.task.interaction_id != run["interaction_id"]:
            changes["interaction_id"] = run["interaction_id"]
        writes: list[Write] = [event] if event is not None else []
        writes += [self._patch(**changes), self._own("result_stored", status=status.value)]
        await self._commit(*writes)
        self.status = status

    async def _fetch_output(self) -> dict[str, Any] | None:
        run_id = self.task.run_id
        assert run_id is not None
        while not self._stop.is_set():
            try:
                result = await self.ports.upstream.result(
                    self.task.owner, self.api_key, run_id, self.settings.result_wait, betas_for(self.task.request)
                )
            except UpstreamError as err:
                if not err.retryable:
                    return None
                self.failures += 1
                if not await self._pause(self._backoff(err.retry_after)):
                    return None
                continue
            if result is not None:
                output = result.get("output")
                return output if isinstance(output, dict) else None
        return None

    async def _poll_once(self) -> bool:
        """One polling round: GET the run, then long-poll /result. True when the run ended."""
        run_id = self.task.run_id
        assert run_id is not None
        try:
            run = await self.ports.upstream.retrieve(self.task.owner, self.api_key, run_id)
        except UpstreamError as err:
            if err.status == 404:
                await self._end_lost(err)
                return True
            return False
        self.last_status_at = time.monotonic()
        if run.get("status") in ACTIVE_UPSTREAM:
            status = _our_status(run.get("status"))
            if status != self.status:
                await self._put(self._patch(status=status.value, upstream_status=run.get("status")))
                self.status = status
            try:
                result = await self.ports.upstream.result(
                    self.task.owner, self.api_key, run_id, self.settings.result_wait, betas_for(self.task.request)
                )
            except UpstreamError:
                return False
            if result is None:
                return False
            run, output = result.get("run") or run, result.get("output")
            await self._finish({"run": run, "output": output}, None)
            return True
        await self._finish({"run": run, "output": None}, None)
        return True

    async def check_status(self) -> None:
        """GET the run once (the engine calls this when no stream reported a status for a while)."""
        run_id = self.task.run_id
        if run_id is None:
            return
        self.last_status_at = time.monotonic()
        try:
            run = await self.ports.upstream.retrieve(self.task.owner, self.api_key, run_id)
        except UpstreamError:
            return
        status = _our_status(run.get("status"))
        if run.get("status") in ACTIVE_UPSTREAM and status != self.status:
            self.status = status
            await self._put(self._patch(status=status.value, upstream_status=run.get("status")))

    async def _end_lost(self, err: UpstreamError) -> None:
        await self._commit(
            self._own("run_not_found", error=str(err)),
            self._patch(
                status=TaskStatus.FAILED.value,
                error={"status": err.status, "message": err.message},
                message=RUN_NOT_FOUND_MESSAGE,
                completed_at=time.time(),
            ),
        )
        self.status = TaskStatus.FAILED


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _upstream_ts(kind: str, payload: dict[str, Any] | None) -> str | None:
    if payload is None:
        return None
    if kind == "task_run.state":
        run = payload.get("run") or {}
        ts = run.get("modified_at")
        return ts if isinstance(ts, str) else None
    ts = payload.get("timestamp")
    return ts if isinstance(ts, str) else None


def _our_status(upstream: Any) -> TaskStatus:
    try:
        return TaskStatus(upstream)
    except ValueError:
        return TaskStatus.RUNNING  # an unknown upstream status: keep following
