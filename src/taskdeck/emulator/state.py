"""Everything one emulator process knows: runs, groups, keys, counters, limits.

State lives in memory; an emulator restart forgets every run, like a fresh
account, unless ``state_path`` names a state file: every create is then appended
there and reloaded at the next start (statefile.py), so runs and groups survive a
restart with their ids, plans and timelines. Counters, rate windows and directive
budgets (``*N``) start afresh. All access happens on the one event loop, so there
is no locking.
"""

from __future__ import annotations

import hashlib
import logging
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskdeck.emulator.directives import DirectiveError, Directives, parse_directives
from taskdeck.emulator.group import WALL_OFFSET_NS, Group
from taskdeck.emulator.metrics import Metrics
from taskdeck.emulator.run import Run, plan_run, rfc3339
from taskdeck.emulator.settings import INVALID_KEY_PREFIX, NO_CREDIT_KEY_PREFIX, EmulatorSettings
from taskdeck.emulator.statefile import StateFile, parse_time
from taskdeck.emulator.webhooks import WebhookSender
from taskdeck.processors import Processor, get_processor
from taskdeck.taskspec import SpecWarning

__all__ = ["EmulatorState", "KeyVerdict", "owner_of"]

log = logging.getLogger("taskdeck.emulator.state")


def owner_of(key: str) -> str:
    """Whom a run or group belongs to: the key's SHA-256, so neither memory dumps nor the state file hold keys."""
    return hashlib.sha256(key.encode()).hexdigest()


def _mono_of(moment: datetime) -> float:
    """Where a wall-clock instant of an earlier process lies on this process's monotonic clock."""
    return moment.timestamp() - WALL_OFFSET_NS / 1e9


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
        self.state_file = StateFile(settings.state_path) if settings.state_path else None
        if self.state_file is not None:
            self._restore(self.state_file.load())

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
        if run is None or run.owner != owner_of(key) or run.vanished(run.elapsed()):
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
            owner=owner_of(key),
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
        if self.state_file is not None:
            # Everything the plan is a function of, with this emulator's seed and scale: a restart with
            # other settings still rebuilds the run it answered for.
            self.state_file.append(
                {
                    "kind": "run",
                    "run_id": run.run_id,
                    "owner": run.owner,
                    "processor": processor.name,
                    "request": request,
                    "warnings": [w.to_wire() for w in warnings],
                    "directives": directives.source,
                    "seed": self.settings.seed,
                    "time_scale": self.settings.time_scale,
                    "taskgroup_id": taskgroup_id,
                    "created_at": rfc3339(run.created_wall),
                    "error_ref": run.error_ref,
                }
            )
        return run

    # -- groups ----------------------------------------------------------------
    def create_group(self, key: str, metadata: dict[str, Any] | None) -> Group:
        group = Group(
            taskgroup_id=f"tgrp_{self._next_hex()}",
            owner=owner_of(key),
            metadata=metadata,
            created_wall=datetime.now(UTC),
        )
        self.groups[group.taskgroup_id] = group
        if self.state_file is not None:
            self.state_file.append(
                {
                    "kind": "group",
                    "taskgroup_id": group.taskgroup_id,
                    "owner": group.owner,
                    "metadata": metadata,
                    "created_at": rfc3339(group.created_wall),
                }
            )
        return group

    def lookup_group(self, key: str, taskgroup_id: str) -> Group | None:
        group = self.groups.get(taskgroup_id)
        return group if group is not None and group.owner == owner_of(key) else None

    # -- the state file ----------------------------------------------------------
    def _restore(self, records: list[dict[str, Any]]) -> None:
        """Rebuild the runs and groups of an earlier process from its records (file order)."""
        for record in records:
            try:
                if record.get("kind") == "group":
                    self._restore_group(record)
                elif record.get("kind") == "run":
                    self._restore_run(record)
            except (KeyError, TypeError, ValueError, DirectiveError) as exc:
                # One bad record (an edited file, a processor since renamed) must not cost the others.
                log.warning("state file %s: skipping a record (%s)", self.settings.state_path, exc)
        if records:
            log.info(
                "state file %s: %d run(s), %d group(s)", self.settings.state_path, len(self.runs), len(self.groups)
            )

    def _restore_group(self, record: dict[str, Any]) -> None:
        created = parse_time(record["created_at"])
        group = Group(
            taskgroup_id=str(record["taskgroup_id"]),
            owner=str(record["owner"]),
            metadata=record.get("metadata"),
            created_wall=created,
            created_mono=_mono_of(created),
        )
        self.groups[group.taskgroup_id] = group

    def _restore_run(self, record: dict[str, Any]) -> None:
        processor = get_processor(record["processor"])
        if processor is None:
            raise ValueError(f"unknown processor {record['processor']!r}")
        created = parse_time(record["created_at"])
        run = plan_run(
            run_id=str(record["run_id"]),
            owner=str(record["owner"]),
            processor=processor,
            request=dict(record["request"]),
            warnings=[SpecWarning(w["type"], w["message"], w.get("detail")) for w in record["warnings"]],
            directives=parse_directives(record["directives"]),
            seed=int(record["seed"]),
            time_scale=float(record["time_scale"]),
            taskgroup_id=record.get("taskgroup_id"),
            created_wall=created,
            created_mono=_mono_of(created),
            error_ref=str(record["error_ref"]),
        )
        if self.settings.record_sent:
            run.sent = {}
        self.runs[run.run_id] = run
        if run.taskgroup_id is not None:
            group = self.groups.get(run.taskgroup_id)
            if group is not None:
                group.runs.append(run)

    def resume_webhooks(self) -> None:
        """Schedule the webhooks of restored runs that have not ended yet (needs the running loop).

        A run that ended while no emulator was running gets none: whether it was delivered is not known.
        """
        now = time.monotonic()
        for run in self.runs.values():
            if not run.is_done(run.elapsed(now)):
                self.webhooks.schedule(run)

    def close(self) -> None:
        if self.state_file is not None:
            self.state_file.close()
