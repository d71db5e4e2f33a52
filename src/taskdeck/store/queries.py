"""Named SQL blocks: each store's statements live in one file per dialect (``sql/sqlite.sql``,
``sql/postgres.sql``), as procrastinate keeps its ``queries.sql``, so the SQL reads as SQL and the
two dialects can be compared side by side.

A file is a sequence of blocks::

    -- name: get_task
    -- The task row by id.
    SELECT * FROM tasks WHERE id = ?;

``-- name:`` opens a block; the comment lines right after it are the block's doc; the lines after
those, up to the next ``-- name:``, are its SQL. Comment and blank lines inside the SQL are for the
reader and are dropped, and so is one trailing ``;``: the text handed to the driver is the statement
alone, and a fragment can be joined to another. Before the first block a file holds only comments.

Why some SQL is still assembled in Python: a statement whose *shape* depends on the call cannot be
one fixed text. Optional filters (``list_tasks``, ``count_tasks``), IN lists with one placeholder per
value (SQLite has no array parameter), the ORDER BY direction and the columns a patch sets vary per
call. Such a statement is kept whole in the file as a template with ``{slot}``s, and its optional
parts as named fragments (``and_processor``, ``limit``); the store fills the slots with
``str.format`` from fragments, placeholders and the fixed task column names only, never a value, so
every value still travels as a parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources

__all__ = ["Block", "Queries", "QueryFileError", "load", "parse"]

_NAME_LINE = re.compile(r"--\s*name:\s*(?P<name>\S*)\s*$")
_VALID_NAME = re.compile(r"[a-z_][a-z0-9_]*")


class QueryFileError(ValueError):
    """A query file that cannot be read as named blocks (the message names the file and the line)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One named block: its doc (the comment lines after the name) and its SQL text."""

    name: str
    doc: str
    sql: str


def parse(text: str, source: str = "<string>") -> dict[str, Block]:
    """The blocks of a query file by name, in file order; :class:`QueryFileError` on a malformed file."""
    blocks: dict[str, Block] = {}
    starts: dict[str, int] = {}  # name -> line number, to point at both copies of a duplicate
    name: str | None = None
    doc: list[str] = []
    sql: list[str] = []

    def close() -> None:
        if name is None:
            return
        body = "\n".join(sql).strip().removesuffix(";").rstrip()
        if not body:
            raise QueryFileError(f"{source}:{starts[name]}: block {name!r} has no SQL")
        blocks[name] = Block(name, "\n".join(doc), body)

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = _NAME_LINE.match(line)
        if header:
            close()
            name, doc, sql = header["name"], [], []
            if not _VALID_NAME.fullmatch(name):
                raise QueryFileError(f"{source}:{number}: bad query name {name!r} (want lower_snake_case)")
            if name in starts:
                raise QueryFileError(f"{source}:{number}: duplicate query name {name!r} (first at line {starts[name]})")
            starts[name] = number
        elif line.startswith("--"):
            # Comments before any SQL line are the block's doc; later ones annotate the SQL for its reader.
            if name is not None and not sql:
                doc.append(line.removeprefix("--").strip())
        elif not line:
            continue
        elif name is None:
            raise QueryFileError(f"{source}:{number}: SQL before the first '-- name:' line")
        else:
            sql.append(raw.rstrip())
    close()
    return blocks


class Queries(Mapping[str, str]):
    """Read-only mapping of query name -> SQL text; an unknown name is a ``KeyError`` naming the file."""

    __slots__ = ("_blocks", "source")

    def __init__(self, blocks: Mapping[str, Block], source: str) -> None:
        self._blocks = dict(blocks)
        self.source = source

    def block(self, name: str) -> Block:
        """The whole block (name, doc, SQL)."""
        try:
            return self._blocks[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in {self.source}") from None

    def __getitem__(self, name: str) -> str:
        return self.block(name).sql

    def __iter__(self) -> Iterator[str]:
        return iter(self._blocks)

    def __len__(self) -> int:
        return len(self._blocks)


def load(filename: str) -> Queries:
    """The queries of ``taskdeck/store/sql/<filename>``, read as package data (so they ship in the wheel)."""
    source = f"taskdeck/store/sql/{filename}"
    text = (resources.files("taskdeck.store") / "sql" / filename).read_text(encoding="utf-8")
    return Queries(parse(text, source), source)
