"""The named SQL blocks (store/queries.py and store/sql/*.sql): parsing, errors, and each store's use of its file."""

from __future__ import annotations

import inspect
import re
import string
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from taskdeck.store import postgres, sqlite
from taskdeck.store.queries import Block, Queries, QueryFileError, load, parse

ROOT = Path(__file__).parents[2]
STORES = {"sqlite.sql": sqlite, "postgres.sql": postgres}
USE = re.compile(r'\bQ\["([a-z0-9_]+)"\]')

SAMPLE = """\
-- A header comment: not part of any block.

-- name: get_task
-- The task row by id.
SELECT * FROM tasks WHERE id = ?;

-- name: claim
-- Lease some tasks.
-- Two lines of doc.
UPDATE tasks SET lease_owner = ?
  -- a note for the reader, not sent
  WHERE id IN ({marks})

  RETURNING *;

-- name: and_owner
AND owner = ?
"""


def test_parse_reads_names_docs_and_sql() -> None:
    blocks = parse(SAMPLE, "sample.sql")
    assert list(blocks) == ["get_task", "claim", "and_owner"]
    assert blocks["get_task"] == Block("get_task", "The task row by id.", "SELECT * FROM tasks WHERE id = ?")
    # Doc lines join with newlines; comment and blank lines inside the SQL are dropped, and the trailing ';'.
    assert blocks["claim"].doc == "Lease some tasks.\nTwo lines of doc."
    assert blocks["claim"].sql == "UPDATE tasks SET lease_owner = ?\n  WHERE id IN ({marks})\n  RETURNING *"
    assert blocks["and_owner"] == Block("and_owner", "", "AND owner = ?")  # a fragment: no ';', no doc


def test_queries_is_a_read_only_mapping_with_a_clear_missing_name() -> None:
    queries = Queries(parse(SAMPLE), "sample.sql")
    assert queries["get_task"] == "SELECT * FROM tasks WHERE id = ?"
    assert queries.block("claim").doc.startswith("Lease")
    assert len(queries) == 3 and "claim" in queries and "nope" not in queries
    with pytest.raises(KeyError, match=r"no query named 'nope' in sample\.sql"):
        queries["nope"]
    with pytest.raises(TypeError):
        queries["get_task"] = "DROP TABLE tasks"  # type: ignore[index]


def test_a_store_asking_for_a_missing_name_fails_clearly() -> None:
    with pytest.raises(KeyError, match=r"no query named 'get_taks' in taskdeck/store/sql/sqlite\.sql"):
        sqlite.Q["get_taks"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a\nSELECT 1;\n\n-- name: a\nSELECT 2;\n", r"<t>:4: duplicate query name 'a' \(first at line 1\)"),
        ("-- name: a\n-- only a doc\n\n-- name: b\nSELECT 1;\n", r"<t>:1: block 'a' has no SQL"),
        ("-- name: a\nSELECT 1;\n-- name: last\n", r"<t>:3: block 'last' has no SQL"),
        ("-- name: a\n  ;  \n", r"<t>:1: block 'a' has no SQL"),
        ("SELECT 1;\n-- name: a\nSELECT 2;\n", r"<t>:1: SQL before the first '-- name:' line"),
        ("-- name: Get-Task\nSELECT 1;\n", r"<t>:1: bad query name 'Get-Task'"),
        ("-- name:\nSELECT 1;\n", r"<t>:1: bad query name ''"),
    ],
)
def test_malformed_files_are_rejected(text: str, message: str) -> None:
    with pytest.raises(QueryFileError, match=message):
        parse(text, "<t>")


def _names_used(module: ModuleType) -> set[str]:
    return set(USE.findall(inspect.getsource(module)))


@pytest.mark.parametrize("filename", sorted(STORES))
def test_every_block_is_used_by_its_store_and_every_name_used_exists(filename: str) -> None:
    module = STORES[filename]
    source = inspect.getsource(module)
    # Only literal names, so that this grep sees every use.
    assert re.findall(r'\bQ\[(?!")', source) == []
    queries = load(filename)
    assert set(queries) - _names_used(module) == set(), "blocks no code uses"
    assert _names_used(module) - set(queries) == set(), "names the file lacks"


@pytest.mark.parametrize("filename", sorted(STORES))
def test_every_block_has_a_doc_and_formats_cleanly(filename: str) -> None:
    queries = load(filename)
    for name in queries:
        assert queries.block(name).doc, f"{name} has no doc"
        # A template's slots are plain names, and no stray brace breaks str.format.
        slots = {field for _, field, _, _ in string.Formatter().parse(queries[name]) if field is not None}
        assert all(s.isidentifier() for s in slots), (name, slots)
        queries[name].format(**dict.fromkeys(slots, ""))


def test_each_file_uses_its_own_dialects_placeholders() -> None:
    # A cheap check for a statement copied from one file into the other without translation.
    for name, sql in load("postgres.sql").items():
        assert "?" not in sql, f"postgres.sql {name}: '?' placeholder"
    for name, sql in load("sqlite.sql").items():
        assert "%s" not in sql and "%b" not in sql, f"sqlite.sql {name}: psycopg placeholder"


def test_the_query_files_ship_as_package_data() -> None:
    # setuptools resolves package-data patterns as globs under the package folder: so does this.
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["taskdeck"]
    package = ROOT / "src" / "taskdeck"
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    files = sorted((package / "store" / "sql").glob("*.sql"))
    assert [f.name for f in files] == ["postgres.sql", "sqlite.sql"]
    assert set(files) <= shipped
