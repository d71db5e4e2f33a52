"""The engine: owns the store, the writer, the rate budget and every run follower of this process.

A renewal loop extends this process's leases, on its own thread and cadence; a
heartbeat loop claims followed tasks nobody
holds (a crashed process's expire; a task it left ``submitting`` is reconciled
by the new follower, see submitter.py), stops following the runs of keys that
were forgotten, and GETs runs whose status no stream has reported for a while.
``submit``, ``track`` and ``resubmit`` lease their task at once and start
following it without waiting for a heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from taskdeck.config import Settings
from taskdeck.engine.batches import (
    RETRYABLE,
    BatchDesk,
    BatchPorts,
    RowSource,
    plan_batch,
    resume_key,
    retry_writes,
)
from taskdeck.engine.bridge import bridge_for
from taskdeck.engine.catalog import Catalog
from taskdeck.engine.feed import Feed
from taskdeck.engine.follower import Follower, FollowerPorts
from taskdeck.engine.groups import OwnerGroups
from taskdeck.engine.intake import IntakeError, key_record, new_task, validate_request
from taskdeck.engine.machine import holder_name, node_of, pid_gone
from taskdeck.engine.ratelimit import RateBudget
from taskdeck.engine.viewers import RowViewers
from taskdeck.engine.writer import WriteFailed, Writer, note
from taskdeck.models import ACTIVE_UPSTREAM, Batch, BatchStatus, Task, TaskStatus, new_task_id
from taskdeck.processors import get_processor
from taskdeck.store.base import AppendEvent, InsertBatch, InsertTask, PatchTask, ProcessInfo, Store
from taskdeck.store.open import open_store
from taskdeck.store.rows import FOLLOWED
from taskdeck.upstream.client import Upstream, UpstreamError
from taskdeck.vault import KeyVault

__all__ = ["Engine"]

log = logging.getLogger("taskdeck.engine")
# Seconds a sibling on this machine must have been seen dead before its leases are freed (engine/machine.py).
LOCAL_TAKEOVER_GRACE = 3.0
USAGE_REPORT_INTERVAL = 1.0
# Leases renewed per store call: each call's answer (the runs still ours) is read in a bounded statement,
# and a holder without a process row (which then renews task rows) holds few row locks at a time.
RENEW_CHUNK = 1000
T = TypeVar("T")


class Engine:
    """Follows every run it holds a lease on; one per process."""

    def __init__(
        self, settings: Settings, *, store: Store | None = None, follow: bool = True, kind: str = "serve"
    ) -> None:
        settings.validate()
        self.settings = settings
        # follow=False (``serve --no-engine``): a web-only process. It stores tasks unleased, for
        # the workers to claim, follows nothing itself, and shows live what the workers store.
        self.follows = follow
        self.kind = kind if follow else "web"
        self.started_at = time.time()
        self.store: Store = store if store is not None else open_store(settings.store_url)
        self.vault = KeyVault.open(settings.secret_key, settings.db_path)
        self.holder = holder_name()  # host:pid:node:token (engine/machine.py)
        self.node = node_of(self.holder) if settings.local_takeover else None
        self.feed = Feed()
        self.writer = Writer(self.store, self.feed, batch=settings.write_batch, holder=self.holder)
        self.bridge = bridge_for(
            self.store,
            self.feed,
            self.holder,
            self.db,
            url=settings.store_url,
            poll=settings.feed_poll_interval,
        )
        # PostgreSQL grants every request from one shared budget per key (exact across machines).
        take = getattr(self.store, "take_rate", None)
        self.budget = RateBudget(
            settings.rate_limit_per_minute, settings.rate_limit_scope, settings.rate_window, take=take
        )
        self.upstream = Upstream(settings.base_url, self.budget, transport=settings.http_transport)
        self.groups = OwnerGroups(self.store, self.upstream, self.db)
        # What the web layer and the CLI read (and delete) through; they never hold the store.
        self.catalog = Catalog(self.store, self.db, self.feed, self.writer, self.holder, on_delete=self._drop)
        self._ports = FollowerPorts(
            settings=settings,
            writer=self.writer,
            upstream=self.upstream,
            groups=self.groups,
            lease_fresh=self.lease_fresh,
            stored_keys=lambda task_id: self.db(self.store.dedup_keys, task_id),
        )
        self.desk = BatchDesk(
            BatchPorts(
                settings=settings,
                writer=self.writer,
                upstream=self.upstream,
                lease_fresh=self.batch_leases_fresh,
                rows=lambda batch_id, after, limit: self.db(
                    lambda: self.store.batch_rows(batch_id, after_index=after, limit=limit)
                ),
                counts=lambda batch_id: self.db(self.store.batch_counts, batch_id),
            ),
            self.holder,
            self.api_key,
        )
        # Batch rows someone is looking at: their run streams, opened on demand (engine/viewers.py).
        self.viewers = RowViewers(self._ports, self.api_key)
        # When our leases were last known renewed (monotonic); a create is only sent while they are fresh.
        self._renewed_at = time.monotonic()
        # Per followed task: when (monotonic) its lease was last written, so the fence closes only streams at risk.
        self._leased_at: dict[str, float] = {}
        self._batches_renewed_at = time.monotonic()
        self._spend_locks: dict[str, asyncio.Lock] = {}
        self._seen_dead: dict[str, float] = {}  # sibling holder -> when (monotonic) we first saw its pid gone
        self.followers: dict[str, Follower] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._keys: dict[str, str] = {}
        self._tick: asyncio.Task[None] | None = None
        self._renewals: asyncio.Task[None] | None = None
        self._usage: asyncio.Task[None] | None = None
        self._checks: set[asyncio.Task[None]] = set()
        # Store calls run on this pool, not asyncio's default one, so that stop() can wait for
        # every call in flight before it closes the connections (closing under a running query
        # crashes sqlite3).
        self._db_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="taskdeck-db")
        # Lease renewals get a thread of their own: queued behind thousands of followers' start-up reads
        # (bench scale-out, 5,000 runs per worker) a renewal came late, leases expired under open streams,
        # and other workers opened second streams for the same runs.
        self._lease_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskdeck-leases")
        # And renewals one more of their own, so a slow claim or registration never delays them.
        self._renew_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="taskdeck-renewals")

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the engine's database threads."""
        return await asyncio.get_running_loop().run_in_executor(self._db_pool, fn, *args)

    async def lease_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a lease-keeping store call (claim, register) on its own thread, never behind reads."""
        return await asyncio.get_running_loop().run_in_executor(self._lease_pool, fn, *args)

    async def renew_db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a lease renewal on the renewals' own thread, behind nothing else."""
        return await asyncio.get_running_loop().run_in_executor(self._renew_pool, fn, *args)

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Start writing, mark stale submissions, and claim every followed task nobody holds."""
        self.writer.start()
        await self.bridge.start()
        await self._heartbeat()
        self._tick = asyncio.create_task(self._tick_loop(), name="taskdeck-heartbeat")
        self._renewals = asyncio.create_task(self._renew_loop(), name="taskdeck-lease-renewal")
        self._usage = asyncio.create_task(self._usage_loop(), name="taskdeck-rate-usage")

    async def stop(self, grace: float = 8.0) -> None:
        """Close streams, flush writes, release leases. Bounded by ``grace`` seconds in all."""
        deadline = time.monotonic() + grace
        for loop_task in (self._tick, self._renewals, self._usage):
            if loop_task is not None:
                loop_task.cancel()
        for follower in self.followers.values():
            follower.stop()
        batches = await self.desk.stop(grace / 3)
        await self.viewers.stop(grace / 6)
        tasks = [*self._tasks.values(), *self._checks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace / 3)
        try:
            await asyncio.wait_for(self.writer.close(), timeout=max(0.1, deadline - time.monotonic() - 1.0))
        except TimeoutError:
            log.error("writes still queued at shutdown were not flushed in time")
        # Leases go last, after the writes: a follower elsewhere must find our events stored.
        held = list(self.followers)
        if held:
            await self.db(self.store.release, self.holder, held)
        if batches:
            await self.db(self.store.release_batches, self.holder, batches)
        # A final report: whoever follows knows exactly what we spent, with no allowance for a crash.
        usage = self.budget.usage()
        await self.db(lambda: self.store.put_usage(self.holder, usage, time.time(), final=True))
        await self.bridge.stop()
        await self.db(self.store.drop_process, self.holder)
        await self.upstream.close()
        await asyncio.get_running_loop().run_in_executor(None, self._db_pool.shutdown, True)
        await asyncio.get_running_loop().run_in_executor(None, self._lease_pool.shutdown, True)
        await asyncio.get_running_loop().run_in_executor(None, self._renew_pool.shutdown, True)
        self.store.close()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                await self._heartbeat()
            except Exception:
                log.exception("heartbeat failed")

    async def _renew_loop(self) -> None:
        """Renew leases every heartbeat interval, whatever the heartbeat's other work costs.

        Renewing inside the heartbeat put every renewal behind its claims, rebalancing and usage
        reads: at 15,000 runs, when thousands of streams reconnected at once, renewals came 8-10 s
        apart and, with a 10 s lease, the fence closed thousands of streams again and again.
        """
        while True:
            started = time.monotonic()
            try:
                await self._renew()
            except Exception:
                log.exception("lease renewal failed; retrying in %.1f s", self.settings.heartbeat_interval)
            took = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.settings.heartbeat_interval - took))

    async def _usage_loop(self) -> None:
        """Report our spending every second, so a crash loses at most a second of it."""
        reported: dict[str, dict[int, int]] = {}
        while True:
            await asyncio.sleep(USAGE_REPORT_INTERVAL)
            self.fence()
            usage = self.budget.usage()
            if usage != reported:
                try:
                    await self.db(self.store.put_usage, self.holder, usage, time.time())
                    reported = usage
                except Exception:
                    log.exception("could not record rate usage")

    def fence(self) -> int:
        """Close the streams whose leases may expire before a late renewal reaches them.

        Runs every second (beside the renewal loop, which may be stuck on a slow database). A lease
        that expires is claimed by another process, which opens its own stream: ours must be closed
        by then, or the run has two. Only the runs at risk are closed (each lease's last write is
        known, and renewals commit a chunk at a time); they are claimed again (by anyone) once those
        leases expire. Returns how many followers and batches were stopped.
        """
        now = time.monotonic()
        limit = self.settings.lease_ttl - min(2.0, self.settings.heartbeat_interval)
        at_risk = [t for t in self.followers if now - self._leased_at.get(t, self._renewed_at) >= limit]
        batches = self.desk.held() if now - self._batches_renewed_at >= limit else []
        if not at_risk and not batches:
            return 0
        log.warning(
            "leases of %d run(s) and %d batch(es) not renewed for %.1f s or more (the database is slow); "
            "closing their streams before the leases can expire",
            len(at_risk),
            len(batches),
            limit,
        )
        for task_id in at_risk:
            self._drop(task_id)
        for batch_id in batches:
            self.desk.drop(batch_id)
        return len(at_risk) + len(batches)

    def lease_fresh(self, task_id: str | None = None) -> bool:
        """This task's lease (or, with none given, every lease here) was written recently enough that it
        cannot have passed to another process: a create may be sent under it."""
        written = self._leased_at.get(task_id, self._renewed_at) if task_id is not None else self._renewed_at
        return time.monotonic() - written < self.settings.lease_ttl - self.settings.heartbeat_interval

    def batch_leases_fresh(self) -> bool:
        """The batches' leases were renewed recently enough to add rows under them."""
        age = time.monotonic() - self._batches_renewed_at
        return age < self.settings.lease_ttl - self.settings.heartbeat_interval

    async def _renew(self) -> None:
        """Extend every lease held here (tasks a chunk at a time, then batches); drop what was lost."""
        started = time.monotonic()
        ttl = self.settings.lease_ttl
        # Only the followers that existed when renewing: one started meanwhile holds a fresh lease.
        renewing = list(self.followers)
        for first in range(0, len(renewing), RENEW_CHUNK):
            chunk = renewing[first : first + RENEW_CHUNK]
            sent = time.monotonic()
            held = await self.renew_db(self.store.renew, self.holder, chunk, time.time() + ttl)
            for task_id in chunk:
                if task_id not in self.followers:
                    continue
                if task_id in held:
                    self._leased_at[task_id] = sent
                else:
                    log.warning("lost the lease of %s (taken over or deleted); stopped following it", task_id)
                    self._drop(task_id)
        self._renewed_at = started
        took = time.monotonic() - started
        if took > self.settings.heartbeat_interval:
            log.warning("renewing %d lease(s) took %.1f s (the database is slow)", len(renewing), took)
        held_batches = self.desk.held()
        if held_batches:
            sent = time.monotonic()
            kept = await self.renew_db(self.store.renew_batches, self.holder, held_batches, time.time() + ttl)
            for batch_id in held_batches:
                if batch_id not in kept:
                    log.warning("lost the lease of batch %s (taken over or deleted); stopped running it", batch_id)
                    self.desk.drop(batch_id)
            self._batches_renewed_at = sent
        else:
            self._batches_renewed_at = time.monotonic()

    async def _heartbeat(self) -> None:
        now = time.time()
        if self.followers:
            owners = {f.task.owner for f in self.followers.values()}
            keyed = await self.db(self.store.owners_with_keys, list(owners))
            for task_id, follower in list(self.followers.items()):
                if follower.task.owner not in keyed:
                    log.warning("the API key of %s was forgotten; stopped following it", task_id)
                    self._keys.pop(follower.task.owner, None)
                    self._drop(task_id)
                    await self.db(self.store.release, self.holder, [task_id])
        # Learn the rate budget others (or a dead predecessor) spent before claiming anything.
        reports = await self.db(self.store.get_usage, now - self.settings.rate_window - 10.0, self.holder)
        self.budget.set_external(reports, now, USAGE_REPORT_INTERVAL)
        await self.lease_db(self.store.put_process, self._process_info(now))
        await self._bury_the_dead()
        room = self.settings.max_followers - len(self.followers) if self.follows else 0
        if room > 0 or len(self.followers) > 1:
            room = min(room, await self._rebalance(now))
        # The time of the claim itself: the reads above may have taken a while, and the lease runs from now.
        claimed = await self.lease_db(self.store.claim, self.holder, time.time(), self.settings.lease_ttl, room)
        for task in claimed:
            await self._start_follower(task)
        await self._batches_heartbeat(now)
        stale = time.monotonic() - self.settings.status_poll_after
        for follower in list(self.followers.values()):
            if follower.status == TaskStatus.QUEUED and not follower.polling and follower.last_status_at < stale:
                check = asyncio.create_task(follower.check_status())
                self._checks.add(check)
                check.add_done_callback(self._checks.discard)

    async def _batches_heartbeat(self, now: float) -> None:
        """Claim unfinished batches nobody holds (renewals are the renewal loop's)."""
        if not self.follows:
            return
        room = self.settings.max_batches - len(self.desk.held())
        claimed = await self.lease_db(self.store.claim_batches, self.holder, now, self.settings.lease_ttl, room)
        for batch in claimed:
            log.info("claimed batch %s (%d rows)", batch.id, batch.row_count)
            await self.desk.start(batch)

    async def create_batch(
        self,
        api_key: str,
        *,
        name: str,
        columns: list[str],
        rows: RowSource,
        spec: dict[str, Any],
        digest: str,
    ) -> tuple[Batch, bool]:
        """Store a batch and its rows and start it; or, for an input and spec seen before, the batch
        already made (True: resumed, nothing new is paid). Raises IntakeError for bad input.

        ``rows`` is read twice, a row at a time (every row checked, then every row stored in the
        batch's one transaction): the table is never held whole.
        """
        owner = self.vault.owner(api_key)
        found = await self.db(self.store.find_batch, owner, resume_key(digest, spec))
        if found is not None:
            return found, True
        plan = await asyncio.to_thread(
            plan_batch,
            owner,
            name,
            columns,
            rows,
            spec,
            digest,
            holder=self._lease_holder,
            lease_ttl=self.settings.lease_ttl,
        )
        batch = plan.batch
        await self.remember_key(api_key)
        async with self._spend_locks.setdefault(owner, asyncio.Lock()):
            await self._check_budget(owner, plan.cost_usd)
            try:
                await self.writer.commit([InsertBatch(batch, plan.tasks)], owner)
            except WriteFailed:
                # The same input and spec, stored meanwhile by another request: that one is the batch.
                found = await self.db(self.store.find_batch, owner, batch.resume_key)
                if found is None:
                    raise
                return found, True
        log.info("batch %s created: %d rows", batch.id, batch.row_count)
        if self.follows:
            await self.desk.start(batch)
        return batch, False

    async def retry_batch(self, api_key: str, batch_id: str) -> tuple[Batch, int]:
        """Add a finished batch's failed, cancelled and rejected rows again, to the same task group.

        Only those rows are paid for again. Refused (409) while rows are still running: a retry then
        could race the supervisor following them. Raises IntakeError (404, 409, 402 over budget).
        """
        owner = self.vault.owner(api_key)
        statuses = [s.value for s in RETRYABLE]
        # Under the owner's spend lock: two retries of one batch from this process are one retry.
        async with self._spend_locks.setdefault(owner, asyncio.Lock()):
            batch = await self.db(self.store.get_batch, batch_id)
            if batch is None or batch.owner != owner:
                raise IntakeError(404, f"No batch {batch_id[:40]!r} for this API key.")
            if batch.status != BatchStatus.COMPLETED:
                raise IntakeError(409, "batch: rows are still running; retry the failed ones once every row has ended")
            rows: list[Task] = []
            after = -1
            while True:
                page = await self.db(
                    partial(self.store.batch_rows, batch.id, after_index=after, limit=5000, statuses=statuses)
                )
                rows.extend(page)
                if len(page) < 5000:
                    break
                after = page[-1].row_index if page[-1].row_index is not None else after
            if not rows:
                raise IntakeError(409, "batch: no failed rows to retry")
            processor = get_processor(str(batch.spec.get("processor")))
            price = processor.usd_per_run if processor else 0.0
            await self._check_budget(owner, price * len(rows))
            await self.remember_key(api_key)
            await self.writer.commit(retry_writes(batch, rows, price), owner)
        log.info("batch %s: %d failed row(s) to be added again", batch.id, len(rows))
        if self.follows:
            await self._batches_heartbeat(time.time())  # claim it now rather than at the next heartbeat
        again = await self.db(self.store.get_batch, batch.id)
        return (again or batch), len(rows)

    async def _bury_the_dead(self) -> None:
        """Free at once the leases of siblings on this machine whose pid is gone (engine/machine.py).

        Their streams closed with them, so their runs are claimed now (by us or anyone) instead of
        after the lease TTL; and they stop counting as alive for the fair share.
        """
        if self.node is None:
            return
        now = time.monotonic()
        for proc in await self.db(self.store.processes):
            if proc.holder == self.holder or node_of(proc.holder) != self.node or not pid_gone(proc.pid):
                self._seen_dead.pop(proc.holder, None)
                continue
            # Its sockets closed when it died, but Parallel may take a moment to notice: wait a little
            # before anyone opens a stream it still counts open (never two streams for one run).
            if now - self._seen_dead.setdefault(proc.holder, now) < LOCAL_TAKEOVER_GRACE:
                continue
            self._seen_dead.pop(proc.holder, None)
            freed = await self.db(self.store.bury_process, proc.holder)
            log.warning(
                "takeover: process %s (pid %d on this machine) is gone; released its %d lease(s) now "
                "instead of waiting for them to expire",
                proc.holder,
                proc.pid,
                freed,
            )

    async def _rebalance(self, now: float) -> int:
        """How many more runs to claim for a fair share; release runs held beyond it.

        Without this, the first process to claim takes every run (up to max_followers) and keeps it.
        The share is the runs to follow divided by the live engines (the process registry). A process
        holding well over its share lets the surplus go (running runs only: never one mid-create);
        others claim them at their next heartbeat and resume their streams from where they were.
        """
        # Alive: seen within two heartbeats (not the lease TTL: a killed process would then count for the whole
        # TTL, shares would shrink, and the survivors would release runs only to claim them back).
        since = now - min(self.settings.lease_ttl, 2 * self.settings.heartbeat_interval + 1.0)
        alive = await self.db(lambda: self.store.engines_alive(since))
        if alive <= 1:
            return self.settings.max_followers
        # Only the followed statuses (index on status): the heartbeat must not scan every finished task.
        counts = await self.db(lambda: self.store.count_tasks(statuses=FOLLOWED))
        active = sum(counts.values())
        share = -(-active // alive)  # ceil
        surplus = len(self.followers) - (share + max(1, share // 5))
        if surplus > 0:
            movable = [
                task_id
                for task_id, follower in self.followers.items()
                if follower.status in (TaskStatus.RUNNING, TaskStatus.QUEUED)
            ][:surplus]
            running = {task_id: self._tasks.get(task_id) for task_id in movable}
            for task_id in movable:
                self._drop(task_id)
            # Their streams must be closed before anyone else may open one: never two for a run.
            # A follower that does not stop in time keeps its lease until it expires (not renewed now).
            pending = [t for t in running.values() if t is not None]
            if pending:
                await asyncio.wait(pending, timeout=5.0)
            closed = [task_id for task_id, t in running.items() if t is None or t.done()]
            if closed:
                await self.db(self.store.release, self.holder, closed)
                log.info("rebalancing: released %d run(s) for the %d other process(es)", len(closed), alive - 1)
        return max(0, share - len(self.followers))

    @property
    def _lease_holder(self) -> str | None:
        """Who a task made here is leased to: this process, or nobody (web-only: for a worker to claim)."""
        return self.holder if self.follows else None

    def _process_info(self, now: float) -> ProcessInfo:
        return ProcessInfo(
            holder=self.holder,
            kind=self.kind,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            seen_at=now,
            following=len(self.followers),
            feed_lag=self.bridge.deliver.lag,
        )

    # -- followers ---------------------------------------------------------------
    async def api_key(self, owner: str) -> str | None:
        """The stored key of ``owner`` (decrypted), or None when none is stored."""
        key = self._keys.get(owner)
        if key is None:
            token = await self.db(self.store.get_key, owner)
            if token is None:
                return None
            key = self._keys[owner] = self.vault.decrypt(token)
        return key

    async def _start_follower(self, task: Task) -> None:
        if task.id in self.followers or not self.follows:
            return  # a web-only process leaves every run to the workers
        key = await self.api_key(task.owner)
        if key is None:
            log.error("task %s has no stored API key; it cannot be followed", task.id)
            return
        follower = Follower(self._ports, task, key)
        self.followers[task.id] = follower
        # When its lease was written (claim, submit, track): the fence's clock for this run.
        written = time.time() - (task.lease_expires - self.settings.lease_ttl) if task.lease_expires else 0.0
        self._leased_at[task.id] = time.monotonic() - max(0.0, written)
        self._tasks[task.id] = asyncio.create_task(self._run_follower(follower), name=f"follow-{task.id}")

    async def _run_follower(self, follower: Follower) -> None:
        task_id = follower.task.id
        try:
            await follower.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # Its lease is no longer renewed, so it expires and a heartbeat (ours or another
            # process's) claims the task again and starts a fresh follower from what is stored.
            log.exception("follower of %s crashed; the task will be claimed again once its lease expires", task_id)
            self._forget(task_id)
            return
        self._forget(task_id)
        if follower.status.is_terminal:
            await self.db(self.store.release, self.holder, [task_id])

    def _forget(self, task_id: str) -> None:
        self.followers.pop(task_id, None)
        self._tasks.pop(task_id, None)
        self._leased_at.pop(task_id, None)

    def _drop(self, task_id: str) -> None:
        follower = self.followers.pop(task_id, None)
        if follower is not None:
            follower.stop()
        task = self._tasks.pop(task_id, None)
        if task is not None:
            task.cancel()
        self._leased_at.pop(task_id, None)

    # -- actions -------------------------------------------------------------------
    def owner_of(self, api_key: str) -> str:
        """The owner hash of a key: who its tasks belong to (the same on every process given the secret)."""
        return self.vault.owner(api_key)

    async def check_key(self, api_key: str) -> None:
        """Prove the key works with one cheap upstream call; raises :class:`UpstreamError` when it does not.

        It asks for a run id that cannot exist: a 404 proves the key works, 401/403 that it does not.
        """
        try:
            await self.upstream.retrieve(self.owner_of(api_key), api_key, "trun_" + "0" * 32)
        except UpstreamError as err:
            if err.status != 404:
                raise

    async def remember_key(self, api_key: str) -> str:
        """Store the key encrypted; return its owner hash."""
        if not api_key or not api_key.strip():
            raise IntakeError(401, "An API key is required.")
        owner = self.vault.owner(api_key)
        self._keys[owner] = api_key
        await self.writer.commit([key_record(self.vault, api_key)])
        return owner

    async def submit(self, api_key: str, request: dict[str, Any], *, follow_up_of: str | None = None) -> Task:
        """Store a new task and start submitting it. Raises IntakeError for a bad request."""
        owner = self.vault.owner(api_key)
        request = dict(request)
        if follow_up_of is not None:
            parent = await self.db(self.store.get_task, follow_up_of)
            if parent is None or parent.owner != owner:
                raise IntakeError(404, f"follow_up_of: no task {follow_up_of!r} for this API key")
            if not parent.interaction_id:
                raise IntakeError(422, "follow_up_of: that task has no interaction id yet (not submitted)")
            request["previous_interaction_id"] = parent.interaction_id
        # Schema checks can cost real CPU (bounded, see taskspec): off the event loop.
        request, processor = await asyncio.to_thread(validate_request, request)
        await self.remember_key(api_key)
        task = new_task(
            owner,
            request,
            processor,
            follow_up_of=follow_up_of,
            holder=self._lease_holder,
            lease_ttl=self.settings.lease_ttl,
        )
        # Check and store under one lock per owner, so two requests cannot both pass the budget.
        async with self._spend_locks.setdefault(owner, asyncio.Lock()):
            await self._check_budget(owner, task.cost_usd or 0.0)
            await self.writer.commit([InsertTask(task), self._own(task, "created")], owner)
        await self._start_follower(task)
        return task

    async def _check_budget(self, owner: str, cost: float) -> None:
        """Refuse (402) a run that would take the owner past the daily budget, when one is set."""
        budget = self.settings.daily_budget_usd
        if budget <= 0:
            return
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        spent = await self.db(self.store.spent_since, owner, midnight)
        if spent + cost > budget + 1e-9:
            raise IntakeError(
                402,
                f"Daily budget reached: this API key has started ${spent:.3f} of runs today (UTC) and this run "
                f"costs ${cost:.3f}, over the ${budget:.2f} limit (TASKDECK_DAILY_BUDGET_USD). It resets at "
                "00:00 UTC; choose a cheaper processor or ask the administrator to raise the limit.",
            )

    async def track(self, api_key: str, run_id: str) -> Task:
        """Adopt a run created elsewhere and follow it from its current state."""
        owner = await self.remember_key(api_key)
        existing = await self.db(self.store.get_task_by_run, run_id)
        if existing is not None:
            if existing.owner != owner:
                raise IntakeError(404, f"run_id: {run_id!r} is not a run of this API key")
            return existing
        try:
            run = await self.upstream.retrieve(owner, api_key, run_id)
            sent = await self.upstream.retrieve_input(owner, api_key, run_id)
        except UpstreamError as err:
            code = 404 if err.status in (401, 403, 404) else 502
            raise IntakeError(code, f"run_id: Parallel answered {err}") from err
        processor = get_processor(str(run.get("processor")))
        upstream_status = str(run.get("status"))
        # A finished run is followed once too: its stream replays the trace and the output.
        status = TaskStatus(upstream_status) if upstream_status in ACTIVE_UPSTREAM else TaskStatus.RUNNING
        now = time.time()
        task = Task(
            id=new_task_id(),
            owner=owner,
            processor=str(run.get("processor")),
            request=sent or {"input": None, "processor": run.get("processor")},
            status=status,
            created_at=now,
            run_id=run_id,
            interaction_id=run.get("interaction_id"),
            upstream_status=upstream_status,
            warnings=run.get("warnings"),
            cost_usd=processor.usd_per_run if processor else None,
            submitted_at=now,
            lease_owner=self._lease_holder,
            lease_expires=now + self.settings.lease_ttl if self.follows else None,
        )
        await self.writer.commit([InsertTask(task), self._own(task, "adopted", run_id=run_id)], owner)
        await self._start_follower(task)
        return task

    async def resubmit(self, api_key: str, task_id: str) -> Task:
        """Send a task that ended without a result (submit_unknown, rejected, failed, cancelled) again, as a new run.

        A task still being submitted or followed is refused (409): delete it instead to stop following it.
        """
        owner = self.vault.owner(api_key)
        task = await self.db(self.store.get_task, task_id)
        if task is None or task.owner != owner:
            raise IntakeError(404, f"no task {task_id!r} for this API key")
        if not task.status.can_resubmit:
            raise IntakeError(
                409,
                f"task {task_id!r} is {task.status.value}: only a task that ended without a result can be "
                "resubmitted (delete it to stop following it)",
            )
        await self.remember_key(api_key)
        async with self._spend_locks.setdefault(owner, asyncio.Lock()):
            if task.status != TaskStatus.REJECTED:  # a rejected run cost nothing and is not counted
                await self._check_budget(owner, task.cost_usd or 0.0)
        now = time.time()
        changes = {
            "status": TaskStatus.PENDING.value,
            "run_id": None,
            "interaction_id": None,
            "upstream_status": None,
            "error": None,
            "output": None,
            "progress": None,
            "progress_meter": None,
            "message": None,
            "submitted_at": None,
            "completed_at": None,
            # A new attempt gets a new tag, so that the old run is never taken for the new one.
            "submit_group": None,
            "submit_token": None,
            "submit_cursor": None,
            "submit_started_at": None,
            "lease_owner": self._lease_holder,
            "lease_expires": now + self.settings.lease_ttl if self.follows else None,
        }
        guard = tuple(s for s in TaskStatus if s.can_resubmit)
        await self.writer.commit(
            [
                PatchTask(task.id, changes, only_if_status=guard),
                self._own(task, "resubmitted", previous_run=task.run_id),
            ],
            owner,
        )
        fresh = await self.db(self.store.get_task, task.id)
        if fresh is None or fresh.status != TaskStatus.PENDING or fresh.lease_owner != changes["lease_owner"]:
            raise IntakeError(409, "the task changed meanwhile; reload it")
        await self._start_follower(fresh)
        return fresh

    async def forget_key(self, owner: str) -> int:
        """Erase the owner's stored key; stop following its runs here. Returns how many runs stopped being followed.

        Runs keep going at Parallel; they are followed again (from where they are) once the key is given again.
        """
        self._keys.pop(owner, None)
        await self.db(self.store.forget_key, owner)
        dropped = [task_id for task_id, f in self.followers.items() if f.task.owner == owner]
        for task_id in dropped:
            self._drop(task_id)
        if dropped:
            await self.db(self.store.release, self.holder, dropped)
        log.info("an API key was forgotten; %d run(s) are no longer followed", len(dropped))
        return len(dropped)

    @staticmethod
    def _own(task: Task, kind: str, **data: Any) -> AppendEvent:
        return note(task, kind, **data)

    def stats(self) -> dict[str, Any]:
        """Counters for health pages and benchmarks."""
        return {
            "holder": self.holder,
            "followers": len(self.followers),
            "polling": sum(1 for f in self.followers.values() if f.polling),
            "upstream_requests": self.upstream.requests,
            "writer_commits": self.writer.commits,
            "writes": self.writer.written,
        }
