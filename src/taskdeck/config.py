"""Taskdeck's settings: one frozen table, filled from ``TASKDECK_*`` variables and CLI flags.

Secrets (fields marked ``secret``) never leave this module in clear: ``redacted()``
is what pages, logs and ``/-/settings.json`` show.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Self

__all__ = ["ENV_PREFIX", "Settings", "default_db_path", "describe_fields", "load_env"]

ENV_PREFIX = "TASKDECK_"
REDACTED = "***"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/taskdeck/taskdeck.db`` (``~/.local/share/...`` when unset)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "taskdeck" / "taskdeck.db"


def _coerce(env_name: str, default: Any, raw: str) -> Any:
    try:
        if isinstance(default, bool):
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off", ""):
                return False
            raise ValueError
        if isinstance(default, tuple):
            return tuple(k.strip() for k in raw.split(",") if k.strip())
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw).expanduser()
    except ValueError:
        raise ValueError(f"{env_name}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def load_env(cls: type[Any], prefix: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Values for ``cls``'s fields from ``<prefix><FIELD>`` variables that are set."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = prefix + f.name.upper()
        raw = env.get(name)
        if raw is not None:
            values[f.name] = _coerce(name, _default(f), raw)
    return values


def _default(f: Field[Any]) -> Any:
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


def describe_fields(cls: type[Any], prefix: str) -> list[tuple[str, str, str]]:
    """(variable, default, help) rows for documentation tables."""
    rows = []
    for f in fields(cls):
        default = _default(f)
        text = ",".join(default) if isinstance(default, tuple) else str(default)
        if "doc_default" in f.metadata:
            text = str(f.metadata["doc_default"])
        elif f.metadata.get("secret"):
            text = "(generated)" if default is None else REDACTED
        elif default is None:
            text = ""
        rows.append((prefix + f.name.upper(), text, str(f.metadata.get("help", ""))))
    return rows


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything that shapes a Taskdeck process. Durations are in seconds."""

    host: str = field(default="127.0.0.1", metadata={"help": "Interface the web app binds."})
    port: int = field(default=8000, metadata={"help": "Port the web app binds."})
    db_path: Path = field(
        default_factory=default_db_path,
        metadata={"help": "SQLite database file.", "doc_default": "$XDG_DATA_HOME/taskdeck/taskdeck.db"},
    )
    database_url: str = field(
        default="",
        metadata={
            "secret": True,  # a PostgreSQL URL may carry a password
            "doc_default": "(db_path)",
            "help": "The database: a file path or sqlite:///path (SQLite), or postgresql://user@host/db, which "
            "many processes on many machines can share; default: db_path.",
        },
    )
    secret_key: str | None = field(
        default=None,
        metadata={
            "secret": True,
            "help": "Server secret that encrypts stored API keys; default: generated once into a 0600 file "
            "beside the database.",
        },
    )
    parallel_base_url: str = field(
        default="",
        metadata={"help": "Parallel API base URL; default: $PARALLEL_BASE_URL, else https://api.parallel.ai."},
    )
    http_transport: str = field(
        default="aiohttp", metadata={"help": "SDK transport: aiohttp (measured faster with many streams) or httpx."}
    )
    rate_limit_per_minute: int = field(default=2000, metadata={"help": "Upstream requests per API key per minute."})
    rate_window: float = field(
        default=60.0, metadata={"help": "Seconds of the rate budget's window (Parallel's is a minute)."}
    )
    rate_limit_scope: str = field(
        default="all", metadata={"help": "What the rate budget counts: 'all' requests or only run 'creates'."}
    )
    lease_ttl: float = field(default=30.0, metadata={"help": "Seconds a run's lease lasts without a heartbeat."})
    heartbeat_interval: float = field(default=10.0, metadata={"help": "Seconds between lease heartbeats."})
    max_batches: int = field(default=20, metadata={"help": "Most batches one engine runs at once."})
    local_takeover: bool = field(
        default=True,
        metadata={
            "help": "Take over at once the runs of a process on this machine whose pid is gone, "
            "instead of waiting for its leases to expire."
        },
    )
    stream_read_timeout: float = field(
        default=180.0, metadata={"help": "Reopen a run's event stream after this many silent seconds."}
    )
    status_poll_after: float = field(
        default=300.0, metadata={"help": "GET a run when no stream reported its status for this long."}
    )
    stream_failures_before_polling: int = field(
        default=5, metadata={"help": "Consecutive stream failures before falling back to polling."}
    )
    poll_interval: float = field(default=15.0, metadata={"help": "Seconds between polls in polling mode."})
    result_wait: float = field(default=30.0, metadata={"help": "Seconds of /result long-poll in polling mode."})
    backoff_base: float = field(default=0.5, metadata={"help": "First retry delay; doubles per failure, with jitter."})
    backoff_max: float = field(default=60.0, metadata={"help": "Longest retry delay."})
    max_followers: int = field(
        default=100_000, metadata={"help": "Most runs this process follows at once; others wait for another process."}
    )
    feed_poll_interval: float = field(
        default=0.025,
        metadata={
            "help": "SQLite: seconds between looks at what other processes sharing the file stored (the live feed "
            "across processes; PostgreSQL uses LISTEN/NOTIFY instead)."
        },
    )
    write_batch: int = field(default=5000, metadata={"help": "Most writes committed in one transaction."})
    create_timeout: float = field(
        default=60.0, metadata={"help": "Seconds a run-creating request may take before Taskdeck stops waiting."}
    )
    create_settle: float = field(
        default=300.0,
        metadata={
            "help": "Seconds after sending a create that got no answer (or was cut by a crash) before Taskdeck "
            "concludes it created nothing and sends it again; until then it looks for the run in the task group."
        },
    )
    daily_budget_usd: float = field(
        default=0.0,
        metadata={"help": "Most USD of runs one API key may start per UTC day (402 beyond it); 0 = no limit."},
    )
    max_body_bytes: int = field(default=1_048_576, metadata={"help": "Largest request body accepted (413 beyond it)."})
    max_upload_bytes: int = field(
        default=33_554_432,
        metadata={"help": "Largest body of a batch check or create (a table as text or base64; 413 beyond it)."},
    )
    max_batch_rows: int = field(default=50_000, metadata={"help": "Most rows one batch may have (422 beyond it)."})
    allowed_hosts: tuple[str, ...] = field(
        default=(),
        metadata={
            "help": "Host names the web app answers (400 otherwise, against DNS rebinding); default: the bound "
            "host, plus localhost and 127.0.0.1 when bound to loopback. '*' allows any.",
            "doc_default": "(the bound host)",
        },
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(),
        metadata={"help": "Client addresses whose X-Forwarded-Proto and X-Forwarded-Host are believed."},
    )
    https: bool = field(
        default=False,
        metadata={"help": "Served over https (behind a TLS proxy): session cookies get Secure and the __Host- prefix."},
    )
    session_ttl: float = field(
        default=14 * 24 * 3600.0, metadata={"help": "Seconds a browser session lasts after sign-in."}
    )

    @property
    def store_url(self) -> str:
        """The database actually used: ``database_url``, else the SQLite file ``db_path``."""
        return self.database_url or str(self.db_path)

    @property
    def base_url(self) -> str:
        """The upstream base URL actually used."""
        return self.parallel_base_url or os.environ.get("PARALLEL_BASE_URL") or "https://api.parallel.ai"

    def with_overrides(self, **changes: Any) -> Self:
        """A copy with the non-None ``changes`` applied (CLI flags override env)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def validate(self) -> None:
        """Raise ValueError naming the setting when a value makes no sense."""
        if self.http_transport not in ("httpx", "aiohttp"):
            raise ValueError("http_transport must be 'httpx' or 'aiohttp'")
        if self.rate_limit_scope not in ("all", "creates"):
            raise ValueError("rate_limit_scope must be 'all' or 'creates'")
        if self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be at least 1")
        if self.heartbeat_interval >= self.lease_ttl:
            raise ValueError("heartbeat_interval must be shorter than lease_ttl")
        for name in (
            "stream_read_timeout",
            "status_poll_after",
            "poll_interval",
            "backoff_base",
            "backoff_max",
            "create_timeout",
            "create_settle",
            "session_ttl",
            "rate_window",
            "feed_poll_interval",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.create_settle < self.create_timeout:
            raise ValueError("create_settle must be at least create_timeout (a create may land until it times out)")
        if self.daily_budget_usd < 0:
            raise ValueError("daily_budget_usd must be 0 (no limit) or more")
        from taskdeck.store.open import is_postgres  # at use: settings load before the store exists

        if is_postgres(self.database_url) and not self.secret_key:
            raise ValueError(
                "TASKDECK_SECRET_KEY is required with a PostgreSQL database: every process, on every machine, must "
                "use the same secret to read the stored keys (generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(48))')"
            )
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")
        if not self.allowed_hosts and self.host in WILDCARD_HOSTS:
            raise ValueError(
                f"bound to {self.host}: set TASKDECK_ALLOWED_HOSTS to the names people use to reach Taskdeck "
                "(or '*' to accept any Host header)"
            )

    @property
    def hosts(self) -> frozenset[str]:
        """The Host names the web app answers (lower case, no port); contains '*' when any is allowed."""
        if self.allowed_hosts:
            return frozenset(h.lower().strip("[]") for h in self.allowed_hosts)
        names = {self.host.lower().strip("[]")}
        if self.host in LOOPBACK_HOSTS:
            names |= LOOPBACK_HOSTS
        return frozenset(names)

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON-ready values, secrets replaced by ``***``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret"):
                value = REDACTED if value else None
            out[f.name] = str(value) if isinstance(value, Path) else value
        out["base_url"] = self.base_url
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls(**load_env(cls, ENV_PREFIX, environ))

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        return describe_fields(cls, ENV_PREFIX)
