"""Browser sessions and CSRF protection, as Django does them.

A session is a random 256-bit token in an HttpOnly, SameSite=Lax cookie (with
``Secure`` and the ``__Host-`` prefix over https); the store keeps only its
SHA-256 and the owner it signs in. Signing in always makes a new session (and
ends the one the browser had), signing out deletes it, and it expires after
``session_ttl``. Event streams opened with a session end when it does.

CSRF: every unsafe request that a cookie authenticates must (1) come from our own
origin (``Origin``, else ``Sec-Fetch-Site``) and (2) carry an ``x-csrf-token``
header equal to a token derived from the session (HMAC under the server secret).
Before sign-in, the token is derived from a separate random ``taskdeck_csrf``
cookie, so signing in is protected too (login CSRF). Requests authenticated by
the ``x-api-key`` header carry no ambient credential and need neither.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import HTTPException, Request, Response

from taskdeck.config import Settings
from taskdeck.store.base import Store
from taskdeck.vault import KeyVault
from taskdeck.web.guard import is_https, request_origin

__all__ = ["CSRF_HEADER", "SAFE_METHODS", "Sessions", "check_origin", "key_problem"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CSRF_HEADER = "x-csrf-token"
SESSION_COOKIE = "taskdeck_session"
ANON_COOKIE = "taskdeck_csrf"
SECURE_PREFIX = "__Host-"
MAX_KEY_LENGTH = 256


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a Parallel API key (None when it can): printable ASCII, no spaces."""
    if not key:
        return "it is empty"
    if len(key) > MAX_KEY_LENGTH:
        return f"it is longer than {MAX_KEY_LENGTH} characters"
    if not all("!" <= c <= "~" for c in key):
        return "it may only hold printable ASCII characters, without spaces"
    return None


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _cookie_name(request: Request, base: str) -> str:
    return SECURE_PREFIX + base if is_https(request.scope) else base


def check_origin(request: Request) -> None:
    """403 unless an unsafe request comes from our own origin (when the browser says where it comes from)."""
    origin = request.headers.get("origin")
    if origin is not None:
        if origin.lower() != request_origin(request.scope):
            raise HTTPException(403, "Forbidden: this request came from another site (CSRF check failed).")
        return
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, "Forbidden: this request came from another site (CSRF check failed).")


class Sessions:
    """Creates, finds and ends sessions; derives and checks CSRF tokens."""

    def __init__(self, store: Store, db: Callable[..., Awaitable[Any]], vault: KeyVault, settings: Settings) -> None:
        self.store = store
        self._db = db
        self._csrf_key = vault.derive(b"taskdeck csrf token")
        self.ttl = settings.session_ttl
        self._watchers: dict[str, set[asyncio.Event]] = {}  # session hash -> events of its open streams
        self._watched_owner: dict[str, str] = {}  # session hash -> owner

    # -- tokens --------------------------------------------------------------------
    def _csrf(self, kind: str, secret: str) -> str:
        return hmac.new(self._csrf_key, f"{kind}:{secret}".encode(), hashlib.sha256).hexdigest()

    def cookie(self, request: Request) -> str | None:
        """The session token the browser sent, if any."""
        return request.cookies.get(_cookie_name(request, SESSION_COOKIE))

    async def owner_of(self, token: str) -> str | None:
        """The owner an unexpired session signs in, or None."""
        if not token or len(token) > 100:
            return None
        owner: str | None = await self._db(self.store.get_session, _hash(token), time.time())
        return owner

    def page_token(self, request: Request, response: Response, session: str | None) -> str:
        """The CSRF token a page embeds: the session's, or (signed out) the anonymous cookie's, set if missing."""
        if session is not None:
            return self._csrf("session", session)
        name = _cookie_name(request, ANON_COOKIE)
        anon = request.cookies.get(name)
        if not anon or len(anon) > 100:
            anon = secrets.token_urlsafe(32)
            response.set_cookie(name, anon, httponly=True, samesite="lax", path="/", secure=is_https(request.scope))
        return self._csrf("anon", anon)

    def check(self, request: Request, session: str | None) -> None:
        """403 unless an unsafe request is same-origin and carries the right CSRF token."""
        check_origin(request)
        sent = request.headers.get(CSRF_HEADER, "")
        expected = []
        if session is not None:
            expected.append(self._csrf("session", session))
        anon = request.cookies.get(_cookie_name(request, ANON_COOKIE))
        if session is None and anon:
            expected.append(self._csrf("anon", anon))
        if not sent or not any(hmac.compare_digest(sent, e) for e in expected):
            raise HTTPException(
                403,
                f"Forbidden: missing or wrong CSRF token. Reload the page and try again (scripts: send the "
                f"{CSRF_HEADER} header from GET /api/csrf, or use the x-api-key header instead of a cookie).",
            )

    # -- sessions --------------------------------------------------------------------
    async def start(self, request: Request, response: Response, owner: str) -> str:
        """A new session for ``owner`` (the browser's previous one ends); sets the cookie; returns its CSRF token."""
        old = self.cookie(request)
        if old:
            await self.end(old)
        token = secrets.token_urlsafe(32)
        now = time.time()
        await self._db(self.store.put_session, _hash(token), owner, now, now + self.ttl)
        response.set_cookie(
            _cookie_name(request, SESSION_COOKIE),
            token,
            max_age=int(self.ttl),
            httponly=True,
            samesite="lax",
            path="/",
            secure=is_https(request.scope),
        )
        return self._csrf("session", token)

    async def end(self, token: str) -> None:
        """Delete a session; its open event streams end."""
        id_hash = _hash(token)
        await self._db(self.store.delete_session, id_hash)
        self._wake(id_hash)

    def _wake(self, id_hash: str) -> None:
        self._watched_owner.pop(id_hash, None)
        for event in self._watchers.pop(id_hash, set()):
            event.set()

    async def end_all(self, owner: str) -> int:
        """Delete every session of ``owner``. Streams of this process end at once, others' at their next check."""
        count: int = await self._db(self.store.delete_sessions, owner)
        for id_hash in [h for h, o in self._watched_owner.items() if o == owner]:
            self._wake(id_hash)
        return count

    def clear_cookie(self, request: Request, response: Response) -> None:
        response.delete_cookie(
            _cookie_name(request, SESSION_COOKIE), path="/", secure=is_https(request.scope), httponly=True
        )

    @contextmanager
    def watch(self, token: str | None, owner: str) -> Iterator[asyncio.Event]:
        """An event set when the session ``token`` ends in this process (never set for None)."""
        event = asyncio.Event()
        if token is None:
            yield event
            return
        key = _hash(token)
        self._watchers.setdefault(key, set()).add(event)
        self._watched_owner[key] = owner
        try:
            yield event
        finally:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[key]
                    self._watched_owner.pop(key, None)

    async def still_valid(self, token: str | None) -> bool:
        """Whether a stream's session still exists (another process may have ended it)."""
        return token is None or await self.owner_of(token) is not None
