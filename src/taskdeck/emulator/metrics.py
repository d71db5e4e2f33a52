"""Introspection counters: what clients did to the emulator.

Tests and benchmarks read these (``GET /_emulator/stats``) to assert on request
economy and on "never two streams for one run". Keys are reported by a short
hash label, never in clear.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KeyMetrics", "Metrics", "StreamMetrics", "key_label"]


def key_label(api_key: str) -> str:
    """The label a key is reported under: 12 hex chars of its SHA-256."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:12]


@dataclass(slots=True)
class StreamMetrics:
    """Event-stream connections of one run or group."""

    open: int = 0
    total: int = 0
    max_open: int = 0
    requests: int = 0  # every request naming this run (streams, GETs), for request-economy checks

    def opened(self) -> None:
        self.open += 1
        self.total += 1
        self.max_open = max(self.max_open, self.open)

    def closed(self) -> None:
        self.open -= 1

    def to_json(self) -> dict[str, int]:
        return {
            "open_streams": self.open,
            "total_streams": self.total,
            "max_open_streams": self.max_open,
            "requests": self.requests,
        }


@dataclass(slots=True)
class KeyMetrics:
    """Requests made with one key, and the busiest minute seen."""

    requests: int = 0
    creates: int = 0  # run-creating requests that passed the rate limit (a group's add-runs counts once)
    runs: int = 0  # runs created (a group's add-runs counts one per input)
    by_route: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    _window: deque[float] = field(default_factory=deque)
    max_per_minute: int = 0
    # Every request's time (the most recent 200,000), overall and by route, for the busiest window of any length.
    times: deque[float] = field(default_factory=lambda: deque(maxlen=200_000))
    route_times: dict[str, deque[float]] = field(default_factory=dict)

    def record(self, route: str, now: float) -> None:
        self.requests += 1
        self.by_route[route] += 1
        self.times.append(now)
        self.route_times.setdefault(route, deque(maxlen=200_000)).append(now)
        self._window.append(now)
        while self._window and self._window[0] <= now - 60.0:
            self._window.popleft()
        self.max_per_minute = max(self.max_per_minute, len(self._window))

    def busiest(self, window: float, route: str | None = None) -> int:
        """Most requests (of ``route``, or all) in any ``window`` seconds (for tests that shrink the 60 s window)."""
        best, start = 0, 0
        times = list(self.times if route is None else self.route_times.get(route, ()))
        for end, t in enumerate(times):
            while times[start] <= t - window:
                start += 1
            best = max(best, end - start + 1)
        return best

    def to_json(self, window: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "creates": self.creates,
            "runs": self.runs,
            "max_requests_per_minute": self.max_per_minute,
            "by_route": dict(self.by_route),
            "by_status": {str(k): v for k, v in self.by_status.items()},
        }
        if window is not None:
            out["max_requests_per_window"] = self.busiest(window)
            out["max_requests_per_window_by_route"] = {r: self.busiest(window, r) for r in self.route_times}
        return out


@dataclass(slots=True)
class Metrics:
    """All counters of one emulator process."""

    runs: dict[str, StreamMetrics] = field(default_factory=dict)
    groups: dict[str, StreamMetrics] = field(default_factory=dict)
    keys: dict[str, KeyMetrics] = field(default_factory=dict)
    open_streams: int = 0
    max_open_streams: int = 0
    total_streams: int = 0
    started: float = field(default_factory=time.monotonic)

    def key(self, api_key: str) -> KeyMetrics:
        label = key_label(api_key)
        found = self.keys.get(label)
        if found is None:
            found = self.keys[label] = KeyMetrics()
        return found

    def stream(self, table: dict[str, StreamMetrics], ident: str) -> StreamMetrics:
        found = table.get(ident)
        if found is None:
            found = table[ident] = StreamMetrics()
        return found

    def stream_opened(self, sm: StreamMetrics) -> None:
        sm.opened()
        self.open_streams += 1
        self.total_streams += 1
        self.max_open_streams = max(self.max_open_streams, self.open_streams)

    def stream_closed(self, sm: StreamMetrics) -> None:
        sm.closed()
        self.open_streams -= 1

    def to_json(self, *, include_runs: bool = True, window: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "open_streams": self.open_streams,
            "max_open_streams": self.max_open_streams,
            "total_streams": self.total_streams,
            "max_open_streams_per_run": max((m.max_open for m in self.runs.values()), default=0),
            "keys": {label: m.to_json(window) for label, m in self.keys.items()},
        }
        if include_runs:
            out["runs"] = {rid: m.to_json() for rid, m in self.runs.items()}
            out["groups"] = {gid: m.to_json() for gid, m in self.groups.items()}
        return out
