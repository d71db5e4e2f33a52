"""Emulator settings: one frozen table, filled from ``TASKDECK_EMULATOR_*`` and CLI flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from taskdeck.config import describe_fields, load_env
from taskdeck.emulator.directives import parse_directives

__all__ = ["ENV_PREFIX", "INVALID_KEY_PREFIX", "NO_CREDIT_KEY_PREFIX", "EmulatorSettings"]

ENV_PREFIX = "TASKDECK_EMULATOR_"
# Magic keys (documented in docs/emulator.md): any key starting with these prefixes
# is refused, so clients can exercise 401 and 402 handling without configuration.
INVALID_KEY_PREFIX = "emu-invalid"
NO_CREDIT_KEY_PREFIX = "emu-nocredit"


@dataclass(frozen=True, slots=True)
class EmulatorSettings:
    """Everything that shapes the emulator. Durations are seconds before ``time_scale``."""

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to bind."})
    port: int = field(default=8900, metadata={"help": "Port to bind (0 picks a free one)."})
    time_scale: float = field(
        default=1.0, metadata={"help": "Multiplies every duration; 0.01 turns a 10-minute run into 6 s."}
    )
    stream_lifetime: float = field(
        default=570.0, metadata={"help": "Seconds an event stream stays open before the server closes it (scaled)."}
    )
    group_stream_lifetime: float = field(
        default=3600.0, metadata={"help": "Seconds a task-group event stream stays open (scaled)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for durations, content and fault probabilities."})
    api_keys: tuple[str, ...] = field(
        default=(), metadata={"help": "Accepted keys, comma-separated; empty accepts any non-magic key."}
    )
    webhook_secret: str = field(
        default="whsec_taskdeck_emulator", metadata={"help": "Account secret that signs webhooks."}
    )
    rate_limit_per_minute: int = field(
        default=2000, metadata={"help": "Run-creating POSTs per key per minute before 429."}
    )
    faults: str = field(default="", metadata={"help": "Global fault directives, e.g. 'drop=400%0.1;error=503%0.05'."})
    record_sent: bool = field(
        default=False,
        metadata={"help": "Keep every distinct event sent per run, for /_emulator/runs/{id} (tests)."},
    )
    webhook_first_retry: float = field(
        default=5.0, metadata={"help": "Seconds before the first webhook retry; doubles each time (scaled)."}
    )
    webhook_retry_span: float = field(
        default=48 * 3600.0, metadata={"help": "Seconds over which webhook retries are attempted (scaled)."}
    )
    state_path: str = field(
        default="",
        metadata={
            "help": "File that keeps runs and groups across restarts (appended on every create, loaded at "
            "start); empty keeps them in memory only."
        },
    )

    def scaled(self, seconds: float) -> float:
        """``seconds`` of emulated time in real seconds."""
        return seconds * self.time_scale

    def with_overrides(self, **changes: Any) -> EmulatorSettings:
        """A copy with the non-None ``changes`` applied (CLI flags override env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        """Raise ValueError naming the setting when a value makes no sense."""
        if self.time_scale <= 0:
            raise ValueError("time_scale must be greater than 0")
        if self.stream_lifetime <= 0:
            raise ValueError("stream_lifetime must be greater than 0")
        if self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be from 0 to 65535")
        parse_directives(self.faults, allow_run_only=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EmulatorSettings:
        """Settings from ``TASKDECK_EMULATOR_<NAME>`` variables, defaults elsewhere."""
        return cls(**load_env(cls, ENV_PREFIX, environ))

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(env var, default, help) rows for the README's configuration table."""
        return describe_fields(cls, ENV_PREFIX)
