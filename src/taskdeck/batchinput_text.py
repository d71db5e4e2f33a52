"""The pieces every reader of :mod:`taskdeck.batchinput` shares: errors, limits, decoding, warnings, names.

Internal to :mod:`taskdeck.batchinput` (import from there); split out only to keep each module short.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from typing import Any, ClassVar, NamedTuple, Protocol

Cell = str | int | float | bool | None | list[Any] | dict[str, Any]
"""A CSV cell is a str; a JSON value is kept as parsed (nested objects and arrays included)."""

MAX_CELL_CHARS = 100_000  # one cell (a JSON value: its compact JSON); a task's input is far smaller anyway
MAX_ROW_CHARS = 1_000_000  # one row's text in the file (a CSV record, a JSON item, a JSON line)
MAX_COLUMNS = 1_000
MAX_NOTES_EACH = 10  # warnings of one kind kept word for word; the rest are counted
CHUNK = 64 * 1024  # bytes read at a time
CHANGED = "the file changed after it was checked; read it again"


class TableError(ValueError):
    """A table that cannot be read; the message says what is wrong, where, and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Readable(Protocol):
    """What the readers need of a source: a binary file, a stream, or a copy being made of one."""

    def read(self, size: int = -1, /) -> bytes: ...


class Record(NamedTuple):
    """One record as a reader found it, before empty ones are dropped and rows are numbered."""

    record: int
    line: int
    where: str
    values: dict[str, Cell]


_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)
_BREAK = re.compile(r"\r\n?|\n")  # csv's line ends, not translated: \r\n, \r or \n


def _breaks(text: str) -> int:
    """Line breaks in ``text`` (\\r\\n, \\r or \\n)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


class Text:
    """Text decoded from a binary stream one chunk at a time; hashes every byte, reports where a decode fails.

    Our own decoder rather than ``io.TextIOWrapper``: its ``UnicodeDecodeError`` gives an offset in some
    internal chunk, and a person needs the byte and line of the bad character.
    """

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._sha = hashlib.sha256()
        self._offset = 0  # bytes read so far
        self._lines = 1  # the line being decoded, for errors
        self._cr = False  # the decoded text so far ends with \r (a \n next does not start a line)
        self._buf = ""
        self._pos = 0
        self.eof = False
        head = b""
        while len(head) < 4 and (more := self._read()):
            head += more
        self.encoding, self.label, self.bom = "utf-8", "UTF-8", False
        for mark, encoding, label in _BOMS:
            if head.startswith(mark):
                self.encoding, self.label, self.bom = encoding, label, True
                head = head[len(mark) :]
                break
        self._decoder = codecs.getincrementaldecoder(self.encoding)("strict")
        self._append(head, self._offset - len(head), final=not head)

    def _read(self) -> bytes:
        data = self._raw.read(CHUNK) or b""
        if not isinstance(data, bytes):
            raise TypeError("read_table needs a binary stream (open the file with 'rb')")
        self._sha.update(data)
        self._offset += len(data)
        return data

    def _append(self, data: bytes, at: int, *, final: bool) -> None:
        """Decode ``data`` (which starts at byte ``at``) onto the buffer."""
        pending = len(self._decoder.getstate()[0])  # bytes of a character split across chunks
        try:
            text = self._decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            before = exc.object[: exc.start].decode(self.encoding, "replace")
            line = self._lines + _breaks(before) - (self._cr and before.startswith("\n"))
            cut = exc.end >= len(exc.object) and final
            what = "ends in the middle of a character" if cut else f"has a byte that is not {self.label}"
            raise TableError(
                f"the file is not valid {self.label} text: it {what} at byte {at - pending + exc.start:,} "
                f"(line {line}). Save it as UTF-8 (in Excel: 'CSV UTF-8')"
            ) from None
        self._lines += _breaks(text) - (self._cr and text.startswith("\n"))
        self._cr = text.endswith("\r") if text else self._cr
        if self._pos:
            self._buf = self._buf[self._pos :]
            self._pos = 0
        self._buf += text
        self.eof = final

    def _fill(self) -> bool:
        """Decode one more chunk into the buffer; False when the stream has ended."""
        if self.eof:
            return False
        at = self._offset
        data = self._read()
        self._append(data, at, final=not data)
        return True

    def peek(self, size: int) -> str:
        """The next ``size`` characters (fewer at the end), not consumed."""
        while len(self._buf) - self._pos < size and self._fill():
            pass
        return self._buf[self._pos : self._pos + size]

    def readline(self, limit: int) -> str:
        """The next line with its line break (not translated, as ``csv`` wants); at most ``limit`` characters."""
        searched = 0  # characters after _pos known to hold no line break
        while True:
            end = min(len(self._buf), self._pos + limit)
            found = _BREAK.search(self._buf, self._pos + searched, end)
            # A \r at the end of the buffer may be the first half of \r\n: decide once the next chunk is in.
            if found and not (found.end() == len(self._buf) and found.group() == "\r" and not self.eof):
                return self._take(found.end())
            # Relative to _pos, which _fill moves (it drops consumed text): taken before it, stays true after.
            searched = max(end - self._pos - 1, 0)
            if end - self._pos >= limit or not self._fill():
                return self._take(end)

    def read(self) -> str:
        """Whatever text comes next ("" at the end)."""
        while self._pos == len(self._buf):
            if not self._fill():
                return ""
        return self._take(len(self._buf))

    def _take(self, end: int) -> str:
        text = self._buf[self._pos : end]
        self._pos = end
        return text

    def finish(self) -> str:
        """Read to the end (so every byte is hashed); the SHA-256 hex of all the bytes."""
        while self.read():
            pass
        return self._sha.hexdigest()


class Notes:
    """Warnings for people: the first few of each kind word for word, then a count (10,000 empty rows: 11 lines)."""

    _MORE: ClassVar[dict[str, str]] = {
        "empty": "rows were empty and were skipped",
        "short": "rows had fewer cells than columns (the missing cells are empty)",
        "extra": "rows had empty cells past the last column (ignored)",
        "unnamed": "columns had no name",
        "duplicate": "columns had a name already taken",
    }

    def __init__(self) -> None:
        self._kept: list[str] = []
        self._counts: dict[str, int] = {}

    def add(self, kind: str, message: str, more: int = 0) -> None:
        """Note ``message``, and ``more`` others of the same kind not worth spelling out."""
        count = self._counts.get(kind, 0)
        if count < MAX_NOTES_EACH:
            self._kept.append(message)
        self._counts[kind] = count + 1 + more

    def done(self) -> list[str]:
        extra = [
            f"… and {n - MAX_NOTES_EACH:,} more {self._MORE.get(kind, 'like these')}"
            for kind, n in self._counts.items()
            if n > MAX_NOTES_EACH
        ]
        return [*self._kept, *extra]


class Namer:
    """Unique column names in order: an empty or repeated name gets a new one, with a warning."""

    def __init__(self) -> None:
        self.columns: list[str] = []
        self._taken: set[str] = set()
        self._reserved: set[str] = set()
        self._times: dict[str, int] = {}

    def reserve(self, names: set[str]) -> None:
        """Names still to come (the rest of a CSV header): never given to a renamed column."""
        self._reserved |= names

    def add(self, name: str, what: str, notes: Notes) -> str:
        """The column for ``name`` (``what`` names it in a warning); a new name when empty or taken."""
        if len(self.columns) >= MAX_COLUMNS:
            raise TableError(f"the table has more than {MAX_COLUMNS:,} columns, more than is supported")
        if not name.strip():
            new = self._free(f"column_{len(self.columns) + 1}")
            notes.add("unnamed", f"{what} had no name; called it {new}")
        elif name in self._taken:
            times = self._times[name] = self._times.get(name, 1) + 1
            new = self._free(name, times)
            first = "two columns were named" if times == 2 else f"{times} columns were named"
            notes.add("duplicate", f"{first} {name!r}; the {_ordinal(times)} is now {new!r}")
        else:
            new = name
        self._taken.add(new)
        self.columns.append(new)
        return new

    def _free(self, name: str, n: int = 1) -> str:
        """``name`` (when ``n`` is 1) or the first of ``name_n``, ``name_{n+1}``… that is free."""
        candidate = name if n == 1 else f"{name}_{n}"
        while candidate in self._taken or candidate in self._reserved:
            n += 1
            candidate = f"{name}_{n}"
        return candidate


def _ordinal(n: int) -> str:
    if n in (2, 3):
        return "second" if n == 2 else "third"
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
