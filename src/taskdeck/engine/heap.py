"""The engine process's garbage-collector settings.

An engine allocates a few short-lived objects per upstream event (the event, its task patch, the
unit around them) while it holds a large, long-lived heap (a follower, a task and its de-dup keys
per run: thousands of runs). CPython's default thresholds (700, 10, 10) then run a young
collection every 700 allocations and a full one, which walks that whole long-lived heap, every
hundred young ones: measured on ``bench engine-ingest``, the collector took about half of the
engine's own time per event (the writer's throughput over a store that takes no time went from
~45,000 to ~78,000 events/s with the thresholds below, and to ~105,000 with the collector off).

Reference cycles are still collected, only less often; memory stays bounded because full
collections still run (every ``FULL_EVERY`` middle ones).
"""

from __future__ import annotations

import gc
import logging

__all__ = ["THRESHOLDS", "tune"]

log = logging.getLogger("taskdeck.engine")

# (young, middle, full): a young collection every 50,000 net allocations, a middle one every 20
# young, a full one every 20 middle ones — and CPython skips a full collection anyway until the
# objects waiting for it are a quarter of the long-lived heap, which keeps its cost proportional.
THRESHOLDS = (50_000, 20, 20)


def tune() -> None:
    """Apply :data:`THRESHOLDS` and move what exists now (imports, settings) out of the collector's sight.

    Idempotent; called once the process has loaded what it keeps for its whole life.
    """
    if gc.get_threshold() != THRESHOLDS:
        gc.set_threshold(*THRESHOLDS)
        log.debug("garbage collector thresholds set to %s", THRESHOLDS)
    # Objects alive at start-up live as long as the process: freezing them means a full
    # collection never walks them again.
    gc.freeze()
