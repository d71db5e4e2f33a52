"""The SQLite store on a real file: schema, writes, de-duplication, leases."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from taskdeck.store import PutKey, SqliteStore
from taskdeck.store.rows import migration_files
from taskdeck.vault import KeyVault


def schema_of(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' AND name != 'schema_migrations' "
            "ORDER BY name"
        ).fetchall()
    return [(n, " ".join(s.split())) for n, s in rows]


def test_migrated_schema_equals_the_declared_schema(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "migrated.db").close()
    fresh = tmp_path / "fresh.db"
    schema_sql = (Path(__file__).parents[2] / "src" / "taskdeck" / "store" / "schema.sql").read_text()
    with sqlite3.connect(fresh) as conn:
        conn.executescript(schema_sql)
    assert schema_of(tmp_path / "migrated.db") == schema_of(fresh)
    assert [v for v, _ in migration_files()] == list(range(1, len(migration_files()) + 1))


def test_migrations_run_once_and_wal_is_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    assert store.migrate() == []
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_forgotten_key_leaves_no_ciphertext_in_the_file(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    store.apply([PutKey("o1", b"cipher", "x", 1.0)])
    assert store.forget_key("o1") is True
    raw = sqlite3.connect(tmp_path / "t.db").execute("SELECT ciphertext FROM api_keys WHERE owner='o1'").fetchone()
    assert raw[0] == b""  # the ciphertext itself is gone from the file's live rows
    store.close()


def test_vault_secret_file_is_private_and_stable(tmp_path: Path) -> None:
    db = tmp_path / "data" / "t.db"
    vault = KeyVault.open(None, db)
    secret_file = db.parent / "taskdeck.secret"
    assert stat.S_IMODE(os.stat(secret_file).st_mode) == 0o600
    token = vault.encrypt("pk-live-1234")
    assert b"pk-live" not in token
    again = KeyVault.open(None, db)
    assert again.decrypt(token) == "pk-live-1234"
    assert again.owner("pk-live-1234") == vault.owner("pk-live-1234") != vault.owner("other")
    assert "pk-live" not in vault.owner("pk-live-1234")
    assert KeyVault("different").owner("pk-live-1234") != vault.owner("pk-live-1234")


def test_database_files_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "fresh" / "data"
    store = SqliteStore(folder / "t.db")
    store.apply([PutKey("o1", b"cipher", "x", 1.0)])  # a write: the WAL and shared-memory files exist now
    for name in ("t.db", "t.db-wal", "t.db-shm"):
        assert stat.S_IMODE(os.stat(folder / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    store.close()
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    SqliteStore(old).close()
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o600  # an existing, too-open file is tightened
