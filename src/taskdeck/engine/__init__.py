"""The run engine: one supervisor per run, leases, reconnects, backoff, the rate budget, group commit."""

from __future__ import annotations

from taskdeck.engine.engine import Engine
from taskdeck.engine.feed import Feed, TaskChange
from taskdeck.engine.intake import IntakeError

__all__ = ["Engine", "Feed", "IntakeError", "TaskChange"]
