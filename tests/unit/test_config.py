"""Taskdeck settings: env, validation, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskdeck.config import Settings


def test_env_and_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PARALLEL_BASE_URL", raising=False)
    s = Settings.from_env(
        {"TASKDECK_DB_PATH": "/tmp/x.db", "TASKDECK_SECRET_KEY": "hunter2", "TASKDECK_LEASE_TTL": "9"}
    )
    assert s.db_path == Path("/tmp/x.db") and s.lease_ttl == 9.0
    shown = s.redacted()
    assert shown["secret_key"] == "***" and "hunter2" not in str(shown)
    assert shown["base_url"] == "https://api.parallel.ai"


def test_sdk_base_url_is_honoured_when_ours_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARALLEL_BASE_URL", "http://127.0.0.1:9")
    assert Settings().base_url == "http://127.0.0.1:9"
    assert Settings(parallel_base_url="http://other").base_url == "http://other"


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"http_transport": "curl"}, "http_transport"),
        ({"rate_limit_scope": "some"}, "rate_limit_scope"),
        ({"heartbeat_interval": 40.0}, "heartbeat_interval"),
        ({"backoff_base": 0.0}, "backoff_base"),
    ],
)
def test_validate(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Settings().with_overrides(**changes).validate()
