"""Persistence: the :class:`Store` interface and its SQLite implementation."""

from __future__ import annotations

from taskdeck.store.base import AppendEvent, InsertTask, PatchTask, PutKey, Store, Write
from taskdeck.store.sqlite import SqliteStore

__all__ = ["AppendEvent", "InsertTask", "PatchTask", "PutKey", "SqliteStore", "Store", "Write"]
