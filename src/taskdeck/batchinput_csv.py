"""CSV for :mod:`taskdeck.batchinput`: the dialect, strict cells, a header made of unique names.

Internal to :mod:`taskdeck.batchinput` (import from there).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import NamedTuple

from taskdeck.batchinput_text import MAX_CELL_CHARS, MAX_ROW_CHARS, Namer, Notes, Record, TableError, Text

DELIMITERS = ",;\t|"
DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


class CsvFormat(NamedTuple):
    """How a CSV file is read (its ``csv.reader`` options besides the fixed ones)."""

    delimiter: str
    quotechar: str
    skipinitialspace: bool


def sniff(sample: str, complete: bool, notes: Notes) -> CsvFormat:
    """The dialect, from ``csv.Sniffer``: only its delimiter, quote character and space skipping.

    Its ``doublequote`` is not taken: it says False unless the sample happens to hold a doubled quote, and
    with no escape character that would leave a quote inside a quoted cell unreadable. Cells are always
    read as RFC 4180 says (``""`` inside quotes), strictly: a malformed quote is an error naming the line.
    """
    if not complete:  # cut a partial last line, which could mislead the sniffer
        sample = sample[: max(sample.rfind("\n"), sample.rfind("\r")) + 1] or sample
    sniffer = csv.Sniffer()
    try:
        dialect = sniffer.sniff(sample, delimiters=DELIMITERS)
    except csv.Error:
        # The sniffer wants rows that agree (it gives up on a short row in a small file): fall back on
        # the header line. None of the delimiters in it: one column. Several: the commonest, with a warning.
        header = re.split(r"\r\n?|\n", sample.lstrip("\r\n"), maxsplit=1)[0]
        used = sorted((d for d in DELIMITERS if d in header), key=header.count, reverse=True)
        if len(used) > 1:
            notes.add("dialect", f"could not tell the delimiter for sure; used the {DELIMITER_NAMES[used[0]]}")
        return CsvFormat(used[0] if used else ",", '"', False)
    fmt = CsvFormat(dialect.delimiter, dialect.quotechar or '"', bool(dialect.skipinitialspace))
    _doubt_header(sniffer, dialect, sample, fmt, notes)
    return fmt


_VALUE = re.compile(r"[-+]?[\d.,]*\d[\d.,]*%?|\S+@\S+\.\w+|(https?://|www\.)\S+", re.I)


def _doubt_header(sniffer: csv.Sniffer, dialect: type[csv.Dialect], sample: str, fmt: CsvFormat, notes: Notes) -> None:
    """Warn when the first row looks like data; it is used as the header all the same.

    ``Sniffer.has_header`` alone is wrong too often on text columns (it says "no header" for
    ``name,city`` over company names), so its "no" counts only when a first-row cell also looks like
    a value (a number, an email address, a URL) rather than a column name.
    """
    sniffer.sniff = lambda sample, delimiters=None: dialect  # type: ignore[method-assign]  # keep our dialect
    try:
        header = next(csv.reader(io.StringIO(sample), **fmt._asdict()))
        if sniffer.has_header(sample):
            return
    except (csv.Error, StopIteration):
        return
    values = [cell for cell in header if _VALUE.fullmatch(cell.strip())]
    if values:
        notes.add(
            "header",
            f"the first row does not look like a header ({values[0].strip()!r} looks like a value, not a column "
            "name); it was used as the column names anyway. If it is data, add a header row above it",
        )


class _Lines:
    """The lines ``csv.reader`` asks for: counted, refused if they hold NUL, bounded per record."""

    def __init__(self, text: Text) -> None:
        self._text = text
        self.line = 0  # lines handed out
        self.start = 1  # the line where the record being read starts
        self._chars = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        line = self._text.readline(MAX_ROW_CHARS + 1)
        if not line:
            raise StopIteration
        self.line += 1
        self._chars += len(line)
        if self._chars > MAX_ROW_CHARS:  # csv would grow its record without bound
            raise TableError(
                f"the row starting at line {self.start} is longer than {MAX_ROW_CHARS:,} characters; "
                'often a quote (") that opens a cell and is never closed'
            )
        if "\x00" in line:
            raise TableError(f"line {self.line} holds a NUL character: this looks like a binary file, not a table")
        return line

    def next_record(self) -> None:
        self.start, self._chars = self.line + 1, 0


def _csv_cells(text: Text, fmt: CsvFormat) -> Iterator[tuple[int, list[str]]]:
    """Each CSV record with the line it starts on (a blank line is a record with no cells)."""
    lines = _Lines(text)
    # csv.field_size_limit is process-wide, so it is left alone: its default (131,072) is above
    # MAX_CELL_CHARS, which is checked per cell below, and _Lines bounds a record whatever the limit is.
    reader = csv.reader(lines, **fmt._asdict(), doublequote=True, strict=True)
    while True:
        lines.next_record()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field limit" in str(exc):
                message = (
                    f"the row starting at line {lines.start} has a cell longer than {MAX_CELL_CHARS:,} "
                    'characters; often a quote (") that opens a cell and is never closed'
                )
            elif "end of data" in str(exc):
                message = (
                    f"the file ends inside the quoted cell that starts on line {lines.start}: "
                    'a quote (") is never closed'
                )
            else:
                message = (
                    f'line {lines.line}: a quoted cell is not closed properly ({exc}); a quote (") inside a '
                    'quoted cell must be doubled ("")'
                )
            raise TableError(message) from None
        yield lines.start, cells


def _cells(n: int) -> str:
    return "1 cell" if n == 1 else f"{n} cells"


def _blank(cells: list[str]) -> bool:
    return all(not cell.strip() for cell in cells)


def csv_records(text: Text, fmt: CsvFormat, namer: Namer, notes: Notes) -> Iterator[Record]:
    """The records under the header, each a dict over every column (a blank record: an empty dict).

    The first non-blank record is the header: its names go to ``namer`` unless it already has columns
    (the second pass, which reads the header again and uses the names the first pass made).
    """
    cells_at = _csv_cells(text, fmt)
    for line, header in cells_at:
        if not _blank(header):
            break
        notes.add("empty", f"line {line} (above the header) was empty and was skipped")
    else:
        raise TableError("the file has no header row: every line is empty")
    if not namer.columns:
        names = [name.strip() for name in header]  # spaces around a column name never mean anything
        namer.reserve({name for name in names if name})
        for number, name in enumerate(names, 1):
            namer.add(name, f"column {number}", notes)
    columns = namer.columns
    width, delimiter = len(columns), DELIMITER_NAMES[fmt.delimiter]
    for record, (line, cells) in enumerate(cells_at, 1):
        where = f"line {line}"
        if _blank(cells):
            yield Record(record, line, where, {})
            continue
        if len(cells) > width:
            if not _blank(cells[width:]):
                raise TableError(
                    f"{where} has {_cells(len(cells))} but there are {width} columns (the first extra cell is "
                    f"{cells[width][:40]!r}). A cell holding the delimiter ({delimiter}) must be in double "
                    "quotes; or give the extra column a name in the header row"
                )
            notes.add("extra", f"{where} has {_cells(len(cells) - width)} past the last column, empty; ignored")
            cells = cells[:width]
        elif len(cells) < width:
            notes.add("short", f"{where} has {_cells(len(cells))} for {width} columns; the missing ones are empty")
            cells += [""] * (width - len(cells))
        for column, cell in zip(columns, cells, strict=True):
            if len(cell) > MAX_CELL_CHARS:
                raise TableError(
                    f"{where}, column {column!r}: the cell has {len(cell):,} characters; "
                    f"the limit is {MAX_CELL_CHARS:,}"
                )
        yield Record(record, line, where, dict(zip(columns, cells, strict=True)))
