"""One emulated task run: its plan (what happens when) and its wire objects.

A run is planned in full when it is created: when it starts running, when it
ends, how it ends, and every progress message and stats snapshot with its offset
from creation. Its state at any moment is then a pure function of the clock, so
the emulator needs no timer per run and every connection sees the same history.
The same holds for the ``vanish`` directive: the instant a run is forgotten is
planned too, and every request compares the clock with it.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from taskdeck.emulator import content
from taskdeck.emulator.directives import Directives
from taskdeck.processors import Processor
from taskdeck.taskspec import SpecWarning, compact_json, normalize_schema

__all__ = ["Planned", "PlannedEvent", "PlannedStats", "Run", "plan_run", "rfc3339"]

_KINDS = ("plan", "search", "tool_call", "search", "result")


def rfc3339(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and ``Z``, as Parallel writes timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """An event the run emits ``offset`` seconds (real, already scaled) after creation."""

    offset: float
    type: str
    data: str  # compact JSON, exactly as sent on the wire


@dataclass(frozen=True, slots=True)
class PlannedStats:
    """A stats snapshot, kept as numbers and serialised when sent.

    Snapshots carry a growing list of sample URLs; holding 80 serialised copies per
    run cost ~60 KB a run, which mattered at 10,000 runs.
    """

    offset: float
    considered: int
    read: int
    sample: tuple[str, ...]
    meter: float
    type: str = "task_run.progress_stats"

    @property
    def data(self) -> str:
        return compact_json(
            {
                "type": self.type,
                "source_stats": {
                    "num_sources_considered": self.considered,
                    "num_sources_read": self.read,
                    "sources_read_sample": list(self.sample),
                },
                "progress_meter": self.meter,
            }
        )


Planned = PlannedEvent | PlannedStats


@dataclass(slots=True)
class Run:
    """An emulated run. Mutable only in its counters; its plan never changes."""

    run_id: str
    owner: str  # SHA-256 of the creating key: the state file never holds a key
    processor: Processor
    request: dict[str, Any]
    created_wall: datetime
    created_mono: float
    running_at: float
    ends_at: float
    fails: bool
    events_enabled: bool
    messages: list[PlannedEvent]
    stats: list[PlannedStats]
    warnings: list[SpecWarning]
    directives: Directives
    seed_parts: tuple[object, ...]
    taskgroup_id: str | None = None
    # Offset (real seconds, already scaled) at which the run is forgotten (``vanish``), if ever.
    vanishes_at: float | None = None
    # ``nooutput``: state events never carry the output, so a client has to ask /result for it.
    no_output: bool = False
    sent: dict[tuple[str, str], None] | None = None  # distinct (type, data) sent, when recording
    error_ref: str = field(default_factory=lambda: str(uuid.uuid4()))
    _output: dict[str, Any] | None = None

    # -- clock ---------------------------------------------------------------
    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.created_mono

    def status_at(self, elapsed: float) -> str:
        if elapsed >= self.ends_at:
            return "failed" if self.fails else "completed"
        return "running" if elapsed >= self.running_at else "queued"

    def is_done(self, elapsed: float) -> bool:
        return elapsed >= self.ends_at

    def vanished(self, elapsed: float) -> bool:
        """True once the run is forgotten (``vanish``): from then on it is 'not found' everywhere."""
        return self.vanishes_at is not None and elapsed >= self.vanishes_at

    @property
    def vanishes_mono(self) -> float:
        """The monotonic instant the run is forgotten (infinity when it never is)."""
        return math.inf if self.vanishes_at is None else self.created_mono + self.vanishes_at

    def _modified(self, elapsed: float) -> str:
        if elapsed >= self.ends_at:
            offset = self.ends_at
        elif elapsed >= self.running_at:
            offset = self.running_at
        else:
            offset = 0.0
        return rfc3339(self.created_wall + timedelta(seconds=offset))

    # -- wire objects --------------------------------------------------------
    def wire(self, elapsed: float) -> dict[str, Any]:
        """The TaskRun object, fields in Parallel's order."""
        status = self.status_at(elapsed)
        error = None
        if status == "failed":
            error = {
                "ref_id": self.error_ref,
                "message": "Task execution failed: the emulator was asked to fail this run.",
                "detail": {"reason": "emulator_fail_directive"},
            }
        return {
            "run_id": self.run_id,
            "interaction_id": self.run_id,
            "status": status,
            "is_active": status in ("queued", "running", "cancelling"),
            "warnings": [w.to_wire() for w in self.warnings] or None,
            "error": error,
            "processor": self.processor.name,
            "metadata": self.request.get("metadata"),
            "taskgroup_id": self.taskgroup_id,
            "created_at": rfc3339(self.created_wall),
            "modified_at": self._modified(elapsed),
        }

    def output(self) -> dict[str, Any]:
        """The final output (text or json), computed once on first use."""
        if self._output is None:
            self._output = self._make_output()
        return self._output

    def _make_output(self) -> dict[str, Any]:
        rng = content.make_rng(*self.seed_parts, "output")
        xss = self.directives.flag("xss")
        spec = self.request.get("task_spec") or {}
        # No task spec means an auto schema (the spec's reading; contract §13.10).
        schema: dict[str, Any] = (normalize_schema(spec.get("output_schema")) if spec else None) or {"type": "auto"}
        value = self.request.get("input")
        mcp = self._mcp_tool_calls(rng)
        if schema["type"] == "text":
            text, basis = content.text_output(schema.get("description"), value, rng, xss=xss)
            return {"basis": basis, "type": "text", "mcp_tool_calls": mcp, "beta_fields": None, "content": text}
        if schema["type"] == "json":
            body, basis = content.json_output(schema["json_schema"], value, rng, xss=xss)
            out_schema = None
        else:
            body, basis, out_schema = content.auto_output(value, rng, xss=xss)
        return {
            "basis": basis,
            "type": "json",
            "mcp_tool_calls": mcp,
            "beta_fields": None,
            "content": body,
            "output_schema": out_schema,
        }

    def _mcp_tool_calls(self, rng: Any) -> list[dict[str, Any]] | None:
        servers = self.request.get("mcp_servers") or []
        if not servers:
            return None
        limit = 1 if self.processor.tier in ("lite", "core") else len(servers)
        calls = []
        for server in servers[:limit]:
            tool = (server.get("allowed_tools") or ["search"])[0]
            calls.append(
                {
                    "tool_call_id": f"call_{rng.getrandbits(64):016x}",
                    "server_name": server["name"],
                    "tool_name": tool,
                    "arguments": compact_json({"query": content.input_subject(self.request.get("input"))}),
                    "content": f"{tool} returned {rng.randint(1, 20)} results",
                    "error": None,
                }
            )
        return calls

    def state_event(
        self, elapsed: float, *, event_id: str | None = None, with_input: bool = False, with_output: bool = True
    ) -> dict[str, Any]:
        """A ``task_run.state`` event; output only when completed (and wanted, and not ``nooutput``)."""
        run = self.wire(elapsed)
        out = self.output() if with_output and not self.no_output and run["status"] == "completed" else None
        return {
            "type": "task_run.state",
            "event_id": event_id,
            "input": self.request if with_input else None,
            "run": run,
            "output": out,
        }

    def result(self, elapsed: float) -> dict[str, Any]:
        return {"run": self.wire(elapsed), "output": self.output()}

    def timeline(self) -> list[dict[str, Any]]:
        """Every event this run emits over its life, for tests (introspection)."""
        events: list[dict[str, Any]] = []
        planned: list[Planned] = [*self.messages, *self.stats]
        for ev in sorted(planned, key=lambda e: e.offset):
            events.append({"offset": ev.offset, "type": ev.type, "data": ev.data})
        return events


def plan_run(
    *,
    run_id: str,
    owner: str,
    processor: Processor,
    request: dict[str, Any],
    warnings: list[SpecWarning],
    directives: Directives,
    seed: int,
    time_scale: float,
    taskgroup_id: str | None = None,
    created_wall: datetime | None = None,
    created_mono: float | None = None,
    error_ref: str | None = None,
) -> Run:
    """Plan a run's whole life from the seed, its request and its directives.

    A new run is created now; a run reloaded from the state file passes its original
    ``created_wall`` (and where that instant lies on this process's monotonic clock), so
    the same inputs give the same plan: same timestamps, same messages, same output.
    """
    seed_parts = (seed, processor.name, compact_json(request.get("input")), compact_json(request.get("task_spec")))
    rng = content.make_rng(*seed_parts, "plan")
    duration = directives.value("duration")
    if duration is None:
        # Log-uniform: most runs sit toward the short end of the documented range.
        lo, hi = processor.min_seconds, processor.max_seconds
        duration = lo * (hi / lo) ** rng.random()
    ends_at = duration * time_scale
    running_at = min(rng.uniform(0.5, 3.0) * time_scale, ends_at * 0.1)
    fails = directives.flag("fail") or _input_asks_to_fail(request.get("input"))
    vanish = directives.value("vanish")
    enable = request.get("enable_events")
    events_enabled = processor.events_by_default if enable is None else bool(enable)

    if created_wall is None:
        # Both clocks read together: a restart maps the wall instant back to a monotonic one, so
        # planning time in between would shift a restored run's timeline.
        created_wall, created_mono = datetime.now(UTC), time.monotonic()
    messages: list[PlannedEvent] = []
    stats: list[PlannedStats] = []
    if events_enabled:
        messages, stats = _plan_events(
            rng, request, created_wall, running_at, ends_at, duration, fails, directives.flag("xss")
        )
    run = Run(
        run_id=run_id,
        owner=owner,
        processor=processor,
        request=request,
        created_wall=created_wall,
        created_mono=time.monotonic() if created_mono is None else created_mono,
        running_at=running_at,
        ends_at=ends_at,
        fails=fails,
        events_enabled=events_enabled,
        messages=messages,
        stats=stats,
        warnings=warnings,
        directives=directives,
        seed_parts=seed_parts,
        taskgroup_id=taskgroup_id,
        vanishes_at=None if vanish is None else vanish * time_scale,
        no_output=directives.flag("nooutput"),
    )
    if error_ref is not None:
        run.error_ref = error_ref
    return run


FAIL_MARKER = "[emulator:fail]"


def _input_asks_to_fail(value: Any) -> bool:
    if isinstance(value, str):
        return FAIL_MARKER in value
    return isinstance(value, dict) and any(isinstance(v, str) and FAIL_MARKER in v for v in value.values())


def _plan_events(
    rng: Any,
    request: dict[str, Any],
    created: datetime,
    running_at: float,
    ends_at: float,
    duration: float,
    fails: bool,
    xss: bool,
) -> tuple[list[PlannedEvent], list[PlannedStats]]:
    subject = content.input_subject(request.get("input"))
    # About one message per 20 s of unscaled run time, from 5 up to 80.
    n = max(5, min(80, int(duration / 20)))
    stop = ends_at * (0.6 if fails else 0.97)
    span = max(stop - running_at, 1e-6)
    offsets = sorted(running_at + span * (i + rng.random() * 0.8) / n for i in range(n))
    messages: list[PlannedEvent] = []
    for i, offset in enumerate(offsets):
        if i == 0:
            kind, text = "exec_status", "Starting research"
        elif i == n - 1:
            kind, text = "exec_status", content.progress_message("exec_status", subject, rng)
        else:
            kind = _KINDS[(i - 1) % len(_KINDS)] if rng.random() < 0.8 else rng.choice(_KINDS)
            text = content.progress_message(kind, subject, rng, xss=xss and i == 1)
        stamp = rfc3339(created + timedelta(seconds=offset))
        event_type = f"task_run.progress_msg.{kind}"
        data = compact_json({"type": event_type, "message": text, "timestamp": stamp})
        messages.append(PlannedEvent(offset, event_type, data))

    stats: list[PlannedStats] = []
    considered = 0
    read = 0
    urls = tuple(content.source_urls(rng, 10))
    m = max(4, n)
    for j in range(m):
        offset = running_at + span * (j + 0.5) / m
        considered += rng.randint(3, 30)
        read = min(considered, read + rng.randint(1, 6))
        meter = round((60.0 if fails else 100.0) * (j + 1) / m, 1)
        stats.append(PlannedStats(offset, considered, read, urls[: min(10, j + 1)], meter))
    return messages, stats
