"""A batch's supervisor: its rows into one Parallel task group, exactly once, then its outcomes in bulk.

One supervisor per batch anywhere (a lease on the batch row, like a task's). It

1. creates the batch's task group (free; a crash before it is stored leaves only an empty group);
2. adds the rows in input order, in chunks of at most 1,000 inputs per ``add_runs`` request. Before a
   chunk is sent its rows are committed ``submitting`` (with the time of sending); each input is tagged
   ``metadata = {taskdeck_batch, taskdeck_row, taskdeck_id}``. The answer's ``run_ids`` (in input order)
   are committed with the rows. A chunk whose answer was lost (timeout, dropped connection, 5xx, a crash)
   is *reconciled*: the group's runs stream (``include_input``) is read and runs are matched to rows by
   their tags; rows found are adopted, and rows still missing once nothing in flight can land any more
   (sent + ``create_settle``) are sent again. So no row is ever paid for twice.
3. follows the group's event stream (resumable by ``last_event_id``, reopened when Parallel closes it,
   after an hour or once no run is active) for each run's end, and fetches outcomes in bulk through the
   group's runs stream with ``include_output`` (resumable from the first row not yet ended), never one
   ``/result`` per row.

Rows are tasks (``batch_id``, ``row_index``): the web and the CLI read them like any task, and a row's
own event stream is opened only when a person asks for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from taskdeck.config import Settings
from taskdeck.engine.batchspec import template_fields
from taskdeck.engine.intake import TAG_KEY, IntakeError, new_task, review_request, validate_request
from taskdeck.engine.writer import Writer, note
from taskdeck.models import Batch, BatchStatus, Task, TaskStatus, new_batch_id
from taskdeck.processors import Processor
from taskdeck.store.base import PatchBatch, PatchTask, Write
from taskdeck.upstream.client import EVENTS_BETA, Upstream, UpstreamError

__all__ = [
    "BATCH_KEY",
    "CHUNK",
    "RETRYABLE",
    "ROW_KEY",
    "BatchDesk",
    "BatchPlan",
    "BatchPorts",
    "BatchSupervisor",
    "RowSource",
    "plan_batch",
    "resume_key",
    "retry_writes",
    "row_input",
    "row_request",
    "row_tag",
    "rows_cost",
]

log = logging.getLogger("taskdeck.batches")
CHUNK = 1000  # inputs per add_runs request (contract §9)
COUNTS_EVERY = 2.0  # seconds between stores of the group's runs per status
BATCH_KEY, ROW_KEY = "taskdeck_batch", "taskdeck_row"
TERMINAL_UPSTREAM = {"completed": TaskStatus.COMPLETED, "failed": TaskStatus.FAILED, "cancelled": TaskStatus.CANCELLED}


# Outcomes are fetched this long after runs end: 10 % of the time followed so far, within these bounds.
FETCH_DELAY_MIN, FETCH_DELAY_MAX, FETCH_DELAY_SHARE = 2.0, 15.0, 0.1


def row_tag(batch_id: str, row_index: int, attempt: int = 0) -> str:
    """The tag a row's run carries (``metadata.taskdeck_id``): found again in the group's runs after a crash.

    A retry of a failed row is another attempt with its own tag (``….r1``, ``….r2``): reconciling it
    never adopts the failed run of the attempt before.
    """
    return f"{batch_id}.{row_index}" if attempt == 0 else f"{batch_id}.{row_index}.r{attempt}"


def row_attempt(row: Task) -> int:
    """Which attempt the row is on: 0, or the retry number its tag carries."""
    last = (row.submit_token or "").rsplit(".", 1)[-1]
    return int(last[1:]) if last.startswith("r") and last[1:].isdigit() else 0


def expected_tag(batch_id: str, row: Task) -> str:
    """The tag of the row's current attempt (kept in ``submit_token`` from the retry on)."""
    return row_tag(batch_id, row.row_index or 0, row_attempt(row))


def row_request(batch: Batch, row: Task) -> dict[str, Any]:
    """The TaskRunInput of one row (its ``task_spec`` is the batch's, sent once as the default)."""
    request = {k: v for k, v in row.request.items() if k != "task_spec"}
    metadata = dict(request.get("metadata") or {})
    metadata.update({BATCH_KEY: batch.id, ROW_KEY: row.row_index, TAG_KEY: expected_tag(batch.id, row)})
    request["metadata"] = metadata
    return request


@dataclass(frozen=True)
class BatchPorts:
    """What a batch supervisor may use of its process (as a follower's ports, plus batch reads)."""

    settings: Settings
    writer: Writer
    upstream: Upstream
    lease_fresh: Callable[[], bool]
    rows: Callable[[str, int, int], Awaitable[list[Task]]]  # (batch id, after row index, limit)
    counts: Callable[[str], Awaitable[dict[str, int]]]  # a batch's rows per status


@dataclass(slots=True)
class _Run:
    """What the supervisor keeps of a row per run: its task and whether its outcome is stored."""

    task_id: str
    ended: bool


class Stop(Exception):
    """The process is stopping, or the lease went stale: leave the batch for whoever claims it next."""


class BatchSupervisor:
    """Adds one batch's rows upstream and follows them to their ends while this process holds its lease."""

    def __init__(self, ports: BatchPorts, batch: Batch, api_key: str) -> None:
        self.ports = ports
        self.batch = batch
        self.api_key = api_key
        self.failures = 0
        self._stop = asyncio.Event()
        self._by_run: dict[str, _Run] = {}  # run id -> its row (a Task per row would be 10,000 of them)
        self._open = 0  # rows not yet ended
        # The runs stream's event_id just before the first run not yet ended (runs come in the order
        # they were added): outcomes are read from there, not from the start, each time.
        self._outcomes_after: str | None = None
        self._following_since = time.monotonic()
        self._group_counts: dict[str, int] | None = batch.upstream_counts
        self._counts_saved_at = 0.0

    def stop(self) -> None:
        self._stop.set()

    @property
    def settings(self) -> Settings:
        return self.ports.settings

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return
        raise Stop

    def _backoff(self, err: UpstreamError) -> float:
        self.failures += 1
        s = self.settings
        delay = min(s.backoff_max, s.backoff_base * 2.0 ** (self.failures - 1)) * random.uniform(0.5, 1.0)
        return max(delay, err.retry_after or 0.0)

    async def _commit(self, writes: list[Write]) -> None:
        await self.ports.writer.commit(writes, self.batch.owner)

    async def _patch_batch(self, **changes: Any) -> None:
        await self._commit([PatchBatch(self.batch.id, changes)])
        self.batch = replace(self.batch, **changes)

    async def _all_rows(self) -> list[Task]:
        rows: list[Task] = []
        after = -1
        while True:
            page = await self.ports.rows(self.batch.id, after, 5000)
            rows.extend(page)
            if len(page) < 5000:
                return rows
            after = page[-1].row_index if page[-1].row_index is not None else after

    # -- entry -----------------------------------------------------------------------------
    async def run(self) -> None:
        """Add every row, then follow until every row ended. Returns early (Stop) when asked to stop."""
        try:
            if self.batch.taskgroup_id is None:
                await self._create_group()
            rows = await self._all_rows()
            await self._add(rows)
            await self._follow()
        except Stop:
            return

    async def _create_group(self) -> None:
        while True:
            try:
                group = await self.ports.upstream.create_group(
                    self.batch.owner, self.api_key, {BATCH_KEY: self.batch.id, "name": self.batch.name[:200]}
                )
                break
            except UpstreamError as err:
                if not err.retryable:
                    await self._fail_all(f"Parallel refused to create the batch's task group ({err}).")
                    raise Stop from err
                log.warning("batch %s: creating its task group failed (%s); retrying", self.batch.id, err)
                await self._pause(self._backoff(err))
        self.failures = 0
        await self._patch_batch(taskgroup_id=str(group["taskgroup_id"]))
        log.info("batch %s: task group %s created", self.batch.id, self.batch.taskgroup_id)

    async def _fail_all(self, message: str) -> None:
        rows = [r for r in await self._all_rows() if r.run_id is None and not r.status.is_terminal]
        writes: list[Write] = [
            PatchTask(r.id, {"status": TaskStatus.REJECTED.value, "message": message, "completed_at": time.time()})
            for r in rows
        ]
        await self._commit(
            [*writes, PatchBatch(self.batch.id, {"status": BatchStatus.COMPLETED, "completed_at": time.time()})]
        )

    # -- adding rows -------------------------------------------------------------------------
    async def _add(self, rows: list[Task]) -> None:
        waiting = [r for r in rows if r.run_id is None and not r.status.is_terminal]
        if any(r.status == TaskStatus.SUBMITTING for r in waiting):
            waiting = await self._reconcile(waiting)
        for start in range(0, len(waiting), CHUNK):
            await self._add_chunk(waiting[start : start + CHUNK])
        if self.batch.status == BatchStatus.PENDING:
            await self._patch_batch(status=BatchStatus.RUNNING, added_rows=self.batch.row_count)
        for row in rows:
            if row.run_id is not None:
                self._by_run[row.run_id] = _Run(row.id, row.status.is_terminal)

    async def _add_chunk(self, chunk: list[Task]) -> None:
        group_id = self.batch.taskgroup_id
        assert group_id is not None
        while chunk:
            if not self.ports.lease_fresh():
                raise Stop  # our lease may have passed to another process: never send a create then
            sent_at = time.time()
            await self._commit(
                [PatchTask(r.id, {"status": TaskStatus.SUBMITTING.value, "submit_started_at": sent_at}) for r in chunk]
            )
            spec = chunk[0].request.get("task_spec")
            try:
                answer = await self.ports.upstream.add_runs(
                    self.batch.owner,
                    self.api_key,
                    group_id,
                    [row_request(self.batch, r) for r in chunk],
                    default_task_spec=spec,
                    betas=[EVENTS_BETA],
                    timeout=self.settings.create_timeout,
                )
            except UpstreamError as err:
                if err.ambiguous:
                    log.warning(
                        "batch %s: add_runs of %d rows got no clear answer (%s); reconciling",
                        self.batch.id,
                        len(chunk),
                        err,
                    )
                    chunk = await self._reconcile(chunk, sent_at=sent_at)
                    continue
                if err.retryable:
                    log.warning("batch %s: add_runs refused for now (%s); retrying", self.batch.id, err)
                    await self._pause(self._backoff(err))
                    continue
                message = f"Parallel refused these rows ({err})."
                await self._commit(
                    [
                        PatchTask(
                            r.id, {"status": TaskStatus.REJECTED.value, "message": message, "completed_at": time.time()}
                        )
                        for r in chunk
                    ]
                )
                return
            self.failures = 0
            run_ids = [str(x) for x in answer.get("run_ids") or []]
            if len(run_ids) != len(chunk):
                # Parallel answered, but not one id per input: find out which rows have runs from their tags.
                chunk = await self._reconcile(chunk, sent_at=sent_at)
                continue
            await self._adopt(list(zip(chunk, run_ids, strict=True)), "added")
            return

    async def _adopt(self, pairs: list[tuple[Task, str]], how: str) -> None:
        now = time.time()
        writes: list[Write] = []
        for row, run_id in pairs:
            writes.append(
                PatchTask(
                    row.id,
                    {
                        "run_id": run_id,
                        "status": TaskStatus.QUEUED.value,
                        "submitted_at": now,
                        "submit_token": expected_tag(self.batch.id, row),
                    },
                )
            )
            writes.append(note(row, "submitted", run_id=run_id, how=how))
        await self._commit(writes)
        for row, run_id in pairs:
            self._by_run[run_id] = _Run(row.id, False)

    async def _reconcile(self, rows: list[Task], *, sent_at: float | None = None) -> list[Task]:
        """Adopt the runs the group already has for these rows (found by their tags); return the rows
        that have none, once nothing sent can land any more (waiting for that if needed)."""
        group_id = self.batch.taskgroup_id
        assert group_id is not None
        sent = max([sent_at or 0.0, *(r.submit_started_at or 0.0 for r in rows)])
        settle = sent + self.settings.create_settle
        while True:
            try:
                states = await self.ports.upstream.group_run_states(
                    self.batch.owner, self.api_key, group_id, after=None, include_input=True, read_timeout=120.0
                )
            except UpstreamError as err:
                log.warning("batch %s: listing its group's runs failed (%s); retrying", self.batch.id, err)
                await self._pause(self._backoff(err))
                continue
            self.failures = 0
            tags = {expected_tag(self.batch.id, r): r for r in rows}
            found: list[tuple[Task, str]] = []
            for state in states:
                metadata = ((state.get("input") or {}).get("metadata")) or {}
                row = tags.pop(str(metadata.get(TAG_KEY)), None)
                if row is not None:
                    found.append((row, str(state["run"]["run_id"])))
            if found:
                log.info("batch %s: reconciled %d row(s) with runs already in its group", self.batch.id, len(found))
                await self._adopt(found, "reconciled")
            missing = list(tags.values())
            if not missing or time.time() >= settle:
                return sorted(missing, key=lambda r: r.row_index or 0)
            # A request still in flight may yet create some of these: look again once it cannot.
            await self._pause(max(0.1, settle - time.time()))

    # -- following -----------------------------------------------------------------------------
    async def _follow(self) -> None:
        self._open = await self._open_rows()
        while self._open > 0:
            await self._read_group_events()
            # The stream closed (no run active any more, its hour, an error): store what ended meanwhile.
            await self._fetch_outcomes()
            self._open = await self._open_rows()
        await self._patch_batch(status=BatchStatus.COMPLETED, completed_at=time.time())
        log.info("batch %s: every row ended", self.batch.id)

    async def _open_rows(self) -> int:
        """Rows not ended yet, counted by the database (never every row read back into memory)."""
        counts = await self.ports.counts(self.batch.id)
        return sum(n for status, n in counts.items() if not TaskStatus(status).is_terminal)

    def _fetch_delay(self) -> float:
        """How long after a run ends its outcome is fetched (with every other ended meanwhile).

        Short at first, so the grid fills in within seconds; longer as the batch goes on, so a long
        batch costs few requests (one runs-stream read per delay, whatever the number of rows).
        """
        elapsed = time.monotonic() - self._following_since
        return min(FETCH_DELAY_MAX, max(FETCH_DELAY_MIN, elapsed * FETCH_DELAY_SHARE))

    async def _fetch_later(self) -> None:
        try:
            await self._pause(self._fetch_delay())
            await self._fetch_outcomes()
        except Stop:
            return  # the process is stopping: the next supervisor fetches what is left

    async def _read_group_events(self) -> int:
        """Read the group's event stream until it closes; return how many runs ended meanwhile.

        Outcomes are fetched while the stream stays open (a fetch a few seconds after runs end, beside
        the stream, not instead of it): the grid fills in as rows end, and the stream is not reopened.
        """
        group_id = self.batch.taskgroup_id
        assert group_id is not None
        ended = 0
        cursor = self.batch.events_cursor
        fetcher: asyncio.Task[None] | None = None
        try:
            async with self.ports.upstream.group_events(
                self.batch.owner, self.api_key, group_id, after=cursor, read_timeout=self.settings.stream_read_timeout
            ) as messages:
                async for message in messages:
                    if self._stop.is_set():
                        raise Stop
                    payload = message.payload or {}
                    cursor = payload.get("event_id") or cursor
                    if payload.get("type") == "task_run.state":
                        ended += 1
                        if fetcher is None or fetcher.done():
                            fetcher = asyncio.create_task(self._fetch_later(), name=f"batch-{self.batch.id}-fetch")
                    elif payload.get("type") == "task_group_status":
                        await self._note_group_status(payload.get("status"))
            self.failures = 0
        except UpstreamError as err:
            log.warning("batch %s: its group's event stream failed (%s); reopening", self.batch.id, err)
            await self._pause(self._backoff(err))
        except (TimeoutError, OSError) as err:
            log.warning("batch %s: its group's event stream dropped (%s); reopening", self.batch.id, err)
            await self._pause(self.settings.backoff_base)
        finally:
            if fetcher is not None and not fetcher.done():
                fetcher.cancel()  # the caller fetches once more now: nothing is missed
                with contextlib.suppress(asyncio.CancelledError, Stop):
                    await fetcher
        changes: dict[str, Any] = {}
        if cursor != self.batch.events_cursor:
            changes["events_cursor"] = cursor
        if self._group_counts is not None and self._group_counts != self.batch.upstream_counts:
            changes["upstream_counts"] = self._group_counts
        if changes:
            await self._patch_batch(**changes)
        return ended

    async def _note_group_status(self, status: Any) -> None:
        """Keep Parallel's runs per status (queued, running, …), stored at most every few seconds.

        A row's own status changes only when its run ends (the group stream reports nothing else per
        run), so this is what tells the batch's queued runs from its running ones.
        """
        counts = group_run_counts(status)
        if counts is None:
            return
        self._group_counts = counts
        now = time.monotonic()
        if counts != self.batch.upstream_counts and now - self._counts_saved_at >= COUNTS_EVERY:
            self._counts_saved_at = now
            await self._patch_batch(upstream_counts=counts)

    async def _fetch_outcomes(self) -> None:
        """Store every ended run's outcome not stored yet, from the group's runs stream with outputs,
        a page at a time as the stream arrives (each page committed before the next is read)."""
        group_id = self.batch.taskgroup_id
        assert group_id is not None
        now = time.time()
        prefix_ended = True
        try:
            async for states in self.ports.upstream.group_run_pages(
                self.batch.owner,
                self.api_key,
                group_id,
                after=self._outcomes_after,
                include_output=True,
                read_timeout=120.0,
            ):
                writes: list[Write] = []
                cursor = self._outcomes_after
                ended: list[_Run] = []
                for state in states:
                    run = state["run"]
                    entry = self._by_run.get(str(run.get("run_id")))
                    status = TERMINAL_UPSTREAM.get(str(run.get("status")))
                    if status is None:
                        prefix_ended = False  # still going: the next read starts before it
                    elif prefix_ended:
                        cursor = str(state.get("event_id") or cursor)
                    if entry is None or status is None or entry.ended:
                        continue
                    changes: dict[str, Any] = {
                        "status": status.value,
                        "upstream_status": run.get("status"),
                        "completed_at": now,
                    }
                    if state.get("output") is not None:
                        changes["output"] = state["output"]
                    if run.get("error") is not None:
                        changes["error"] = run["error"]
                    writes.append(PatchTask(entry.task_id, changes))
                    ended.append(entry)
                if writes:
                    await self._commit(writes)
                for entry in ended:
                    entry.ended = True
                # Only past what is stored: a read cut in the middle of a page starts before it next time.
                self._outcomes_after = cursor
        except UpstreamError as err:
            log.warning("batch %s: reading its runs' outcomes failed (%s); retrying", self.batch.id, err)
            await self._pause(self._backoff(err))


def group_run_counts(status: Any) -> dict[str, int] | None:
    """The runs per status of a TaskGroupStatus (``task_run_status_counts``), or None when malformed."""
    counts = status.get("task_run_status_counts") if isinstance(status, dict) else None
    if not isinstance(counts, dict):
        return None
    kept = {
        str(k)[:40]: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 10**9
    }
    return dict(sorted(kept.items())[:20])


def resume_key(digest: str, spec: dict[str, Any]) -> str:
    """The key of a batch: the input's bytes (their digest) and the spec, canonical. Same key, same batch."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{digest}\x1f{canonical}".encode()).hexdigest()


def row_input(spec: dict[str, Any], values: dict[str, Any]) -> Any:
    """A row's ``input``: the template filled with its values, or an object of the chosen columns."""
    template = spec.get("template")
    if isinstance(template, str):
        return template.format_map({k: "" if v is None else v for k, v in values.items()})
    columns = spec.get("columns") or list(values)
    return {c: values.get(c) for c in columns}


RowSource = Callable[[], Iterator[dict[str, Any]]]
"""A table's rows (column: value), read from the start on every call: a file, a request body's bytes."""


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """A checked batch: its row (``pending``) and, on every call of :meth:`tasks`, its rows' tasks
    made one at a time from the source, so a store inserts them without holding the table."""

    batch: Batch
    rows: RowSource
    processor: Processor
    request: dict[str, Any]  # every row's request but its input

    def tasks(self) -> Iterator[Task]:
        """The batch's rows as new tasks (fresh ids on every call), in input order."""
        for index, values in enumerate(self.rows()):
            request = {**self.request, "input": row_input(self.batch.spec, values)}
            yield replace(
                new_task(self.batch.owner, request, self.processor),
                batch_id=self.batch.id,
                row_index=index,
                row_values=values,
            )

    @property
    def cost_usd(self) -> float:
        """What the batch costs in all (Parallel bills every run at creation)."""
        return rows_cost(self.processor, self.batch.row_count)


def rows_cost(processor: Processor | None, rows: int) -> float:
    """Rows × the processor's price, as the check answers it, a create must confirm it and a summary shows it."""
    return round((processor.usd_per_run if processor else 0.0) * rows, 4)


def plan_batch(
    owner: str,
    name: str,
    columns: list[str],
    rows: RowSource,
    spec: dict[str, Any],
    digest: str,
    *,
    holder: str | None,
    lease_ttl: float,
) -> BatchPlan:
    """Check every row's request with Parallel's rules (one pass over ``rows``, nothing kept) and plan the batch.

    The spec's ``task_spec`` is checked once (it is the same for every row); each row's request is
    checked without it (input size and shape, metadata). Raises IntakeError naming the first bad row.
    """
    if isinstance(spec.get("template"), str):
        try:
            template_fields(spec["template"])
        except ValueError as err:
            raise IntakeError(422, f"spec.template: {err}") from None
    base = {k: spec[k] for k in ("processor", "source_policy", "metadata", "task_spec") if spec.get(k) is not None}
    without_spec = {k: v for k, v in base.items() if k != "task_spec"}
    first: dict[str, Any] | None = None
    processor = None
    count = 0
    for values in rows():
        if first is None:
            first, processor = validate_request({**base, "input": row_input(spec, values)})
        request = {**without_spec, "input": row_input(spec, values)}
        problems, _ = review_request(request)
        if problems:
            where = ".".join(str(x) for x in problems[0]["loc"])
            raise IntakeError(422, f"row {count + 1}: {where}: {problems[0]['msg']}", problems)
        count += 1
    if first is None:
        raise IntakeError(422, "rows: the input has no rows")
    now = time.time()
    batch = Batch(
        id=new_batch_id(),
        owner=owner,
        name=name,
        status=BatchStatus.PENDING,
        spec=spec,
        columns=columns,
        resume_key=resume_key(digest, spec),
        row_count=count,
        created_at=now,
        lease_owner=holder,
        lease_expires=now + lease_ttl if holder else None,
    )
    request = dict(without_spec)
    if "task_spec" in first:
        request["task_spec"] = first["task_spec"]
    request["enable_events"] = True  # a row's own stream can be opened when a person looks at it
    assert processor is not None  # set with ``first``
    return BatchPlan(batch, rows, processor, request)


RETRYABLE = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.REJECTED)


def retry_writes(batch: Batch, rows: list[Task], price: float) -> list[Write]:
    """The writes that put a finished batch's failed rows back to be added again (the next attempt).

    Each row keeps its task id and place; its failed run is kept in a ``taskdeck.retried`` event,
    and its cost counts every attempt (a failed run was billed too). Each patch is guarded by the
    row's status, so a row that changed meanwhile is left alone.
    """
    writes: list[Write] = []
    for row in rows:
        attempt = row_attempt(row) + 1
        previous = (row.error or {}).get("message") if row.error else row.message
        writes.append(note(row, "retried", attempt=attempt, previous_run_id=row.run_id, previous_error=previous))
        writes.append(
            PatchTask(
                row.id,
                {
                    "status": TaskStatus.PENDING.value,
                    "run_id": None,
                    "upstream_status": None,
                    "output": None,
                    "error": None,
                    "message": None,
                    "completed_at": None,
                    "submitted_at": None,
                    "submit_started_at": None,
                    "submit_token": row_tag(batch.id, row.row_index or 0, attempt),
                    "cost_usd": ((row.cost_usd or 0.0) if row.run_id else 0.0) + price,
                },
                only_if_status=(row.status,),
            )
        )
    # Unleased: the supervisor that finished it left its lease to expire; any engine claims it now.
    changes = {"status": BatchStatus.RUNNING, "completed_at": None, "lease_owner": None, "lease_expires": None}
    writes.append(PatchBatch(batch.id, changes))
    return writes


class BatchDesk:
    """The batches this process supervises: started, renewed at each heartbeat, claimed, stopped."""

    def __init__(self, ports: BatchPorts, holder: str, api_key: Callable[[str], Awaitable[str | None]]) -> None:
        self.ports = ports
        self.holder = holder
        self._api_key = api_key
        self.supervisors: dict[str, BatchSupervisor] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, batch: Batch) -> None:
        """Supervise a batch this process holds the lease of."""
        if batch.id in self.supervisors:
            return
        key = await self._api_key(batch.owner)
        if key is None:
            log.error("batch %s has no stored API key; it cannot be run", batch.id)
            return
        supervisor = BatchSupervisor(self.ports, batch, key)
        self.supervisors[batch.id] = supervisor
        self._tasks[batch.id] = asyncio.create_task(self._run(supervisor), name=f"batch-{batch.id}")

    async def _run(self, supervisor: BatchSupervisor) -> None:
        batch_id = supervisor.batch.id
        try:
            await supervisor.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Its lease is not renewed any more: it expires and a heartbeat claims the batch again.
            log.exception("the supervisor of batch %s crashed; the batch will be claimed again", batch_id)
        self.supervisors.pop(batch_id, None)
        self._tasks.pop(batch_id, None)

    def held(self) -> list[str]:
        return list(self.supervisors)

    def drop(self, batch_id: str) -> None:
        supervisor = self.supervisors.pop(batch_id, None)
        if supervisor is not None:
            supervisor.stop()
        self._tasks.pop(batch_id, None)

    async def stop(self, grace: float) -> list[str]:
        """Stop every supervisor; returns the batches held, whose leases the caller releases."""
        held = list(self.supervisors)
        for supervisor in self.supervisors.values():
            supervisor.stop()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        return held
