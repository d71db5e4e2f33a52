"""The run engine: one supervisor per run, leases, reconnects, backoff, the rate budget, group commit."""

from __future__ import annotations

from taskdeck.engine.engine import Engine, EngineError
from taskdeck.engine.feed import Feed, TaskChange

__all__ = ["Engine", "EngineError", "Feed", "TaskChange"]
