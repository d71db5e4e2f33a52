"""Everything one emulator process knows: runs, groups, keys, counters, limits.

State lives in memory only; an emulator restart forgets every run, like a fresh
account. All access happens on the one event loop, so there is no locking.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskdeck.emulator.directives import Directives, parse_directives
from taskdeck.emulator.group import Group
from taskdeck.emulator.metrics import Metrics
from taskdeck.emulator.run import Run, plan_run
from taskdeck.emulator.settings import INVALID_KEY_PREFIX, NO_CREDIT_KEY_PREFIX, EmulatorSettings
from taskdeck.emulator.webhooks import WebhookSender
from taskdeck.processors import Processor
from taskdeck.taskspec import SpecWarning

__all__ = ["EmulatorState", "KeyVerdict"]

# Field order of TaskRunInput in the spec; the /input echo follows it.
INPUT_FIELDS = (
    "processor",
    "metadata",
    "source_policy",
    "advanced_settings",
    "task_spec",
    "input",
    "previous_interaction_id",
    "mcp_servers",
    "enable_events",
    "webhook",
)


@dataclass(frozen=True, slots=True)
class KeyVerdict:
    """What the emulator thinks of an API key: a status to answer with, or None when fine."""

    status: int | None
    message: str = ""


class EmulatorState:
    """The emulator's memory. One instance per app."""

    def __init__(self, settings: EmulatorSettings) -> None:
        settings.validate()
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.global_faults: Directives = parse_directives(settings.faults, allow_run_only=False)
        self.runs: dict[str, Run] = {}
        self.groups: dict[str, Group] = {}
        self.metrics = Metrics()
        self.webhooks = WebhookSender(
            settings.webhook_secret,
            settings.scaled(settings.webhook_first_retry),
            settings.scaled(settings.webhook_retry_span),
        )
        self._creates: dict[str, deque[float]] = {}

    # -- keys ------------------------------------------------------------------
    def check_key(self, key: str | None) -> KeyVerdict:
        if not key:
            return KeyVerdict(401, "Missing API key: send it in the x-api-key header.")
        if key.startswith(INVALID_KEY_PREFIX) or (self.settings.api_keys and key not in self.settings.api_keys):
            return KeyVerdict(401, "Invalid API key.")
        return KeyVerdict(None)

    def check_credit(self, key: str) -> KeyVerdict:
        if key.startswith(NO_CREDIT_KEY_PREFIX):
            return KeyVerdict(
                402, "Insufficient credit: add credit to your account (credit is reserved for in-flight runs)."
            )
        return KeyVerdict(None)

    def take_create_slot(self, key: str) -> float | None:
        """Count one run-creating POST; return seconds to wait when over the per-minute limit."""
        now = time.monotonic()
        window = self._creates.setdefault(key, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.settings.rate_limit_per_minute:
            return max(0.001, window[0] + 60.0 - now)
        window.append(now)
        self.metrics.key(key).creates += 1
        return None

    # -- ids -------------------------------------------------------------------
    def _next_hex(self) -> str:
        # Seeded for reproducible ids within a process; random bits keep two emulators apart.
        return f"{self.rng.getrandbits(64):016x}{secrets.randbits(64):016x}"

    # -- runs ------------------------------------------------------------------
    def lookup_run(self, key: str, run_id: str) -> Run | None:
        """The run, when it exists, belongs to ``key`` and has not vanished; else None ('not found').

        Another key's run and a vanished run are answered exactly like an unknown id, so a
        client cannot tell them apart. Vanished runs stay in ``runs`` for introspection.
        """
        run = self.runs.get(run_id)
        if run is None or run.key != key or run.vanished(run.elapsed()):
            return None
        return run

    def create_run(
        self,
        key: str,
        body: dict[str, Any],
        processor: Processor,
        warnings: list[SpecWarning],
        directives: Directives,
        taskgroup_id: str | None = None,
    ) -> Run:
        request = {name: body.get(name) for name in INPUT_FIELDS}
        run = plan_run(
            run_id=f"trun_{self._next_hex()}",
            key=key,
            processor=processor,
            request=request,
            warnings=warnings,
            directives=directives,
            seed=self.settings.seed,
            time_scale=self.settings.time_scale,
            taskgroup_id=taskgroup_id,
        )
        if self.settings.record_sent:
            run.sent = {}
        self.runs[run.run_id] = run
        # Counted here, the one place every run is born, so standalone and group runs both count.
        self.metrics.key(key).runs += 1
        self.webhooks.schedule(run)
        return run

    # -- groups ----------------------------------------------------------------
    def create_group(self, key: str, metadata: dict[str, Any] | None) -> Group:
        group = Group(
            taskgroup_id=f"tgrp_{self._next_hex()}",
            key=key,
            metadata=metadata,
            created_wall=datetime.now(UTC),
        )
        self.groups[group.taskgroup_id] = group
        return group

    def lookup_group(self, key: str, taskgroup_id: str) -> Group | None:
        group = self.groups.get(taskgroup_id)
        return group if group is not None and group.key == key else None
