"""JSON for :mod:`taskdeck.batchinput`: a top-level array of objects, streamed, and JSON Lines.

Internal to :mod:`taskdeck.batchinput` (import from there).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal

from taskdeck.batchinput_text import (
    CHANGED,
    CHUNK,
    MAX_CELL_CHARS,
    MAX_ROW_CHARS,
    Cell,
    Namer,
    Notes,
    Record,
    TableError,
    Text,
)
from taskdeck.jsonbody import JsonBodyError, parse_json

_PLAIN = json.JSONDecoder()
_NOT_WHITESPACE = re.compile(r"[^ \t\r\n]")  # JSON's whitespace, exactly
_TYPE_NAMES = {str: "a string", bool: "true or false", int: "a number", float: "a number", list: "an array"}


def _strict_object(text: str, where: str) -> dict[str, Any]:
    """``text`` (known to be one JSON value) parsed by jsonbody's rules, and required to be an object."""
    try:
        value = parse_json(text)
    except JsonBodyError as exc:
        at = f" at {exc.path}" if exc.loc else ""
        raise TableError(f"{where}{at}: {exc.message}") from None
    if not isinstance(value, dict):
        raise TableError(
            f"{where} is {_TYPE_NAMES.get(type(value), 'null')}, not an object; each row must be an object "
            'like {"name": "Acme"}'
        )
    return value


class _JsonArray:
    """The items of a top-level JSON array, parsed one at a time over a sliding buffer.

    Each item's extent is found with ``JSONDecoder.raw_decode``; the item is then parsed again by
    :func:`taskdeck.jsonbody.parse_json`, so the strict rules (no NaN, no duplicate keys, bounded
    numbers and depth, storable text) are jsonbody's own. Parsing each item twice costs CPU, not memory.
    """

    def __init__(self, text: Text) -> None:
        self._text = text
        self._buf = ""
        self._pos = 0
        self._line = 1  # the line at _counted
        self._counted = 0
        self._col0 = 0  # the column of _buf[0]
        self._eof = False

    def _more(self, want: int = CHUNK) -> bool:
        """Drop the text already read and decode at least ``want`` more characters; False at the end."""
        self._line_at(self._pos)
        dropped = self._buf[: self._pos]
        newline = dropped.rfind("\n")
        self._col0 = len(dropped) - newline - 1 if newline >= 0 else self._col0 + len(dropped)
        self._buf, self._counted, self._pos = self._buf[self._pos :], 0, 0
        got = 0
        while got < want and (text := self._text.read()):
            self._buf += text
            got += len(text)
        self._eof = self._eof or got < want
        return got > 0

    def _line_at(self, pos: int) -> int:
        """The line of ``_buf[pos]``; positions asked for never go back (counting stays linear)."""
        self._line += self._buf.count("\n", self._counted, pos)
        self._counted = pos
        return self._line

    def _skip(self) -> str:
        """Move to the next character that is not whitespace, and return it ("" at the end)."""
        while not (found := _NOT_WHITESPACE.search(self._buf, self._pos)):
            self._pos = len(self._buf)
            if not self._more():
                return ""
        self._pos = found.start()
        return self._buf[self._pos]

    def items(self) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
        first = self._skip()
        if first != "[":
            hint = " (for one object per line, use JSON Lines)" if first == "{" else ""
            raise TableError(
                f"a JSON table is an array of objects, [{{...}}, {{...}}]; this file starts with {first!r}{hint}"
            )
        self._pos += 1
        number = 0
        while (char := self._skip()) != "]" or number == 0:
            if char == "]":
                break
            if not char:
                raise TableError(
                    f"the file ends before the JSON array is closed with ']' (line {self._line_at(self._pos)})"
                )
            number += 1
            line = self._line_at(self._pos)
            where = f"item {number} (line {line})"
            yield number, line, where, _strict_object(self._value(where), where)
            char = self._skip()
            if char == ",":
                self._pos += 1
                if self._skip() == "]":
                    raise TableError(
                        f"line {self._line_at(self._pos)}: a comma before ']'; JSON allows no trailing comma"
                    )
            elif char != "]":
                found = repr(char) if char else "the end of the file"
                raise TableError(f"line {self._line_at(self._pos)}: expected ',' or ']' after {where}, found {found}")
        self._pos += 1
        if self._skip():
            raise TableError(f"line {self._line_at(self._pos)}: there is more after the array's closing ']'")

    def _value(self, where: str) -> str:
        """The text of the JSON value at ``_pos``, which is then passed."""
        while True:
            try:
                _, end = _PLAIN.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # A value cut by the end of the buffer fails at that end (or as an unterminated string);
                # an error well before it is a real one, reported without reading further.
                cut = exc.pos >= len(self._buf) - 64 or exc.msg.startswith("Unterminated string")
                if self._eof or not cut:
                    line = self._line_at(exc.pos)
                    newline = self._buf.rfind("\n", 0, exc.pos)
                    column = exc.pos - newline if newline >= 0 else self._col0 + exc.pos + 1
                    raise TableError(f"{where} is not valid JSON: {exc.msg} (line {line}, column {column})") from None
            except RecursionError:
                raise TableError(f"{where} nests too deeply") from None
            else:
                if end < len(self._buf) or self._eof:  # a number at the very end might go on
                    if end - self._pos > MAX_ROW_CHARS:
                        raise TableError(f"{where} is longer than {MAX_ROW_CHARS:,} characters")
                    text, self._pos = self._buf[self._pos : end], end
                    return text
            if len(self._buf) - self._pos > MAX_ROW_CHARS:
                raise TableError(f"{where} is longer than {MAX_ROW_CHARS:,} characters (or is not valid JSON)")
            self._more(max(CHUNK, len(self._buf) - self._pos))  # doubling: a big item costs linear time


def _json_lines(text: Text) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """The objects of a JSON Lines file, one per line; blank lines are skipped."""
    line = record = 0
    while raw := text.readline(MAX_ROW_CHARS + 2):
        line += 1
        body = raw.rstrip("\r\n")
        if len(body) > MAX_ROW_CHARS:
            raise TableError(f"line {line} is longer than {MAX_ROW_CHARS:,} characters")
        if not body.strip(" \t"):
            continue
        record += 1
        where = f"line {line}"
        try:
            _PLAIN.decode(body)
        except json.JSONDecodeError as exc:
            hint = (
                "; JSON Lines holds one whole object on each line (a JSON table is an array of objects, [{...}, {...}])"
                if record == 1
                else ""
            )
            raise TableError(f"{where} is not valid JSON: {exc.msg} (column {exc.colno}){hint}") from None
        except RecursionError:
            raise TableError(f"{where} nests too deeply") from None
        yield record, line, where, _strict_object(body, where)


def json_records(
    text: Text, kind: Literal["json", "jsonl"], namer: Namer, keys: dict[str, str], notes: Notes, *, grow: bool
) -> Iterator[Record]:
    """The objects of a JSON array or a JSON Lines file, their keys renamed to columns.

    ``keys`` maps each key to its column; a key not in it gets a column from ``namer`` when ``grow``
    (the first pass, which collects the columns) and is an error otherwise (the file changed).
    """
    items = _JsonArray(text).items() if kind == "json" else _json_lines(text)
    for record, line, where, obj in items:
        values: dict[str, Cell] = {}
        for key, value in obj.items():
            column = keys.get(key)
            if column is None:
                if not grow:
                    raise TableError(CHANGED)
                column = keys[key] = namer.add(key, f"the key {key!r} in {where}", notes)
            if isinstance(value, str):
                size = len(value)
            elif isinstance(value, dict | list):
                size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
            else:
                size = 0
            if size > MAX_CELL_CHARS:
                raise TableError(
                    f"{where}, {key!r}: the value has {size:,} characters; the limit is {MAX_CELL_CHARS:,}"
                )
            values[column] = value
        yield Record(record, line, where, values)
