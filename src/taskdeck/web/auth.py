"""Who is calling: an API key from the ``x-api-key`` header, or a browser session (see sessions.py).

A session names an owner; the key itself stays encrypted in the store. Unsafe
requests authenticated by the session cookie pass the CSRF check here, so no
route can forget it. Nothing here ever returns or logs a key.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from taskdeck.engine import Engine
from taskdeck.web.sessions import SAFE_METHODS, Sessions, key_problem

__all__ = ["SIGN_IN_MESSAGE", "Caller", "caller", "optional_caller"]

SIGN_IN_MESSAGE = "Enter your Parallel API key to continue (scripts: send it in the x-api-key header)."


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: the key's owner hash, the key (for upstream calls), and the session if any."""

    owner: str
    api_key: str
    session: str | None = None


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def optional_caller(request: Request) -> Caller | None:
    """The caller, or None when the request is not signed in. Raises 401/403 for a bad key or CSRF."""
    engine = _engine(request)
    key = request.headers.get("x-api-key")
    if key is not None:
        problem = key_problem(key)
        if problem is not None:
            raise HTTPException(401, f"The x-api-key header does not hold a Parallel API key: {problem}.")
        return Caller(engine.owner_of(key), key)
    sessions = _sessions(request)
    token = sessions.cookie(request)
    if not token:
        return None
    owner = await sessions.owner_of(token)
    if owner is None:
        return None
    if request.method not in SAFE_METHODS:
        sessions.check(request, token)
    stored = await engine.api_key(owner)
    if stored is None:
        return None  # the key was forgotten meanwhile
    return Caller(owner, stored, token)


async def caller(request: Request) -> Caller:
    """FastAPI dependency: the caller, or 401 saying what to do."""
    who = await optional_caller(request)
    if who is None:
        raise HTTPException(status_code=401, detail=SIGN_IN_MESSAGE)
    return who
