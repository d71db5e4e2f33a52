"""Emulator directives: the small language that shapes runs and injects faults.

A directive string is a ``;``-separated list of clauses::

    clause := [target ":"] name ["=" value] ["*" count] ["%" probability]

Names (see docs/emulator.md for the full table):

=============  ==========================================================
``fail``       the run fails (run-level only)
``duration=S`` the run lasts S seconds before time scaling (run-level only)
``xss``        messages and outputs carry ``<script>``/``javascript:`` payloads
``vanish=S``   the run is forgotten S seconds (before time scaling) after its creation:
               every request about it then answers 404 as for an unknown id, and an
               open event stream is closed at that instant (run-level only)
``nooutput``   the run's ``task_run.state`` events carry ``"output": null`` even when
               completed; ``/result`` still has the output (run-level only)
``drop=N``     cut an event stream after N body bytes, mid-event
``error=C``    answer with status C (500, 502, 503) instead of serving
``ratelimit=S`` answer 429 with ``Retry-After: S``
``hang=S``     send headers, then nothing for S seconds, then end the stream
``malformed``  send a ``data:`` line that is not JSON
``unknown``    send an unknown event type and an unknown ``progress_msg`` kind
``keepalive=S`` send ``:`` comment lines every S seconds while idle
``crlf``       end lines with CRLF instead of LF
=============  ==========================================================

Targets say which requests a fault applies to: ``events`` (event streams, run and
group), ``create`` (run-creating POSTs), ``get`` (every other request), or ``any``.
``*N`` limits a clause to the first N matching requests; ``%P`` applies it with
probability P (drawn from the emulator's seeded generator).

Directives come from three places: the global ``--faults`` setting, the run
(``metadata["emulator"]`` or an ``x-emulator-run`` header on create), and one
request (an ``x-emulator`` header).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = [
    "RUN_ONLY",
    "STREAM_FAULTS",
    "Clause",
    "DirectiveError",
    "Directives",
    "parse_directives",
]

TARGETS = ("events", "create", "get", "any")
STREAM_FAULTS = frozenset({"drop", "hang", "malformed", "unknown", "keepalive", "crlf"})
CONNECT_FAULTS = frozenset({"error", "ratelimit"})
RUN_ONLY = frozenset({"fail", "duration", "xss", "vanish", "nooutput"})
_NEEDS_VALUE = {
    "drop": int,
    "error": int,
    "ratelimit": float,
    "hang": float,
    "keepalive": float,
    "duration": float,
    "vanish": float,
}
_FLAGS = frozenset({"fail", "xss", "nooutput", "malformed", "unknown", "crlf"})


class DirectiveError(ValueError):
    """A directive string that does not parse; the message says which clause and why."""


@dataclass(slots=True)
class Clause:
    """One parsed clause; ``remaining`` counts down for ``*N`` clauses."""

    target: str
    name: str
    value: float | None
    remaining: int | None
    probability: float

    def matches(self, target: str) -> bool:
        return self.target == "any" or self.target == target


@dataclass(slots=True)
class Directives:
    """A parsed directive list; counts are consumed on the emulator's one event loop."""

    clauses: list[Clause] = field(default_factory=list)
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.clauses)

    def flag(self, name: str) -> bool:
        """True when a run-level flag such as ``fail`` or ``xss`` is present."""
        return any(c.name == name for c in self.clauses)

    def value(self, name: str) -> float | None:
        """The value of a run-level clause such as ``duration``."""
        for c in self.clauses:
            if c.name == name:
                return c.value
        return None

    def take(self, target: str, rng: random.Random) -> dict[str, float | None]:
        """Faults that fire for one request of kind ``target``, consuming counts.

        Returns a mapping of fault name to value (None for flags).
        """
        fired: dict[str, float | None] = {}
        for c in self.clauses:
            if c.name in RUN_ONLY or not c.matches(target) or c.name in fired:
                continue
            # One request can only fail one way: the first connect fault that fires wins,
            # and the others keep their counts for later requests.
            if c.name in CONNECT_FAULTS and fired.keys() & CONNECT_FAULTS:
                continue
            if c.remaining is not None and c.remaining <= 0:
                continue
            if c.probability < 1.0 and rng.random() >= c.probability:
                continue
            if c.remaining is not None:
                c.remaining -= 1
            fired[c.name] = c.value
        return fired


def parse_directives(text: str | None, *, allow_run_only: bool = True) -> Directives:
    """Parse a directive string; raise :class:`DirectiveError` naming the bad clause."""
    out = Directives(source=text or "")
    if not text or not text.strip():
        return out
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        out.clauses.append(_parse_clause(part, allow_run_only))
    return out


def _parse_clause(part: str, allow_run_only: bool) -> Clause:
    probability = 1.0
    remaining: int | None = None
    body = part
    if "%" in body:
        body, _, prob_text = body.partition("%")
        try:
            probability = float(prob_text)
        except ValueError:
            raise DirectiveError(f"{part!r}: probability after % must be a number from 0 to 1") from None
        if not 0.0 <= probability <= 1.0:
            raise DirectiveError(f"{part!r}: probability after % must be from 0 to 1")
    if "*" in body:
        body, _, count_text = body.partition("*")
        if not count_text.isdigit():
            raise DirectiveError(f"{part!r}: count after * must be a whole number")
        remaining = int(count_text)
    target = ""
    if ":" in body:
        target, _, body = body.partition(":")
        target = target.strip()
        if target not in TARGETS:
            raise DirectiveError(f"{part!r}: target must be one of {', '.join(TARGETS)}")
    name, eq, value_text = body.partition("=")
    name = name.strip()
    value: float | None = None
    if name in _NEEDS_VALUE:
        if not eq:
            raise DirectiveError(f"{part!r}: {name} needs a value, as in {name}=5")
        try:
            value = float(_NEEDS_VALUE[name](value_text.strip()))
        except ValueError:
            raise DirectiveError(f"{part!r}: {name} takes a number") from None
        if value < 0:
            raise DirectiveError(f"{part!r}: {name} must not be negative")
    elif name in _FLAGS:
        if eq:
            raise DirectiveError(f"{part!r}: {name} takes no value")
    else:
        known = ", ".join(sorted(set(_NEEDS_VALUE) | _FLAGS))
        raise DirectiveError(f"{part!r}: unknown directive {name!r}; known: {known}")
    if name == "error" and not 500 <= int(value or 0) <= 599:
        raise DirectiveError(f"{part!r}: error takes a 5xx status such as 503")
    if name in RUN_ONLY and not allow_run_only:
        raise DirectiveError(f"{part!r}: {name} shapes a run; give it in metadata or x-emulator-run")
    if not target:
        target = "events" if name in STREAM_FAULTS else "any"
    return Clause(target=target, name=name, value=value, remaining=remaining, probability=probability)
