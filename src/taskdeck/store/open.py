"""Opening the store a URL names: the one place that chooses between SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from taskdeck.store.base import Store

__all__ = ["is_postgres", "open_store", "sqlite_path"]


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str) -> Path | None:
    """The SQLite file ``url`` names (a plain path or ``sqlite:///path``), or None for another database."""
    if is_postgres(url):
        return None
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite://"))
    if "://" in url:
        raise ValueError(
            f"unknown database URL scheme in {url.split('://')[0]!r}: use a file path, sqlite:///… or postgresql://…"
        )
    return Path(url)


def open_store(url: str) -> Store:
    """The store for ``url``: a file path or ``sqlite:///…`` (SQLite), or ``postgresql://…`` (PostgreSQL).

    Migrations are applied on open (under an advisory lock on PostgreSQL).
    """
    path = sqlite_path(url)
    if path is None:
        from taskdeck.store.postgres import PostgresStore  # psycopg is loaded only when used

        return PostgresStore(url)
    from taskdeck.store.sqlite import SqliteStore

    return SqliteStore(path)
