"""Server-Sent Events on raw ASGI, with the faults a real network produces.

Parallel frames each event as an ``event:`` line equal to the JSON ``type``, one
``data:`` line of compact JSON, and a blank line; no ``id:`` or ``retry:``
lines. :class:`SseWriter` writes exactly that, and can also cut the body after
N bytes (mid-event), add ``:`` keep-alive comments, use CRLF line endings, or
sit silent. It watches for the client going away so an idle stream is counted
closed at once, not at its next write.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import Receive, Send

__all__ = ["SseWriter", "frame"]

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def frame(event_type: str, data: str, *, crlf: bool = False) -> bytes:
    """One SSE event as bytes."""
    text = f"event: {event_type}\ndata: {data}\n\n"
    if crlf:
        text = text.replace("\n", "\r\n")
    return text.encode()


class SseWriter:
    """Writes one SSE response. Methods return False once the client is gone or the body was cut."""

    def __init__(
        self,
        send: Send,
        receive: Receive,
        *,
        crlf: bool = False,
        drop_after: int | None = None,
        keepalive: float | None = None,
    ) -> None:
        self._send = send
        self._receive = receive
        self.crlf = crlf
        self.drop_after = drop_after
        self.keepalive = keepalive if keepalive and keepalive > 0 else None
        self.bytes_sent = 0
        self.events_sent = 0
        self.dropped = False
        self._gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return not (self.dropped or self._gone.is_set())

    async def start(self, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """Send the status line and headers and start watching for disconnect."""
        await self._send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + (extra_headers or [])})
        # An empty chunk makes the server flush the headers now, so a client sees
        # the response begin even when the first event is far away (or never comes).
        await self._send({"type": "http.response.body", "body": b"", "more_body": True})
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self._gone.set()
                return

    async def _write(self, chunk: bytes) -> bool:
        if not self.alive:
            return False
        if self.drop_after is not None and self.bytes_sent + len(chunk) > self.drop_after:
            part = chunk[: max(0, self.drop_after - self.bytes_sent)]
            if part:
                await self._send({"type": "http.response.body", "body": part, "more_body": True})
                self.bytes_sent += len(part)
            self.dropped = True
            return False
        await self._send({"type": "http.response.body", "body": chunk, "more_body": True})
        self.bytes_sent += len(chunk)
        return True

    async def event(self, event_type: str, data: str) -> bool:
        """Send one event (``data`` is the compact JSON text)."""
        ok = await self._write(frame(event_type, data, crlf=self.crlf))
        if ok:
            self.events_sent += 1
        return ok

    async def raw(self, text: str) -> bool:
        """Send text as is (after the CRLF rewrite); used for malformed lines."""
        if self.crlf:
            text = text.replace("\n", "\r\n")
        return await self._write(text.encode())

    async def comment(self, text: str = "ping") -> bool:
        """A ``:`` comment line, which clients must ignore (keep-alive)."""
        return await self.raw(f": {text}\n\n")

    async def sleep_until(self, deadline: float) -> bool:
        """Wait until the monotonic ``deadline``, sending keep-alives; False if the client left."""
        while self.alive:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            step = min(remaining, self.keepalive) if self.keepalive else remaining
            try:
                await asyncio.wait_for(self._gone.wait(), timeout=step)
            except TimeoutError:
                if self.keepalive and deadline - time.monotonic() > 0 and not await self.comment():
                    return False
                continue
            return False
        return False

    async def finish(self) -> None:
        """End the body cleanly (unless it was cut, in which case the connection just drops)."""
        if self._watcher is not None:
            self._watcher.cancel()
        if not self.dropped and not self._gone.is_set():
            await self._send({"type": "http.response.body", "body": b"", "more_body": False})
