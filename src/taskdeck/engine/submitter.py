"""Getting a run id for a task, exactly once: create it, or find the one a crashed process created.

Parallel bills every run it creates and offers no idempotency key and no list of
runs. So a create is never repeated blindly:

- Every run is created inside its owner's task group (``OwnerGroups``), tagged
  with the task's *submit token* in ``metadata["taskdeck_id"]``. Before sending,
  the task is committed as ``submitting`` with the group, the token, the group's
  runs cursor and the time of sending.
- When a create fails in a way that Parallel may still have acted on (a timeout,
  a dropped connection, a 5xx), the group's runs after the cursor are searched
  for the token before anything is sent again.
- A process that claims a task still ``submitting`` (its holder died) does the
  same search. Found: the run is adopted. Not found once any request still in
  flight must have landed (``submit_started_at`` + ``create_settle``):
  nothing was created, and the task is submitted as normal.

``submit_unknown`` remains only where no search is possible: a task from before
tagging, or a group Parallel no longer lists, or a key it refuses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Callable
from typing import Any

from taskdeck.config import Settings
from taskdeck.engine.groups import OwnerGroups
from taskdeck.engine.intake import TAG_KEY
from taskdeck.engine.writer import WriteFailed, Writer, note
from taskdeck.models import Task, TaskStatus
from taskdeck.store.base import AdvanceGroupCursor, OwnerGroup, PatchTask, Write
from taskdeck.upstream.client import Upstream, UpstreamError

__all__ = ["Stopped", "Submitter", "new_submit_token"]

log = logging.getLogger("taskdeck.submitter")
LEGACY_MESSAGE = (
    "Taskdeck stopped while creating this run, and the run was not tagged (an older Taskdeck created it), so "
    "it cannot tell whether Parallel created it (and bills for it). Check your Parallel usage, then resubmit "
    "if no run exists."
)


class Stopped(Exception):
    """The process is stopping: leave the task as it is for whoever claims it next."""


def new_submit_token(task_id: str) -> str:
    """The tag of one submit attempt: the task id and a random suffix (a resubmit gets a new one)."""
    return f"{task_id}.{secrets.token_hex(4)}"


class Submitter:
    """Turns one ``pending`` or ``submitting`` task into a run id (or an explained end)."""

    def __init__(
        self,
        task: Task,
        api_key: str,
        *,
        settings: Settings,
        upstream: Upstream,
        groups: OwnerGroups,
        writer: Writer,
        lease_fresh: Callable[[], bool],
        stopping: asyncio.Event,
    ) -> None:
        self.task = task
        self.api_key = api_key
        self.settings = settings
        self.upstream = upstream
        self.groups = groups
        self.writer = writer
        self.lease_fresh = lease_fresh
        self.stopping = stopping
        self.failures = 0
        self.status = task.status

    # -- plumbing ----------------------------------------------------------------
    async def _sleep(self, seconds: float) -> None:
        """Wait, or raise :class:`Stopped` when the process stops meanwhile."""
        try:
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))
        except TimeoutError:
            return
        raise Stopped

    def _backoff(self, retry_after: float | None) -> float:
        s = self.settings
        delay: float = min(s.backoff_max, s.backoff_base * 2.0 ** max(0, self.failures - 1))
        return max(delay * random.uniform(0.5, 1.0), retry_after or 0.0)

    def _note(self, kind: str, **data: Any) -> Write:
        return note(self.task, kind, **data)

    def _patch(self, only_if: tuple[TaskStatus, ...] | None = None, **changes: Any) -> PatchTask:
        return PatchTask(self.task.id, changes, only_if_status=only_if)

    async def _durably(self, *writes: Write) -> None:
        """Commit, retrying until it is stored: what is written here says which run is billed."""
        attempt = 0
        while True:
            try:
                await self.writer.commit(list(writes), self.task.owner)
                return
            except WriteFailed as exc:
                attempt += 1
                delay = min(self.settings.backoff_max, self.settings.backoff_base * 2.0**attempt)
                log.error("could not store the submit state of %s (%s); retrying in %.1f s", self.task.id, exc, delay)
                await self._sleep(delay)

    async def _retry_later(self, action: str, err: UpstreamError) -> None:
        self.failures += 1
        delay = self._backoff(err.retry_after)
        log.info("%s for %s failed (%s); retrying in %.2f s", action, self.task.id, err, delay)
        await self.writer.put(
            self._note("retry_scheduled", action=action, error=str(err), delay=round(delay, 3)), owner=self.task.owner
        )
        await self._sleep(delay)

    async def _end(self, status: TaskStatus, message: str, error: dict[str, Any] | None, kind: str) -> None:
        await self._durably(
            self._note(kind, message=message, **({"error": error} if error else {})),
            self._patch(status=status.value, error=error, message=message, completed_at=time.time()),
        )
        self.status = status

    async def _reject(self, err: UpstreamError) -> None:
        if err.local:
            message = f"Taskdeck could not send this request ({err.message}). Edit it and run it again."
        else:
            message = f"Parallel refused the run ({err.status}): {err.message}"
        await self._end(TaskStatus.REJECTED, message, {"status": err.status, "message": err.message}, "rejected")

    # -- the owner's group -----------------------------------------------------------
    async def _group(self) -> OwnerGroup | None:
        """The owner's group, retried on transient errors; None when Parallel refused (task rejected)."""
        while True:
            try:
                return await self.groups.get(self.task.owner, self.api_key)
            except UpstreamError as err:
                if not err.retryable:
                    await self._reject(err)
                    return None
                await self._retry_later("create_group", err)

    # -- submit ------------------------------------------------------------------
    async def submit(self) -> str | None:
        """Create the run for a ``pending`` task; its run id, or None when the task ended otherwise."""
        group = await self._group()
        if group is None:
            return None
        token = self.task.submit_token or new_submit_token(self.task.id)
        return await self._create(group, token)

    async def _create(self, group: OwnerGroup, token: str) -> str | None:
        owner = self.task.owner
        metadata = {**(self.task.request.get("metadata") or {}), TAG_KEY: token}
        request = {**self.task.request, "metadata": metadata}
        while True:
            # Take the budget first, then record the time of sending: a request still in flight after a
            # crash was sent after that time, so it can only land before it plus the create timeout.
            await self.upstream.reserve(owner, creates=True)
            sent_at = time.time()
            await self._durably(
                self._patch(
                    status=TaskStatus.SUBMITTING.value,
                    submit_group=group.taskgroup_id,
                    submit_token=token,
                    submit_cursor=group.run_cursor,
                    submit_started_at=sent_at,
                )
            )
            self.status = TaskStatus.SUBMITTING
            if not self.lease_fresh():
                # Our lease may have passed to another process (we were stalled); it would reconcile.
                log.warning("leases not renewed lately; holding the create of %s back until they are", self.task.id)
                while not self.lease_fresh():
                    await self._sleep(self.settings.heartbeat_interval)
            try:
                answer = await self.upstream.add_run(
                    owner,
                    self.api_key,
                    group.taskgroup_id,
                    request,
                    timeout=self.settings.create_timeout,
                    reserved=True,
                )
            except UpstreamError as err:
                if err.status == 404:
                    # The group is gone at Parallel, so nothing was created in it: use a new one.
                    await self.groups.replace(owner, group.taskgroup_id)
                    fresh = await self._group()
                    if fresh is None:
                        return None
                    group = fresh
                    continue
                if not err.retryable:
                    await self._reject(err)
                    return None
                if err.ambiguous:
                    found = await self._settle(group, token, sent_at, err)
                    if found is not None:
                        log.info("the failed create of %s had created run %s; adopting it", self.task.id, found)
                        await self._record(found, group.taskgroup_id, None, how="found_after_error")
                        return found
                await self._retry_later("create", err)
                continue
            run_ids = answer.get("run_ids")
            if not isinstance(run_ids, list) or not run_ids or not isinstance(run_ids[0], str):
                found = await self._search(group.taskgroup_id, group.run_cursor, token, not_before=time.time())
                if found is not None:
                    await self._record(found, group.taskgroup_id, None, how="found_after_error")
                    return found
                await self._retry_later("create", UpstreamError(None, "Parallel's answer to the create named no run"))
                continue
            cursor = answer.get("run_cursor")
            await self._record(run_ids[0], group.taskgroup_id, cursor if isinstance(cursor, str) else None)
            return run_ids[0]

    async def _record(self, run_id: str, group_id: str, cursor: str | None, *, how: str = "created") -> None:
        """Store the run id: the one write that must never be lost."""
        self.failures = 0
        writes: list[Write] = [
            self._note("submitted", run_id=run_id, how=how),
            self._patch(
                (TaskStatus.SUBMITTING,),
                run_id=run_id,
                status=TaskStatus.QUEUED.value,
                upstream_status="queued",
                submitted_at=time.time(),
            ),
        ]
        if cursor:
            writes.append(AdvanceGroupCursor(self.task.owner, group_id, cursor))
            self.groups.advanced(self.task.owner, group_id, cursor)
        await self._durably(*writes)
        self.status = TaskStatus.QUEUED

    # -- search and reconcile --------------------------------------------------------
    async def _search(self, group_id: str, cursor: str | None, token: str, *, not_before: float) -> str | None:
        """The id of the run tagged ``token`` in the group (after ``cursor``), or None when there is none.

        Only a listing that started at ``not_before`` or later counts (one started earlier may predate
        the create). Keeps asking until Parallel answers (a create is never repeated without knowing);
        raises UpstreamError when it refuses to list the group (401, 403, 404) or cannot be asked.
        """
        while True:
            try:
                runs = await self.groups.runs(self.task.owner, self.api_key, group_id, cursor, not_before=not_before)
                break
            except UpstreamError as err:
                if not err.retryable:
                    raise
                await self._retry_later("find_run", err)
        matches = [
            str(r["run_id"]) for r in runs if (r.get("metadata") or {}).get(TAG_KEY) == token and r.get("run_id")
        ]
        if len(matches) > 1:
            log.warning("task %s has %d runs tagged %s; following the first", self.task.id, len(matches), token)
            await self.writer.put(self._note("duplicate_runs", run_ids=matches), owner=self.task.owner)
        return matches[0] if matches else None

    async def _settle(self, group: OwnerGroup, token: str, sent_at: float, err: UpstreamError) -> str | None:
        """After a create that failed ambiguously: the run it created after all, or None when it created none.

        A server that answered (500, 502, 503) is looked at once, now. A request that got no answer
        (a timeout, a dropped connection, 408, 504) may still be processed: it is looked for only once it
        can no longer land (``create_settle`` after sending), so sending the create again never makes a second run.
        """
        unanswered = err.status is None or err.status in (408, 504)
        not_before = sent_at + self.settings.create_settle if unanswered else time.time()
        if unanswered:
            wait = not_before - time.time()
            log.info("create of %s got no answer (%s); looking for its run in %.1f s", self.task.id, err, wait)
            await self._sleep(wait)
        return await self._search(group.taskgroup_id, group.run_cursor, token, not_before=not_before)

    async def reconcile(self) -> str | None:
        """Settle a task found ``submitting`` (its holder died mid-create): adopt its run or create it."""
        t = self.task
        if not t.submit_group or not t.submit_token:
            await self._end(TaskStatus.SUBMIT_UNKNOWN, LEGACY_MESSAGE, None, "reconciled")
            return None
        sent = t.submit_started_at or t.created_at
        # A create sent just before the crash can land until its timeout is over, and Parallel may still be
        # processing it after that: wait create_settle before concluding that nothing was created.
        settled_at = sent + self.settings.create_settle
        log.info("reconciling %s: looking for its run in task group %s", t.id, t.submit_group)
        not_before = 0.0  # any listing shows a run that was created already
        while True:
            try:
                found = await self._search(t.submit_group, t.submit_cursor, t.submit_token, not_before=not_before)
            except UpstreamError as err:
                message = (
                    f"Taskdeck stopped while creating this run and could not check whether Parallel created it "
                    f"(listing the task group failed: {err}). Check your Parallel usage, then resubmit if no run "
                    "exists."
                )
                await self._end(TaskStatus.SUBMIT_UNKNOWN, message, None, "reconciled")
                return None
            if found is not None:
                log.info("reconciled %s: adopting run %s, created before the crash", t.id, found)
                await self.writer.put(self._note("reconciled", outcome="adopted", run_id=found), owner=t.owner)
                await self._record(found, t.submit_group, None, how="reconciled")
                return found
            if not_before >= settled_at:
                break
            wait = settled_at - time.time()
            if wait > 0:
                log.info("reconciling %s: no run yet; checking again in %.1f s", t.id, wait)
                await self._sleep(wait)
            # The deciding look must start after any create still in flight can have landed.
            not_before = settled_at
        log.info("reconciled %s: no run was created before the crash; creating it now", t.id)
        await self.writer.put(self._note("reconciled", outcome="not_created"), owner=t.owner)
        group = OwnerGroup(t.owner, t.submit_group, t.submit_cursor)
        return await self._create(group, t.submit_token)
