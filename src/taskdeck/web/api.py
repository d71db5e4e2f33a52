"""The REST API: sessions, tasks, and each task's live event stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from taskdeck.engine import Engine, TaskChange
from taskdeck.engine.feed import Subscription
from taskdeck.engine.intake import IntakeError
from taskdeck.models import Event, TaskStatus
from taskdeck.upstream.client import UpstreamError
from taskdeck.vault import mask_key
from taskdeck.web.auth import COOKIE, Caller, caller
from taskdeck.web.views import event_view, task_page, task_summary

__all__ = ["router"]

router = APIRouter()
PING_SECONDS = 15.0
Auth = Annotated[Caller, Depends(caller)]


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _refused(err: IntakeError) -> JSONResponse:
    return JSONResponse({"error": {"message": err.message, "problems": err.problems}}, status_code=err.status)


# -- session ---------------------------------------------------------------------------
@router.post("/api/session", tags=["session"])
async def sign_in(request: Request, response: Response, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Check a Parallel API key with one cheap upstream call, store it encrypted, set the session cookie."""
    key = body.get("api_key")
    if not isinstance(key, str) or not key.strip():
        raise HTTPException(422, "api_key: required, a non-empty string")
    key = key.strip()
    engine = _engine(request)
    owner = engine.vault.owner(key)
    try:
        # A run id that cannot exist: 404 proves the key works, 401/403 that it does not.
        await engine.upstream.retrieve(owner, key, "trun_" + "0" * 32)
    except UpstreamError as err:
        if err.status in (401, 403):
            raise HTTPException(401, "Parallel refused this API key; check it and try again.") from None
        if err.status != 404:
            raise HTTPException(
                502, f"Could not reach Parallel to check the key ({err.status or 'network'})."
            ) from None
    await engine.remember_key(key)
    response.set_cookie(COOKIE, engine.vault.session_token(owner), httponly=True, samesite="lax")
    return {"key": mask_key(key)}


@router.get("/api/session", tags=["session"])
async def whoami(who: Auth) -> dict[str, Any]:
    """The signed-in key, masked."""
    return {"key": mask_key(who.api_key)}


@router.delete("/api/session", tags=["session"], status_code=204)
async def sign_out(response: Response) -> Response:
    """Forget the key in this browser (the session cookie is cleared)."""
    response.delete_cookie(COOKIE)
    response.status_code = 204
    return response


# -- tasks -----------------------------------------------------------------------------
@router.post("/api/tasks", tags=["tasks"], status_code=201, response_model=None)
async def create_task(request: Request, who: Auth, body: Annotated[Any, Body()]) -> JSONResponse | dict[str, Any]:
    """Submit a task: Parallel's own run request (TaskRunInput), plus optional ``follow_up_of``.

    The request is checked against Parallel's rules first; a mistake answers 422 naming the field,
    and nothing is stored.
    """
    if not isinstance(body, dict):
        return _refused(IntakeError(422, "body: must be a JSON object (a Parallel TaskRunInput)"))
    request_body = dict(body)
    follow_up_of = request_body.pop("follow_up_of", None)
    if follow_up_of is not None and not isinstance(follow_up_of, str):
        return _refused(IntakeError(422, "follow_up_of: must be a task id"))
    try:
        task = await _engine(request).submit(who.api_key, request_body, follow_up_of=follow_up_of)
    except IntakeError as err:
        return _refused(err)
    return {"task": task_summary(task)}


@router.get("/api/tasks", tags=["tasks"])
async def list_tasks(
    request: Request,
    who: Auth,
    status: Annotated[list[TaskStatus] | None, Query()] = None,
    processor: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """The key's tasks, newest first, filtered by status, processor and text; ``cursor`` pages on."""
    engine = _engine(request)
    before = _parse_cursor(cursor)
    statuses = [s.value for s in status] if status else None
    tasks = await engine.db(
        lambda: engine.store.list_tasks(
            who.owner, statuses=statuses, processor=processor, text=q, limit=limit + 1, before=before
        )
    )
    page, more = tasks[:limit], len(tasks) > limit
    next_cursor = f"{page[-1].created_at!r}:{page[-1].id}" if more and page else None
    return {"tasks": [task_summary(t) for t in page], "next_cursor": next_cursor}


@router.post("/api/tasks/{task_id}/resubmit", tags=["tasks"], response_model=None)
async def resubmit_task(request: Request, who: Auth, task_id: str) -> JSONResponse | dict[str, Any]:
    """Send a ``submit_unknown``, ``rejected`` or ``failed`` task again, as a new run."""
    try:
        task = await _engine(request).resubmit(who.api_key, task_id)
    except IntakeError as err:
        return _refused(err)
    return {"task": task_summary(task)}


@router.delete("/api/tasks/{task_id}", tags=["tasks"], status_code=204, response_model=None)
async def delete_task(request: Request, who: Auth, task_id: str) -> Response:
    """Remove a finished task and all its events (a task still running is refused with 409)."""
    task = await _own_task(request, who, task_id)
    if not task.status.is_terminal:
        raise HTTPException(409, f"Task {task_id!r} is {task.status.value}; only finished tasks can be deleted.")
    engine = _engine(request)
    finished = [s.value for s in TaskStatus if s.is_terminal]
    if not await engine.db(lambda: engine.store.delete_task(task.id, only_if_status=finished)):
        raise HTTPException(409, f"Task {task_id!r} changed meanwhile; reload it.")
    return Response(status_code=204)


@router.post("/api/track", tags=["tasks"], status_code=201, response_model=None)
async def track_run(
    request: Request, who: Auth, body: Annotated[dict[str, Any], Body()]
) -> JSONResponse | dict[str, Any]:
    """Adopt a run created elsewhere (``{"run_id": "trun_..."}``) and follow it from its current state."""
    run_id = body.get("run_id")
    if not isinstance(run_id, str) or not run_id.strip():
        return _refused(IntakeError(422, "run_id: required, a Parallel run id such as trun_..."))
    try:
        task = await _engine(request).track(who.api_key, run_id.strip())
    except IntakeError as err:
        return _refused(err)
    return {"task": task_summary(task)}


@router.get("/api/tasks/stream", tags=["tasks"], response_model=None)
async def tasks_stream(request: Request, who: Auth) -> StreamingResponse:
    """Server-Sent Events of the key's task list: an ``task`` event with the row whenever a task changes."""
    engine = _engine(request)

    async def changes() -> AsyncIterator[str]:
        with engine.feed.subscribe(owner=who.owner) as sub:
            async for item in _feed(sub):
                if item is None:
                    yield ": ping\n\n"
                elif isinstance(item, TaskChange) and ("status" in item.changes or "progress_meter" in item.changes):
                    task = await engine.db(engine.store.get_task, item.task_id)
                    if task is not None:
                        yield f"event: task\ndata: {json.dumps(task_summary(task), separators=(',', ':'))}\n\n"

    return StreamingResponse(changes(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    stamp, _, task_id = cursor.partition(":")
    try:
        return float(stamp), task_id
    except ValueError:
        raise HTTPException(422, "cursor: not a cursor from this API; start without one") from None


async def _own_task(request: Request, who: Caller, task_id: str) -> Any:
    engine = _engine(request)
    task = await engine.db(engine.store.get_task, task_id)
    if task is None or task.owner != who.owner:
        raise HTTPException(404, f"No task {task_id!r} for this API key.")
    return task


@router.get("/task/{task_id}.json", tags=["tasks"])
async def task_json(request: Request, who: Auth, task_id: str) -> dict[str, Any]:
    """The complete task: request, run, result and whole event history."""
    task = await _own_task(request, who, task_id)
    engine = _engine(request)
    events = await engine.db(engine.store.events, task.id)
    return task_page(task, events)


@router.get("/api/tasks/{task_id}/events", tags=["tasks"], response_model=None)
async def task_events(request: Request, who: Auth, task_id: str) -> StreamingResponse:
    """Server-Sent Events: the stored history after ``Last-Event-ID`` (or ``?after=``), then each new event.

    Ends after the task reaches a terminal status; ``:`` pings keep idle connections alive.
    """
    task = await _own_task(request, who, task_id)
    raw = request.headers.get("last-event-id") or request.query_params.get("after") or "0"
    after = int(raw) if raw.isdigit() else 0
    return StreamingResponse(
        _event_stream(_engine(request), task.id, after, task.status.is_terminal),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _feed(sub: Subscription) -> AsyncIterator[Event | TaskChange | None]:
    """A subscription's items as they come, and None whenever it is quiet for PING_SECONDS (time to ping)."""
    while True:
        try:
            yield await asyncio.wait_for(sub.queue.get(), timeout=PING_SECONDS)
        except TimeoutError:
            yield None


def _frame(event: Event) -> str:
    # No event: line: browsers' EventSource delivers unnamed messages to one handler, and the
    # type (including kinds nobody knows yet) is in the data.
    return f"id: {event.seq}\ndata: {json.dumps(event_view(event), separators=(',', ':'))}\n\n"


async def _event_stream(engine: Engine, task_id: str, after: int, ended: bool) -> AsyncIterator[str]:
    # Subscribe before reading the history, so nothing committed in between is missed.
    with engine.feed.subscribe(task_id=task_id) as sub:
        last = after
        for event in await engine.db(lambda: engine.store.events(task_id, after_seq=after)):
            last = event.seq
            yield _frame(event)
        if ended:
            yield "event: end\ndata: {}\n\n"
            return
        async for item in _feed(sub):
            if item is None:
                yield ": ping\n\n"
            elif isinstance(item, Event):
                if item.seq > last:
                    last = item.seq
                    yield _frame(item)
            elif isinstance(item, TaskChange):
                status = item.changes.get("status")
                if isinstance(status, str) and TaskStatus(status).is_terminal:
                    yield "event: end\ndata: {}\n\n"
                    return
