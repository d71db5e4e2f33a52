"""The Parallel processors: names, latency ranges, prices and defaults.

One table, used by the emulator (to draw run durations), the engine (to price
runs) and the UI (to show latency and cost before a run is submitted). Figures
come from the contract §7 (choose-a-processor and pricing pages).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PROCESSORS", "Processor", "get_processor", "processor_names"]


@dataclass(frozen=True, slots=True)
class Processor:
    """One processor name and what is documented about it."""

    name: str
    tier: str
    fast: bool
    min_seconds: float
    max_seconds: float
    usd_per_1000_runs: float
    max_fields: int
    events_by_default: bool

    @property
    def usd_per_run(self) -> float:
        """Price of one run in US dollars (price is per run, not per field)."""
        return self.usd_per_1000_runs / 1000.0

    @property
    def latency_label(self) -> str:
        """Human label such as ``"2 min–10 min"``."""
        return f"{_fmt_seconds(self.min_seconds)}–{_fmt_seconds(self.max_seconds)}"


def _fmt_seconds(seconds: float) -> str:
    if seconds < 60 or (seconds < 3600 and seconds % 60):
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"


_M = 60.0
_H = 3600.0

# tier: (regular range, fast range, usd per 1000 runs, ~max fields)
_TIERS: dict[str, tuple[tuple[float, float], tuple[float, float], float, int]] = {
    "lite": ((10, 60), (10, 20), 5, 2),
    "base": ((15, 100), (15, 50), 10, 5),
    "core": ((60, 5 * _M), (15, 100), 25, 10),
    "core2x": ((60, 10 * _M), (15, 3 * _M), 50, 10),
    "pro": ((2 * _M, 10 * _M), (30, 5 * _M), 100, 20),
    "ultra": ((5 * _M, 25 * _M), (1 * _M, 10 * _M), 300, 20),
    "ultra2x": ((5 * _M, 50 * _M), (1 * _M, 20 * _M), 600, 25),
    "ultra4x": ((5 * _M, 90 * _M), (1 * _M, 40 * _M), 1200, 25),
    "ultra8x": ((5 * _M, 2 * _H), (1 * _M, 1 * _H), 2400, 25),
}

# Events are on by default from `pro` up. The docs do not say whether this covers
# `pro-fast` and friends; we decide it does, since the tier is what matters.
_EVENTS_BY_DEFAULT = {"pro", "ultra", "ultra2x", "ultra4x", "ultra8x"}


def _build() -> dict[str, Processor]:
    table: dict[str, Processor] = {}
    for tier, (regular, fast, price, fields) in _TIERS.items():
        for is_fast in (False, True):
            lo, hi = fast if is_fast else regular
            name = f"{tier}-fast" if is_fast else tier
            table[name] = Processor(
                name=name,
                tier=tier,
                fast=is_fast,
                min_seconds=float(lo),
                max_seconds=float(hi),
                usd_per_1000_runs=float(price),
                max_fields=fields,
                events_by_default=tier in _EVENTS_BY_DEFAULT,
            )
    return table


PROCESSORS: dict[str, Processor] = _build()


def get_processor(name: str) -> Processor | None:
    """The processor called ``name``, or None when Parallel has no such processor."""
    return PROCESSORS.get(name)


def processor_names() -> list[str]:
    """All 18 processor names, cheapest first."""
    return list(PROCESSORS)
