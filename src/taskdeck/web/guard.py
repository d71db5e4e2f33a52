"""The web app's outer guard (raw ASGI, before any route): hosts, body size, security headers.

Like Django's ``ALLOWED_HOSTS``, ``SecurityMiddleware`` and ``DATA_UPLOAD_MAX_MEMORY_SIZE``:

- a request whose ``Host`` is not an allowed host answers 400 (a DNS-rebinding page
  that resolves its own name to 127.0.0.1 reaches us with its own name as Host);
- a body larger than ``max_body_bytes`` answers 413, from ``Content-Length`` before
  reading, or as soon as a chunked body passes the limit;
- every response carries a Content-Security-Policy with no inline script and no
  framing, ``nosniff``, a referrer policy and a cross-origin opener policy.

It also decides whether the request came over https, believing
``X-Forwarded-Proto``/``X-Forwarded-Host`` only from a configured trusted proxy.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskdeck.config import Settings

__all__ = ["CSP", "Guard", "is_https", "request_origin"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# The routes whose bodies carry a batch's whole table (web/batchapi.py): TASKDECK_MAX_UPLOAD_BYTES.
UPLOAD_PATHS = frozenset({"/api/batches", "/api/batches/check"})
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
SCOPE_HTTPS = "taskdeck.https"
SCOPE_HOST = "taskdeck.host"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _split_host(raw: str) -> str:
    """The host name of a ``Host`` header value, lower case, without port or IPv6 brackets."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        return raw[1 : raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


def is_https(scope: Scope) -> bool:
    """Whether this request reached us over https (as decided by the guard)."""
    return bool(scope.get(SCOPE_HTTPS))


def request_origin(scope: Scope) -> str:
    """Our own origin as this request sees it, e.g. ``http://127.0.0.1:8000``."""
    scheme = "https" if is_https(scope) else "http"
    host = scope.get(SCOPE_HOST) or _header(scope, b"host") or ""
    return f"{scheme}://{str(host).lower()}"


async def _answer(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: allowed hosts, request body limit, https detection, security headers."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = settings.hosts
        self.any_host = "*" in self.hosts
        self.max_body = settings.max_body_bytes
        # A batch's table travels in its check and create bodies: those two routes take larger ones.
        self.max_upload = max(settings.max_upload_bytes, settings.max_body_bytes)
        self.trusted = frozenset(settings.trusted_proxies)
        self.always_https = settings.https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        trusted = client is not None and client[0] in self.trusted
        host = (trusted and _header(scope, b"x-forwarded-host")) or _header(scope, b"host") or ""
        if not self.any_host and _split_host(host) not in self.hosts:
            await _answer(
                send,
                400,
                "Bad Request: this host name is not served here. If you run Taskdeck, add it to "
                "TASKDECK_ALLOWED_HOSTS.",
            )
            return
        forwarded = (_header(scope, b"x-forwarded-proto") or "").lower() if trusted else ""
        scope[SCOPE_HTTPS] = self.always_https or scope.get("scheme") == "https" or forwarded == "https"
        scope[SCOPE_HOST] = host
        limit = self.max_upload if scope.get("path") in UPLOAD_PATHS else self.max_body
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _answer(send, 400, "Bad Request: Content-Length is not a number.")
                return
            if int(length) > limit:
                await _answer(send, 413, self._too_large(limit))
                return

        started = False
        blocked = False
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen, blocked
            if blocked:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer 413 now, then tell the app the client left: it stops reading, and
                    # whatever it answers is dropped.
                    if not started:
                        await _answer(send, 413, self._too_large(limit))
                    blocked = True
                    return {"type": "http.disconnect"}
            return message

        async def secured_send(message: Message) -> None:
            nonlocal started
            if blocked:
                return
            if message["type"] == "http.response.start":
                started = True
                headers: list[Any] = list(message.get("headers", []))
                names = {bytes(k).lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, secured_send)

    def _too_large(self, limit: int) -> str:
        if limit != self.max_body:
            return (
                f"Request body too large: a batch's table may be at most {limit:,} bytes "
                "(TASKDECK_MAX_UPLOAD_BYTES). Split the table into several batches."
            )
        return (
            f"Request body too large: the limit is {self.max_body:,} bytes (TASKDECK_MAX_BODY_BYTES). "
            "Parallel itself accepts at most 25,000 characters of task spec and input."
        )
