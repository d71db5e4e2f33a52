"""The rate budget: one sliding-window limiter per API key, shared by every upstream call of that key.

A window is 60 s plus a small margin (request send times here and arrival times
there differ by the network), and no request is sent while the window is full.
A 429 pauses the key until its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["KeyLimiter", "RateBudget"]

WINDOW = 60.0
MARGIN = 0.5


class KeyLimiter:
    """At most ``limit`` acquisitions in any ``window + MARGIN`` seconds (the window is 60 s but in tests)."""

    def __init__(self, limit: int, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window + MARGIN
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.waited = 0.0  # seconds callers spent waiting for budget (for metrics)

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (after a 429)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        # The lock makes waiters queue in order, so a burst drains first come, first served.
        async with self._lock:
            while True:
                now = time.monotonic()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                wait = self._paused_until - now
                if len(self._sent) >= self.limit:
                    wait = max(wait, self._sent[0] + self.window - now)
                if wait <= 0:
                    self._sent.append(now)
                    return
                self.waited += wait
                await asyncio.sleep(wait)


class RateBudget:
    """Limiters by key owner. ``scope`` is ``all`` (every request counts) or ``creates``."""

    def __init__(self, limit: int, scope: str) -> None:
        self.limit = limit
        self.scope = scope
        self._limiters: dict[str, KeyLimiter] = {}

    def limiter(self, owner: str) -> KeyLimiter:
        found = self._limiters.get(owner)
        if found is None:
            found = self._limiters[owner] = KeyLimiter(self.limit)
        return found

    async def acquire(self, owner: str, *, creates: bool) -> None:
        if creates or self.scope == "all":
            await self.limiter(owner).acquire()

    def pause(self, owner: str, seconds: float) -> None:
        self.limiter(owner).pause(seconds)
