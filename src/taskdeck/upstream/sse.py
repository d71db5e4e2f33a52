"""A tolerant Server-Sent Events reader.

The SDK's stream gives up on the first ``data:`` line that is not JSON and
coerces unknown event types into a known model (contract §12). Taskdeck must
store every event as received and survive a bad line, so it reads the bytes
itself: LF or CRLF line endings, ``:`` comments ignored, several ``data:`` lines
joined, and the payload kept as the exact text received.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SseMessage", "SseParser", "iter_messages"]


@dataclass(frozen=True, slots=True)
class SseMessage:
    """One SSE message: its ``event:`` name, its data text, and the data parsed (None when not JSON)."""

    event: str | None
    data: str
    payload: dict[str, Any] | None

    @property
    def type(self) -> str:
        """The JSON ``type``, else the ``event:`` name, else ``message``."""
        if self.payload is not None and isinstance(self.payload.get("type"), str):
            return str(self.payload["type"])
        return self.event or "message"


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class SseParser:
    """Feed bytes in, take complete messages out. A trailing partial message is held back."""

    def __init__(self) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SseMessage]:
        self._buffer += chunk
        out: list[SseMessage] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                return out
            raw = self._buffer[:cut]
            self._buffer = self._buffer[cut + 1 :]
            line = raw[:-1] if raw.endswith(b"\r") else raw
            message = self._line(line.decode("utf-8", errors="replace"))
            if message is not None:
                out.append(message)

    def _line(self, line: str) -> SseMessage | None:
        if not line:
            if not self._data:
                self._event = None
                return None
            data = "\n".join(self._data)
            event, self._event, self._data = self._event, None, []
            try:
                # Strict: NaN/Infinity are not JSON, and would make every page showing the event fail.
                parsed = json.loads(data, parse_constant=_not_json)
            except (json.JSONDecodeError, ValueError, RecursionError):
                parsed = None
            return SseMessage(event, data, parsed if isinstance(parsed, dict) else None)
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # id:, retry: and unknown fields carry nothing Parallel uses


async def iter_messages(chunks: AsyncIterator[bytes]) -> AsyncIterator[SseMessage]:
    """Messages from a byte stream, in order."""
    parser = SseParser()
    async for chunk in chunks:
        for message in parser.feed(chunk):
            yield message
