"""PostgreSQL-specific: the declared schema equals the migrations applied in order; concurrent starters;
renewals that never wait for the writer's row locks."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from pg import fresh_schema
from taskdeck.models import Task, TaskStatus, new_task_id
from taskdeck.store import InsertTask, PutKey
from taskdeck.store.base import ProcessInfo
from taskdeck.store.open import open_store
from taskdeck.store.rows import migration_files

SCHEMA_SQL = Path(__file__).parents[2] / "src" / "taskdeck" / "store" / "schema_pg.sql"


def schema_of(url: str) -> dict[str, Any]:
    """Columns, indexes and constraints of the current schema, without its name."""
    with psycopg.connect(url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]  # type: ignore[index]
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name != 'schema_migrations' ORDER BY table_name, column_name",
            (schema,),
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, replace(indexdef, %s, '') FROM pg_indexes WHERE schemaname = %s "
            "AND tablename != 'schema_migrations' ORDER BY indexname",
            (schema + ".", schema),
        ).fetchall()
        constraints = conn.execute(
            "SELECT c.conrelid::regclass::text, c.contype, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s ORDER BY 1, 2, 3",
            (schema,),
        ).fetchall()
    return {
        "columns": columns,
        "indexes": indexes,
        "constraints": [c for c in constraints if "schema_migrations" not in c[0]],
    }


def test_migrated_schema_equals_the_declared_schema() -> None:
    with fresh_schema() as migrated, fresh_schema() as declared:
        open_store(migrated).close()
        with psycopg.connect(declared, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL.read_bytes())
        assert schema_of(migrated) == schema_of(declared)
    assert [v for v, _ in migration_files("migrations_pg")] == list(range(1, len(migration_files("migrations_pg")) + 1))


def test_processes_starting_together_migrate_once() -> None:
    with fresh_schema() as url:
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def open_one() -> None:
            start.wait()
            try:
                open_store(url).close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        with psycopg.connect(url) as conn:
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [v for v, _ in migration_files("migrations_pg")]


def test_a_lease_renewal_never_waits_for_a_task_row_the_writer_holds_locked() -> None:
    """The writer locks task rows while it commits their events; renewals once queued behind those locks
    (at 15,000 runs, 4 to 6 s late) until leases expired under open streams. They touch no task row now."""
    with fresh_schema() as url:
        store = open_store(url)
        try:
            now = time.time()
            task = Task(
                id=new_task_id(),
                owner="o",
                processor="lite",
                request={"input": "x", "processor": "lite"},
                status=TaskStatus.RUNNING,
                created_at=now,
            )
            store.apply([PutKey("o", b"c", "x", now), InsertTask(task)])
            store.put_process(ProcessInfo("A", "worker", "h", 1, now, now, 0))
            assert [t.id for t in store.claim("A", now, 10, 10)] == [task.id]
            with psycopg.connect(url) as writer, writer.transaction():
                writer.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (task.id,))  # as lock_tasks does
                done: list[set[str]] = []
                renewal = threading.Thread(target=lambda: done.append(store.renew("A", [task.id], now + 60)))
                renewal.start()
                renewal.join(timeout=10)
                assert done == [{task.id}], "the renewal waited for the locked task row"
        finally:
            store.close()
