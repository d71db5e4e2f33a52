"""Strict JSON at the door, and text every store can hold.

Python's ``json`` accepts more than RFC 8259: ``NaN``, ``Infinity``, numbers that
overflow to infinity (``1e400``), duplicate keys (the last one silently wins) and
``\\ud800``-style escapes that decode to lone surrogates. Each of these either
cannot be stored (SQLite's and PostgreSQL's UTF-8 encoders refuse a lone
surrogate; PostgreSQL's text refuses NUL) or cannot be sent upstream (a float
that is not finite). Accepted at the door, they fail later, far from the caller:
in a shared write batch, or in a create that is retried for ever. So requests are
parsed here, strictly, and every string is checked before anything is stored.

Text that comes *from upstream* cannot be refused; :func:`storable` replaces the
same characters with U+FFFD so one odd byte never fails a write.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "JsonBodyError",
    "parse_json",
    "storable",
    "text_problem",
    "text_problems",
]

MAX_DEPTH = 64  # objects and arrays nested deeper than this are refused (no request needs more)
MAX_INT_DIGITS = 40  # integers longer than this are refused (Python's own limit is 4,300 digits)
REPLACEMENT = "\ufffd"

Loc = tuple[str | int, ...]


class JsonBodyError(ValueError):
    """A request body that is not strict JSON or holds text that cannot be stored; ``loc`` says where."""

    def __init__(self, loc: Loc, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message

    @property
    def path(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out or "body"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def _no_constant(name: str) -> Any:
    raise JsonBodyError((), f"{name} is not JSON (RFC 8259 has no NaN or Infinity); send a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonBodyError((), f"the number {text[:40]} is too large to be a finite number")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise JsonBodyError((), f"an integer of {len(text)} digits is too long (at most {MAX_INT_DIGITS})")
    return int(text)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonBodyError((), f"the key {key!r} appears twice in one object")
        out[key] = value
    return out


def parse_json(raw: bytes | str) -> Any:
    """Parse RFC 8259 JSON strictly; raise :class:`JsonBodyError` naming the problem.

    Refused: invalid UTF-8, NaN/Infinity, non-finite or absurdly long numbers, duplicate keys,
    nesting deeper than :data:`MAX_DEPTH`, and any string (key or value) that holds a lone
    surrogate or NUL.
    """
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonBodyError((), f"is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = raw
    if text.startswith("\ufeff"):
        raise JsonBodyError((), "starts with a byte-order mark; send plain UTF-8")
    try:
        value = json.loads(
            text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
            parse_int=_bounded_int,
            object_pairs_hook=_unique_keys,
        )
    except JsonBodyError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonBodyError((), f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise JsonBodyError((), f"nests deeper than {MAX_DEPTH} levels") from None
    if _too_deep(value):
        raise JsonBodyError((), f"nests deeper than {MAX_DEPTH} levels")
    problems = text_problems(value)
    if problems:
        loc, message = problems[0]
        raise JsonBodyError(loc, message)
    return value


def _too_deep(value: Any) -> bool:
    """True when ``value`` nests more than :data:`MAX_DEPTH` levels. Iterative: no recursion limit."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return False


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate (\\u{ord(text[exc.start]):04x}); send valid Unicode text"
    return None


def _strings(value: Any, loc: Loc = ()) -> Iterator[tuple[Loc, str, bool]]:
    """Every string in ``value`` with its location, and whether it is an object key."""
    stack: list[tuple[Any, Loc]] = [(value, loc)]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            yield at, node, False
        elif isinstance(node, dict):
            for k, v in node.items():
                if isinstance(k, str):
                    yield at, k, True
                stack.append((v, (*at, k)))
        elif isinstance(node, list):
            stack.extend((v, (*at, i)) for i, v in enumerate(node))


def text_problems(value: Any, loc: Loc = ()) -> list[tuple[Loc, str]]:
    """Every string in ``value`` (keys included) that cannot be stored, as (location, message)."""
    out: list[tuple[Loc, str]] = []
    for at, text, is_key in _strings(value, loc):
        problem = text_problem(text)
        if problem is not None:
            out.append((at, f"a key {problem}" if is_key else problem))
    return out


def _clean(text: str) -> str:
    if text_problem(text) is None:
        return text
    return "".join(REPLACEMENT if c == "\x00" or "\ud800" <= c <= "\udfff" else c for c in text)


def storable(value: Any) -> Any:
    """``value`` with every lone surrogate and NUL replaced by U+FFFD (for text we cannot refuse)."""
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(k) if isinstance(k, str) else k: storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value
