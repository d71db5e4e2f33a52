"""Owner groups: the task group at Parallel in which Taskdeck creates each owner's runs.

Parallel has no idempotency key and no list of runs, so a create whose answer is
lost (a crash, a timeout) leaves a billed run nobody knows about. Task groups do
list their runs, with their metadata (contract §9). So every run is created inside
its owner's group, tagged with the task's submit token, and the group's runs can
be searched for that token later (see ``Follower._reconcile``).

One group per owner, created on first use and shared by every process (the store
keeps it; the first process to record one wins and the others use it).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from taskdeck.store.base import OwnerGroup, Store
from taskdeck.upstream.client import Upstream

__all__ = ["GROUP_METADATA", "OwnerGroups"]

log = logging.getLogger("taskdeck.groups")
GROUP_METADATA = {"taskdeck": "runs created by Taskdeck"}
LIST_TIMEOUT = 60.0  # listing a big group's runs takes a while; this is not an idle event stream
LISTING_KEPT = 120.0  # seconds a listing is kept for others searching the same group
T = TypeVar("T")
Listing = tuple[float, list[dict[str, Any]]]  # (when the listing started, the TaskRuns it returned)


class OwnerGroups:
    """Finds or creates each owner's group; caches it for this process."""

    def __init__(self, store: Store, upstream: Upstream, db: Callable[..., Awaitable[Any]]) -> None:
        self.store = store
        self.upstream = upstream
        self._db = db
        self._cache: dict[str, OwnerGroup] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listings: dict[tuple[str, str | None], Listing] = {}
        self._list_locks: dict[tuple[str, str | None], asyncio.Lock] = {}

    async def get(self, owner: str, api_key: str) -> OwnerGroup:
        """The owner's group, created upstream first if the owner has none. Raises UpstreamError."""
        found = self._cache.get(owner)
        if found is not None:
            return found
        # One creation per owner at a time in this process: a burst of 200 first submits makes one group.
        lock = self._locks.setdefault(owner, asyncio.Lock())
        async with lock:
            found = self._cache.get(owner) or await self._db(self.store.get_owner_group, owner)
            if found is None:
                created = await self.upstream.create_group(owner, api_key, dict(GROUP_METADATA))
                group_id = str(created["taskgroup_id"])
                found = await self._db(self.store.claim_owner_group, owner, group_id, time.time())
                if found.taskgroup_id != group_id:
                    log.info("another process created this owner's task group first; using %s", found.taskgroup_id)
                else:
                    log.info("created task group %s for an owner's runs", group_id)
            self._cache[owner] = found
            return found

    async def runs(
        self, owner: str, api_key: str, taskgroup_id: str, cursor: str | None, *, not_before: float
    ) -> list[dict[str, Any]]:
        """The TaskRuns of the group after ``cursor``, listed by a request that started at ``not_before`` or later.

        Searches of one group share listings: after a crash, 200 tasks being reconciled make one
        request, not 200 (each listing sends every run after the cursor). Raises UpstreamError.
        """
        key = (taskgroup_id, cursor)
        async with self._list_locks.setdefault(key, asyncio.Lock()):
            now = time.time()
            for old in [k for k, (at, _) in self._listings.items() if at < now - LISTING_KEPT]:
                del self._listings[old]
            cached = self._listings.get(key)
            if cached is not None and cached[0] >= not_before:
                return cached[1]
            runs = await self.upstream.group_runs(owner, api_key, taskgroup_id, cursor, LIST_TIMEOUT)
            self._listings[key] = (now, runs)
            return runs

    def advanced(self, owner: str, taskgroup_id: str, run_cursor: str | None) -> None:
        """Remember a newer runs cursor (the store is told in the same unit as the run id)."""
        cached = self._cache.get(owner)
        if run_cursor and cached is not None and cached.taskgroup_id == taskgroup_id:
            self._cache[owner] = OwnerGroup(owner, taskgroup_id, run_cursor)

    async def replace(self, owner: str, taskgroup_id: str) -> None:
        """Parallel no longer knows ``taskgroup_id``: forget it, so the next ``get`` makes a new one."""
        log.warning("task group %s is gone upstream; a new one will be created", taskgroup_id)
        cached = self._cache.get(owner)
        if cached is not None and cached.taskgroup_id == taskgroup_id:
            del self._cache[owner]
        await self._db(self.store.drop_owner_group, owner, taskgroup_id)
