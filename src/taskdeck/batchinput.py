"""Read a person's table (CSV, a JSON array of objects, or JSON Lines) one row at a time, for batch enrichment.

:func:`read_table` reads the source once from end to end: it computes the SHA-256 of the raw bytes (the
key of a resumable batch), finds the kind, encoding, dialect and columns, and checks every row. So a broken
row 9,000 is reported before a single paid task is created, the warnings are complete, and a JSON table's
columns (the union of its keys) are known. :meth:`Table.rows` then reads the source again, one row at a
time. Neither pass holds more than a chunk, one row and the column names: a path is opened again, a
seekable stream is rewound, and a stream that cannot seek is copied to a spooled temporary file during the
first pass. The second pass hashes the bytes as well, and fails if they changed in between.

Decisions:

- A CSV row with more cells than columns is an error naming the line, unless the extra cells are empty
  (a trailing delimiter, as spreadsheets write; then they are ignored with a warning). Extra cells almost
  always mean an unquoted delimiter inside a value ("Acme, Inc"), which has shifted every later cell of
  the row: kept or dropped, the row would send wrong inputs to a paid task. A short row is padded with "".
- Empty rows are skipped with a warning; empty rows at the very end of a file are skipped silently.
- The header row is always the first non-blank row. ``csv.Sniffer.has_header`` is only believed together
  with evidence (a first-row cell that looks like a value), since alone it is wrong on text columns.
- Nothing is normalised: cells keep their spaces and their Unicode form; column names are stripped.

Every user mistake is a :class:`TableError` whose message says what is wrong, where (line, item, column)
and what to do. Sizes are bounded (:data:`MAX_CELL_CHARS`, :data:`MAX_ROW_CHARS`, :data:`MAX_COLUMNS`,
``limit_rows``), so a hostile file costs time, never unbounded memory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from taskdeck.batchinput_csv import CsvFormat, csv_records, sniff
from taskdeck.batchinput_json import json_records
from taskdeck.batchinput_text import (
    CHANGED,
    MAX_CELL_CHARS,
    MAX_COLUMNS,
    MAX_NOTES_EACH,
    MAX_ROW_CHARS,
    Cell,
    Namer,
    Notes,
    Readable,
    TableError,
    Text,
)

__all__ = [
    "MAX_CELL_CHARS",
    "MAX_COLUMNS",
    "MAX_ROW_CHARS",
    "Cell",
    "Kind",
    "Row",
    "Table",
    "TableError",
    "read_table",
]

Kind = Literal["csv", "json", "jsonl"]

SAMPLE_CHARS = 32 * 1024  # what the CSV sniffer looks at
SPOOL_IN_MEMORY = 1024 * 1024  # a stream that cannot seek is copied here; to disk beyond this size


@dataclass(frozen=True, slots=True)
class Row:
    """One row kept from the source.

    ``index`` counts kept rows from 0 in file order (skipped empty rows take none); ``line`` is the
    1-based line where the row starts; ``record`` its 1-based position among the source's records (a
    CSV's header not counted, empty rows counted; a JSON array's item number); ``where`` names it for
    messages ("line 12", "item 5 (line 12)"). ``values`` holds every column in order: a CSV's cells
    are strings (missing ones ""), a JSON row's values are as parsed and its absent keys are None.
    """

    index: int
    line: int
    record: int
    where: str
    values: dict[str, Cell]


@dataclass
class _Plan:
    """What the first pass learnt and the second pass reuses."""

    kind: Kind
    csv: CsvFormat | None = None
    namer: Namer = field(default_factory=Namer)
    keys: dict[str, str] = field(default_factory=dict)  # a JSON key → its column


class _Tee:
    """Reads a stream that cannot seek and keeps a copy, so it can be read again."""

    def __init__(self, stream: IO[bytes], copy: IO[bytes]) -> None:
        self._stream, self._copy = stream, copy

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        if isinstance(data, bytes):
            self._copy.write(data)
        return data


class _Source:
    """Where the bytes come from, readable from the start as often as needed."""

    def __init__(self, source: Path | IO[bytes]) -> None:
        self._path = source if isinstance(source, Path) else None
        self._stream = None if isinstance(source, Path) else source
        self._start = 0
        self._spool: IO[bytes] | None = None
        if self._stream is not None:
            try:
                self._start = self._stream.tell() if self._stream.seekable() else -1
            except (OSError, ValueError):
                self._start = -1
            if self._start < 0:
                # Owned by the table and closed by Table.close(), so no context manager here.
                self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115

    @contextmanager
    def first(self) -> Iterator[Readable]:
        """The bytes for the first pass (copied aside when the stream cannot be read twice)."""
        if self._stream is not None and self._spool is not None:
            yield _Tee(self._stream, self._spool)
        else:
            with self.again() as raw:
                yield raw

    @contextmanager
    def again(self) -> Iterator[IO[bytes]]:
        """The bytes from the start, once more."""
        if self._path is not None:
            try:
                handle = self._path.open("rb")
            except OSError as exc:
                raise TableError(f"cannot open {self._path}: {exc.strerror or exc}") from None
            with handle:
                yield handle
            return
        stream = self._spool or self._stream
        assert stream is not None
        stream.seek(0 if self._spool else self._start)
        yield stream

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _is_empty(values: dict[str, Cell]) -> bool:
    """No value worth a task: every one null, blank text, or an empty array or object."""
    return all(
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, list | dict) and not value)
        for value in values.values()
    )


def _no_rows(plan: _Plan, skipped: int) -> str:
    head = ", ".join(plan.namer.columns[:5]) + (", …" if len(plan.namer.columns) > 5 else "")
    if skipped:
        what = {"csv": f"row under the header ({head})", "json": "item in the JSON array", "jsonl": "object"}
        return f"every {what[plan.kind]} is empty ({skipped:,} skipped); a table needs at least one row"
    return {
        "csv": f"the file has a header row ({head}) but no rows under it",
        "json": "the JSON array is empty; a table needs at least one object in it",
        "jsonl": "the file holds no JSON objects",
    }[plan.kind]


def _scan(text: Text, plan: _Plan, notes: Notes, limit_rows: int | None, *, first_pass: bool) -> Iterator[Row]:
    """The rows of ``text``: empty ones skipped, the rest numbered; the same code serves both passes."""
    if plan.kind == "csv":
        assert plan.csv is not None
        records = csv_records(text, plan.csv, plan.namer, notes)
    else:
        records = json_records(text, plan.kind, plan.namer, plan.keys, notes, grow=first_pass)
    index = skipped = waiting = 0
    pending: list[str] = []  # empty rows not yet followed by a row: at the end of the file they pass unremarked
    for record in records:
        if _is_empty(record.values):
            skipped, waiting = skipped + 1, waiting + 1
            if len(pending) < MAX_NOTES_EACH:
                pending.append(f"{record.where} was empty and was skipped")
            continue
        for number, message in enumerate(pending, 1):
            notes.add("empty", message, more=waiting - len(pending) if number == len(pending) else 0)
        pending, waiting = [], 0
        if limit_rows is not None and index >= limit_rows:
            raise TableError(
                f"the file has more than {limit_rows:,} rows, the most allowed here ({record.where} is row "
                f"{index + 1:,}); split the file"
            )
        values = record.values
        if plan.kind != "csv" and not first_pass:  # every column in every row; the first pass has no use for it
            values = {column: values.get(column) for column in plan.namer.columns}
        yield Row(index, record.line, record.record, record.where, values)
        index += 1
    if index == 0:
        raise TableError(_no_rows(plan, skipped))


class Table:
    """A table read and checked from end to end; :meth:`rows` reads it again, one row at a time.

    ``kind`` is what was read ("csv", "json", "jsonl"); ``columns`` the unique column names in order;
    ``row_count`` the rows :meth:`rows` yields; ``warnings`` what a person should know (columns renamed,
    rows skipped or padded, a byte-order mark removed), the first few of each kind word for word;
    ``digest`` the SHA-256 hex of the raw bytes; ``encoding`` ("UTF-8", "UTF-16", "UTF-32") and
    ``delimiter`` (a CSV's; None for JSON) say how it was read.

    Made by :func:`read_table`. Close it, or use ``with``, when it was read from a stream that cannot
    seek: it holds a copy.
    """

    def __init__(self, source: _Source, plan: _Plan, row_count: int, digest: str, notes: Notes, text: Text) -> None:
        self.kind: Kind = plan.kind
        self.columns: list[str] = list(plan.namer.columns)
        self.warnings: list[str] = notes.done()
        self.digest = digest
        self.row_count = row_count
        self.encoding = text.label
        self.delimiter = plan.csv.delimiter if plan.csv else None
        self._source = source
        self._plan = plan
        self._closed = False

    def rows(self) -> Iterator[Row]:
        """Every row, read from the source again one at a time.

        Each call starts over from the first row. From a stream, finish (or close) one iteration before
        starting another: they share the stream. Raises :class:`TableError` if the bytes changed since
        :func:`read_table` checked them.
        """
        if self._closed:
            raise ValueError("the table is closed")
        return self._rows()

    def dicts(self) -> Iterator[dict[str, Cell]]:
        """Every row's values as a dict of its own (column: value), from the first row: a batch's row source."""
        return (dict(row.values) for row in self.rows())

    def _rows(self) -> Iterator[Row]:
        with self._source.again() as raw:
            text = Text(raw)
            count = 0
            for row in _scan(text, self._plan, Notes(), None, first_pass=False):
                count += 1
                yield row
            if count != self.row_count or text.finish() != self.digest:
                raise TableError(CHANGED)

    def close(self) -> None:
        """Drop the temporary copy of a stream that could not seek (nothing else is held open)."""
        self._closed = True
        self._source.close()

    def __enter__(self) -> Table:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _sample(text: Text) -> tuple[str, bool]:
    """The start of the text (longer while it is all whitespace), and whether it is the whole text."""
    size = SAMPLE_CHARS
    while True:
        sample = text.peek(size)
        if len(sample) < size or sample.strip() or size >= MAX_ROW_CHARS:
            return sample, len(sample) < size
        size *= 4


def read_table(
    source: Path | IO[bytes],
    *,
    kind: Literal["auto", "csv", "json", "jsonl"] = "auto",
    limit_rows: int | None = None,
) -> Table:
    """Read and check a table from a file path or a binary stream; its rows come from :meth:`Table.rows`.

    ``kind="auto"`` looks at the first character that is not whitespace: ``[`` is a JSON array, ``{``
    JSON Lines, anything else CSV. A CSV's dialect is sniffed (comma, semicolon, tab or pipe) and its first
    row is the header. Text is UTF-8, with or without a byte-order mark, or UTF-16/32 with one. More rows
    than ``limit_rows`` (when given) is an error, not a silent cut. A stream is read from its current
    position; it is not closed. Raises :class:`TableError` for anything wrong with the content.
    """
    if kind not in ("auto", "csv", "json", "jsonl"):
        raise ValueError(f"kind must be auto, csv, json or jsonl, not {kind!r}")
    if limit_rows is not None and limit_rows < 1:
        raise ValueError("limit_rows must be at least 1")
    source_ = _Source(source)
    try:
        with source_.first() as raw:
            text = Text(raw)
            notes = Notes()
            if text.label == "UTF-8" and text.bom:
                notes.add("bom", "the file started with a byte-order mark (removed)")
            elif text.bom:
                notes.add("bom", f"the file is {text.label} text (it starts with a {text.label} byte-order mark)")
            sample, complete = _sample(text)
            if not sample.strip():
                raise TableError("the file is empty" + (": it holds only blank lines and spaces" if sample else ""))
            first = sample.lstrip()[0]
            found: Kind = kind if kind != "auto" else "json" if first == "[" else "jsonl" if first == "{" else "csv"
            plan = _Plan(found, csv=sniff(sample, complete, notes) if found == "csv" else None)
            row_count = sum(1 for _ in _scan(text, plan, notes, limit_rows, first_pass=True))
            digest = text.finish()
    except BaseException:
        source_.close()
        raise
    return Table(source_, plan, row_count, digest, notes, text)
