"""The rate budget: one sliding-window limiter per API key, shared by every upstream call of that key.

A window is 60 s plus a small margin (request send times here and arrival times
there differ by the network), and no request is sent while the window is full.
A 429 pauses the key until its ``Retry-After``. Requests other processes made
with the same key (reported through the store at each heartbeat, and a killed
predecessor's last report) count against the window too, so a restart or a
second process does not double the budget. Wall-clock time, since it is shared.

On PostgreSQL the budget is exact across processes and machines: every request is first granted
by the database (``take``: a row per request under a per-key advisory lock), so no number of
processes can together exceed it. The reports above still flow, for ``taskdeck status``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from taskdeck.store.base import UsageReport

__all__ = ["KeyLimiter", "RateBudget", "Take"]

WINDOW = 60.0
MARGIN = 0.5
# Grants from the database reach the network later than local ones: a thread hop back to an event loop
# that may be busy following thousands of runs. Measured at 3,000 runs on 2 cores (bench scale-out), a
# 0.5 s margin let 2,238 requests land in one minute for a 2,000 budget; the shared window is wider.
SHARED_MARGIN = 5.0
# (owner, limit, window seconds) -> 0.0 when a request was granted, else seconds until one frees.
Take = Callable[[str, int, float], float]


class KeyLimiter:
    """At most ``limit`` requests (ours plus ``external`` ones) in any ``window + MARGIN`` seconds."""

    def __init__(self, limit: int, window: float = WINDOW, take: Take | None = None) -> None:
        self.limit = limit
        self.window = window + MARGIN
        self._take = take
        self._sent: deque[float] = deque()
        self.external: dict[int, int] = {}  # unix second -> requests other processes made then
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        # Priority lane: requests that keep runs already paid for followed (stream reopens after a
        # crash or a 570 s close, result fetches) go before creates still waiting; otherwise a worker
        # taking over a dead one's runs would wait behind a queue of creates for minutes.
        self._urgent_waiting = 0
        self._no_urgent = asyncio.Event()
        self._no_urgent.set()

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (after a 429)."""
        self._paused_until = max(self._paused_until, time.time() + seconds)

    def _external_in_window(self, now: float) -> tuple[int, float | None]:
        """Requests of others still in the window, and when the oldest of them leaves it."""
        start = now - self.window
        count = 0
        oldest: float | None = None
        for second, n in self.external.items():
            if second + 1 > start:  # the bucket [second, second + 1) overlaps the window
                count += n
                oldest = second + 1.0 if oldest is None else min(oldest, second + 1.0)
        return count, oldest

    async def acquire(self, owner: str = "", *, urgent: bool = False) -> None:
        """Wait for a free request of the window and take it; ``urgent`` ones go before the others."""
        if urgent:
            self._urgent_waiting += 1
            self._no_urgent.clear()
            try:
                async with self._lock:
                    await self._take_one(owner)
            finally:
                self._urgent_waiting -= 1
                if not self._urgent_waiting:
                    self._no_urgent.set()
            return
        while True:
            await self._no_urgent.wait()
            # The lock makes waiters queue in order, so a burst drains first come, first served.
            async with self._lock:
                if self._urgent_waiting:
                    continue  # an urgent request came while we queued: it goes first
                await self._take_one(owner)
                return

    async def _take_one(self, owner: str) -> None:
        if self._take is not None:
            await self._acquire_shared(owner)
            return
        while True:
            now = time.time()
            while self._sent and self._sent[0] <= now - self.window:
                self._sent.popleft()
            ext, ext_oldest = self._external_in_window(now)
            wait = self._paused_until - now
            if len(self._sent) + ext >= self.limit:
                frees = [t + self.window for t in ([self._sent[0]] if self._sent else [])]
                if ext_oldest is not None:
                    frees.append(ext_oldest + self.window)
                wait = max(wait, min(frees) - now if frees else 1.0)
            if wait <= 0:
                self._sent.append(now)
                return
            await asyncio.sleep(wait)

    async def _acquire_shared(self, owner: str) -> None:
        assert self._take is not None
        while True:
            wait = self._paused_until - time.time()
            if wait <= 0:
                window = self.window - MARGIN + SHARED_MARGIN
                wait = await asyncio.to_thread(self._take, owner, self.limit, window)
                if wait <= 0:
                    self._sent.append(time.time())
                    return
            await asyncio.sleep(wait)

    def usage(self) -> dict[int, int]:
        """Our requests in the window, per unix second (what other processes need to know)."""
        buckets: dict[int, int] = {}
        cutoff = time.time() - self.window
        for t in self._sent:
            if t > cutoff:
                buckets[int(t)] = buckets.get(int(t), 0) + 1
        return buckets


class RateBudget:
    """Limiters by key owner. ``scope`` is ``all`` (every request counts) or ``creates``.

    ``window`` is Parallel's 60 s; tests shrink it to prove the same in seconds.
    """

    def __init__(self, limit: int, scope: str, window: float = WINDOW, *, take: Take | None = None) -> None:
        self.limit = limit
        self.scope = scope
        self.window = window
        self.take = take  # the database's shared grant (PostgreSQL), or None: this process's own count
        self._limiters: dict[str, KeyLimiter] = {}

    def limiter(self, owner: str) -> KeyLimiter:
        found = self._limiters.get(owner)
        if found is None:
            found = self._limiters[owner] = KeyLimiter(self.limit, self.window, self.take)
        return found

    async def acquire(self, owner: str, *, creates: bool) -> None:
        """Take one request of ``owner``'s budget (if it counts under ``scope``); creates go last."""
        if creates or self.scope == "all":
            await self.limiter(owner).acquire(owner, urgent=not creates)

    def pause(self, owner: str, seconds: float) -> None:
        self.limiter(owner).pause(seconds)

    def usage(self) -> dict[str, dict[int, int]]:
        """Our per-second request counts by owner, for the store."""
        return {owner: b for owner, lim in self._limiters.items() if (b := lim.usage())}

    def set_external(self, reports: list[UsageReport], now: float, report_interval: float) -> None:
        """Replace what other processes reported (a key nobody else uses gets nothing).

        A process that stopped reporting without a final report may have died with up to one
        report interval of requests unreported. It is assumed to have gone on at twice its busiest
        second in its last report (capped by what was left of the budget) for that interval: the
        full remaining budget would be safe but would stall every key for a minute after any crash.
        """
        merged: dict[str, dict[int, int]] = {}
        for report in reports:
            buckets = merged.setdefault(report.owner, {})
            for second, count in report.buckets.items():
                buckets[second] = buckets.get(second, 0) + count
            if not report.final and now - report.updated_at > 2 * report_interval:
                recent = sum(n for s, n in report.buckets.items() if s + 1 > report.updated_at - self.window - MARGIN)
                busiest = max(report.buckets.values(), default=0)
                unknown = min(max(0, self.limit - recent), 2 * busiest * max(1.0, report_interval))
                if unknown:
                    second = int(report.updated_at) + 1
                    buckets[second] = buckets.get(second, 0) + int(unknown)
        for owner, lim in self._limiters.items():
            lim.external = merged.get(owner, {})
        for owner, buckets in merged.items():
            if owner not in self._limiters:
                self.limiter(owner).external = buckets
