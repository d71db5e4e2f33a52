"""Who is calling: an API key from the ``x-api-key`` header, or the session cookie set by ``POST /api/session``.

The cookie holds only the owner hash, signed by the server; the key itself stays
encrypted in the store. Nothing here ever returns or logs a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from taskdeck.engine import Engine

__all__ = ["COOKIE", "Caller", "caller"]

COOKIE = "taskdeck_session"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the key's owner hash and the key (for upstream calls)."""

    owner: str
    api_key: str


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the caller, or 401 saying how to authenticate."""
    engine = _engine(request)
    key = request.headers.get("x-api-key")
    if key:
        return Caller(engine.vault.owner(key), key)
    token = request.cookies.get(COOKIE)
    owner = engine.vault.session_owner(token) if token else None
    if owner is not None:
        stored = await engine.api_key(owner)
        if stored is not None:
            return Caller(owner, stored)
    raise HTTPException(
        status_code=401,
        detail="No API key: send it in the x-api-key header, or sign in with POST /api/session.",
    )
