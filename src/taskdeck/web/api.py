"""The REST API: sessions, tasks, and each task's live event stream (Server-Sent Events).

Every input is checked here before anything is stored or sent: request bodies are
strict JSON (jsonbody.py), path and query values have a shape, and every refusal
is a 4xx naming the field and saying what to do.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from taskdeck.engine import Engine, TaskChange
from taskdeck.engine.catalog import Catalog
from taskdeck.engine.feed import Subscription
from taskdeck.engine.intake import IntakeError, review_request
from taskdeck.engine.intake import field_problem as _problem
from taskdeck.jsonbody import JsonBodyError, parse_json, text_problem
from taskdeck.models import Event, Task, TaskStatus
from taskdeck.processors import PROCESSORS, get_processor
from taskdeck.upstream.client import UpstreamError
from taskdeck.vault import mask_key
from taskdeck.web import schemas
from taskdeck.web.auth import Caller, caller, optional_caller
from taskdeck.web.exports import EXPORT_FORMATS, ExportFormat, export_tasks
from taskdeck.web.sessions import Sessions, key_problem
from taskdeck.web.views import event_view, task_csv, task_page, task_summary

__all__ = ["TASK_ID", "Order", "catalog_of", "full_task", "list_page", "own_tasks", "router"]

router = APIRouter()
PING_SECONDS = 15.0
Auth = Annotated[Caller, Depends(caller)]
TASK_ID = re.compile(r"tsk_[0-9a-f]{24}")
RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
EVENT_ID = re.compile(r"[0-9]{1,18}")  # fits SQLite's 64-bit integers
# (created_at, id) of the last task of a page; the time as repr() writes it, so it round-trips exactly.
CURSOR = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,20})?):(tsk_[0-9a-f]{24})")
ERRORS = schemas.error_responses
Order = Literal["newest", "oldest"]
MAX_EXPORT = 1000  # tasks per export request


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def catalog_of(request: Request) -> Catalog:
    """The read service of stored tasks (the web layer never holds the store itself)."""
    catalog: Catalog = request.app.state.catalog
    return catalog


def _sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def json_body(request: Request) -> Any:
    """The request body as strict JSON (RFC 8259, storable text), or 415/422 saying what is wrong."""
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, "Send the body as JSON with Content-Type: application/json.")
    try:
        raw = await request.body()
    except ClientDisconnect:
        # The client went away mid-body (or the guard refused it as too large and answered 413).
        raise HTTPException(400, "The request body did not arrive whole; send it again.") from None
    try:
        return parse_json(raw)
    except JsonBodyError as err:
        raise _problem(list(err.loc) or ["body"], err.message) from None


Body = Annotated[Any, Depends(json_body)]


def _summary(task: Task) -> schemas.TaskSummary:
    return schemas.TaskSummary.model_validate(task_summary(task))


def _task_id(task_id: str) -> str:
    if not TASK_ID.fullmatch(task_id):
        raise HTTPException(404, f"No task {task_id[:40]!r} for this API key.")
    return task_id


async def own_tasks(request: Request, who: Caller, task_ids: list[str]) -> list[Task]:
    """The caller's tasks of these ids, in their order (duplicates once), or 404 naming one that is not theirs."""
    ids = list(dict.fromkeys(task_ids))
    found = {t.id: t for t in await catalog_of(request).get_many(ids)}
    for task_id in ids:
        if task_id not in found or found[task_id].owner != who.owner:
            raise HTTPException(404, f"No task {task_id[:40]!r} for this API key.")
    return [found[i] for i in ids]


async def _own_task(request: Request, who: Caller, task_id: str) -> Task:
    task = await catalog_of(request).owned(who.owner, _task_id(task_id))
    if task is None:
        raise HTTPException(404, f"No task {task_id!r} for this API key.")
    return task


# -- session ---------------------------------------------------------------------------
@router.get("/api/csrf", tags=["session"], responses=ERRORS)
async def csrf_token(request: Request, response: Response) -> schemas.CsrfToken:
    """A CSRF token for the next unsafe request of this browser (sent as the ``x-csrf-token`` header)."""
    who = await optional_caller(request)
    token = _sessions(request).page_token(request, response, who.session if who else None)
    return schemas.CsrfToken(csrf_token=token)


@router.post("/api/session", tags=["session"], responses=ERRORS, openapi_extra=schemas.body_of(schemas.SignIn))
async def sign_in(request: Request, response: Response, body: Body) -> schemas.Session:
    """Check a Parallel API key with one cheap upstream call, store it encrypted, start a new browser session.

    Needs the CSRF token of ``GET /api/csrf`` (or of the page) in ``x-csrf-token``.
    """
    sessions = _sessions(request)
    sessions.check(request, await _current_session(request))
    if not isinstance(body, dict) or not isinstance(body.get("api_key"), str):
        raise _problem(["api_key"], "required: your Parallel API key, as a string")
    key = body["api_key"].strip()
    problem = key_problem(key)
    if problem is not None:
        raise _problem(["api_key"], f"is not a Parallel API key: {problem}")
    engine = _engine(request)
    try:
        await engine.check_key(key)
    except UpstreamError as err:
        if err.status in (401, 403):
            raise HTTPException(401, "Parallel refused this API key. Check it (copy it again) and try again.") from None
        raise HTTPException(
            502, f"Could not reach Parallel to check the key ({err.status or 'network'}). Try again in a moment."
        ) from None
    owner = await engine.remember_key(key)
    token = await sessions.start(request, response, owner)
    return schemas.Session(key=mask_key(key), csrf_token=token)


async def _current_session(request: Request) -> str | None:
    sessions = _sessions(request)
    token = sessions.cookie(request)
    return token if token and await sessions.owner_of(token) else None


@router.get("/api/session", tags=["session"], responses=ERRORS)
async def whoami(request: Request, response: Response, who: Auth) -> schemas.Session:
    """The signed-in key, masked, and the CSRF token for this session."""
    token = _sessions(request).page_token(request, response, who.session)
    return schemas.Session(key=mask_key(who.api_key), csrf_token=token)


@router.delete("/api/session", tags=["session"], responses=ERRORS)
async def sign_out(request: Request, response: Response) -> schemas.SignedOut:
    """End this browser's session (its open event streams end too). The stored key stays: see ``DELETE /api/key``."""
    sessions = _sessions(request)
    token = await _current_session(request)
    if token is not None:
        sessions.check(request, token)
        await sessions.end(token)
    sessions.clear_cookie(request, response)
    return schemas.SignedOut(csrf_token=sessions.page_token(request, response, None))


@router.delete("/api/key", tags=["session"], responses=ERRORS)
async def forget_key(request: Request, response: Response, who: Auth) -> schemas.KeyForgotten:
    """Erase this API key from the server and end every session that uses it.

    Its runs go on at Parallel (and are billed) but are no longer followed: they are picked up again,
    from where they are, when the key is given again.
    """
    engine = _engine(request)
    stopped = await engine.forget_key(who.owner)
    await _sessions(request).end_all(who.owner)
    if who.session is not None:
        _sessions(request).clear_cookie(request, response)
    return schemas.KeyForgotten(runs_no_longer_followed=stopped)


# -- tasks -----------------------------------------------------------------------------
FOLLOW_UP_PROBLEM = "must be the id of one of your tasks (tsk_...)"


def _is_task_id(value: Any) -> bool:
    return isinstance(value, str) and TASK_ID.fullmatch(value) is not None


def _task_request(body: Any) -> tuple[dict[str, Any], Any]:
    """A create's body split into Parallel's TaskRunInput and Taskdeck's own ``follow_up_of``."""
    if not isinstance(body, dict):
        raise IntakeError(422, "body: must be a JSON object (a Parallel TaskRunInput)")
    request_body = dict(body)
    return request_body, request_body.pop("follow_up_of", None)


@router.post(
    "/api/tasks",
    tags=["tasks"],
    status_code=201,
    responses=ERRORS,
    openapi_extra=schemas.body_of(schemas.TaskRequest),
)
async def create_task(request: Request, who: Auth, body: Body) -> schemas.TaskEnvelope:
    """Submit a task: Parallel's own run request (TaskRunInput), plus optional ``follow_up_of``.

    The request is checked against Parallel's rules first; a mistake answers 422 naming the field,
    and nothing is stored.
    """
    request_body, follow_up_of = _task_request(body)
    if follow_up_of is not None and not _is_task_id(follow_up_of):
        raise _problem(["follow_up_of"], FOLLOW_UP_PROBLEM)
    task = await _engine(request).submit(who.api_key, request_body, follow_up_of=follow_up_of)
    return schemas.TaskEnvelope(task=_summary(task))


@router.post("/api/tasks/check", tags=["tasks"], responses=ERRORS, openapi_extra=schemas.body_of(schemas.TaskRequest))
async def check_task(request: Request, who: Auth, body: Body) -> schemas.Check:
    """Check a request with exactly the rules of ``POST /api/tasks``, creating nothing.

    The web form calls this as the person types: problems (what a create would refuse) and warnings
    (what Parallel would remark on), plus the run's price.
    """
    request_body, follow_up_of = _task_request(body)
    problems, warnings = await asyncio.to_thread(review_request, request_body)
    if follow_up_of is not None and not _is_task_id(follow_up_of):
        problems.append({"loc": ["follow_up_of"], "msg": FOLLOW_UP_PROBLEM})
    name = request_body.get("processor")
    processor = get_processor(name) if isinstance(name, str) else None
    return schemas.Check(
        ok=not problems,
        problems=[schemas.Problem.model_validate(p) for p in problems],
        warnings=[schemas.Warning.model_validate(w) for w in warnings],
        cost_usd=processor.usd_per_run if processor else None,
    )


@router.get("/api/export", tags=["tasks"], response_class=Response, responses=ERRORS)
async def export(
    request: Request,
    who: Auth,
    id: Annotated[list[str], Query()],
    format: Annotated[ExportFormat, Query()] = "csv",
) -> Response:
    """Several tasks' inputs, outputs and basis as CSV, JSON or JSON Lines (``?id=…&id=…``, at most 1,000)."""
    if len(id) > MAX_EXPORT:
        raise _problem(["query", "id"], f"{len(id)} tasks; export at most {MAX_EXPORT} at a time")
    for task_id in id:
        if not _is_task_id(task_id):
            raise _problem(["query", "id"], f"{task_id[:40]!r} is not a task id (tsk_...)")
    tasks = await own_tasks(request, who, id)
    body = await asyncio.to_thread(export_tasks, tasks, format)
    return Response(
        body,
        media_type=EXPORT_FORMATS[format],
        headers={"content-disposition": f'attachment; filename="taskdeck-{len(tasks)}-tasks.{format}"'},
    )


@router.get("/api/tasks", tags=["tasks"], responses=ERRORS)
async def list_tasks(
    request: Request,
    who: Auth,
    status: Annotated[list[TaskStatus] | None, Query()] = None,
    processor: Annotated[str | None, Query(max_length=40)] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=60)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    order: Annotated[Order, Query()] = "newest",
) -> schemas.TaskList:
    """The key's tasks, newest (or oldest) first, filtered by status, processor and text; ``cursor`` pages on."""
    page, next_cursor = await list_page(
        request, who, statuses=status, processor=processor, q=q, cursor=cursor, limit=limit, order=order
    )
    return schemas.TaskList(tasks=[_summary(t) for t in page], next_cursor=next_cursor)


async def list_page(
    request: Request,
    who: Caller,
    *,
    statuses: list[TaskStatus] | None,
    processor: str | None,
    q: str | None,
    cursor: str | None,
    limit: int,
    order: Order,
) -> tuple[list[Task], str | None]:
    """One page of the key's tasks and the cursor of the next (shared by the API and the home page)."""
    if processor is not None and processor not in PROCESSORS:
        raise _problem(["query", "processor"], f"unknown processor; one of {', '.join(PROCESSORS)}")
    if q is not None and (problem := text_problem(q)) is not None:
        raise _problem(["query", "q"], problem)
    page = await catalog_of(request).page(
        who.owner,
        statuses=[s.value for s in statuses] if statuses else None,
        processor=processor,
        text=q or None,
        limit=limit,
        before=_parse_cursor(cursor),
        oldest_first=order == "oldest",
    )
    after = page.next_before
    return page.tasks, None if after is None else f"{after[0]!r}:{after[1]}"


def _parse_cursor(cursor: str | None) -> tuple[float, str] | None:
    if not cursor:
        return None
    found = CURSOR.fullmatch(cursor)
    if found is None:
        raise _problem(["query", "cursor"], "not a cursor from this API; start without one")
    return float(found.group(1)), found.group(2)


@router.get("/api/tasks/stream", tags=["tasks"], response_class=StreamingResponse, responses=ERRORS)
async def tasks_stream(request: Request, who: Auth) -> StreamingResponse:
    """Server-Sent Events of the key's task list: a ``task`` event with the row whenever a task changes,
    a ``removed`` event (``{"id"}``) when one is deleted, a ``resync`` event when changes were too many
    to send one by one (read the list again)."""
    catalog = catalog_of(request)
    sessions = _sessions(request)

    async def changes() -> AsyncIterator[str]:
        with catalog.watch(owner=who.owner) as sub, sessions.watch(who.session, who.owner) as ended:
            async for item in _feed(request, sub, ended, lambda: sessions.still_valid(who.session)):
                if item is None:
                    yield ": ping\n\n"
                elif item is BEHIND:
                    # Changes were missed (too many at once for this client): the page reads its rows again.
                    yield "event: resync\ndata: {}\n\n"
                elif isinstance(item, TaskChange) and item.changes.get("deleted"):
                    yield f"event: removed\ndata: {json.dumps({'id': item.task_id})}\n\n"
                elif isinstance(item, TaskChange) and ("status" in item.changes or "progress_meter" in item.changes):
                    task = await catalog.get(item.task_id)
                    if task is not None:
                        yield f"event: task\ndata: {json.dumps(task_summary(task), separators=(',', ':'))}\n\n"

    return StreamingResponse(changes(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.get("/api/tasks/{task_id}", tags=["tasks"], responses=ERRORS)
async def get_task(request: Request, who: Auth, task_id: str) -> schemas.TaskEnvelope:
    """One task as in the list (``/task/{id}.json`` has everything, events included)."""
    return schemas.TaskEnvelope(task=_summary(await _own_task(request, who, task_id)))


@router.post("/api/tasks/{task_id}/resubmit", tags=["tasks"], responses=ERRORS)
async def resubmit_task(request: Request, who: Auth, task_id: str) -> schemas.TaskEnvelope:
    """Send a task that ended without a result (``submit_unknown``, ``rejected``, ``failed``) again, as a new run."""
    task = await _engine(request).resubmit(who.api_key, _task_id(task_id))
    return schemas.TaskEnvelope(task=_summary(task))


@router.delete("/api/tasks/{task_id}", tags=["tasks"], status_code=204, response_class=Response, responses=ERRORS)
async def delete_task(request: Request, who: Auth, task_id: str) -> Response:
    """Stop following a task, in any state, and remove it with all its events.

    Parallel has no cancel: a run it already created goes on and is billed.
    """
    await catalog_of(request).delete(who.owner, _task_id(task_id))
    return Response(status_code=204)


@router.post(
    "/api/track", tags=["tasks"], status_code=201, responses=ERRORS, openapi_extra=schemas.body_of(schemas.Track)
)
async def track_run(request: Request, who: Auth, body: Body) -> schemas.TaskEnvelope:
    """Adopt a run created elsewhere (``{"run_id": "trun_..."}``) and follow it from its current state."""
    run_id = body.get("run_id") if isinstance(body, dict) else None
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id.strip()):
        raise _problem(["run_id"], "required: a Parallel run id such as trun_... (letters, digits, _ and -)")
    task = await _engine(request).track(who.api_key, run_id.strip())
    return schemas.TaskEnvelope(task=_summary(task))


@router.get("/task/{task_id}.json", tags=["tasks"], response_model=schemas.TaskPage, responses=ERRORS)
async def task_json(request: Request, who: Auth, task_id: str) -> Response:
    """The complete task: request (and code to repeat it), run, result and whole event history."""
    task = await _own_task(request, who, task_id)
    # Serialised directly: validating 5,000 events through the model would only cost time.
    return JSONResponse(await full_task(request, task))


async def full_task(request: Request, task: Task) -> dict[str, Any]:
    """The task page's data: the task, its events and follow-ups (built off the event loop)."""
    catalog = catalog_of(request)
    events = await catalog.events(task.id)
    follow_ups = await catalog.follow_ups(task)
    return await asyncio.to_thread(task_page, task, events, follow_ups)


@router.get("/task/{task_id}.csv", tags=["tasks"], response_class=Response, responses=ERRORS)
async def task_csv_download(request: Request, who: Auth, task_id: str) -> Response:
    """The result as CSV (one header row, one row of values), safe to open in a spreadsheet."""
    task = await _own_task(request, who, task_id)
    return Response(
        task_csv(task),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{task.id}.csv"'},
    )


@router.get("/api/tasks/{task_id}/events", tags=["tasks"], response_class=StreamingResponse, responses=ERRORS)
async def task_events(
    request: Request,
    who: Auth,
    task_id: str,
    after: Annotated[str | None, Query(max_length=18, pattern=r"^[0-9]*$")] = None,
) -> StreamingResponse:
    """Server-Sent Events: the stored history after ``Last-Event-ID`` (or ``?after=``), then each new event.

    Ends after the task reaches a terminal status, when the session ends, or when the server stops;
    ``:`` pings keep idle connections alive.
    """
    task = await _own_task(request, who, task_id)
    raw = request.headers.get("last-event-id") or after or "0"
    if not EVENT_ID.fullmatch(raw):
        raise _problem(["header", "last-event-id"], "must be the id of an event of this stream (digits)")
    return StreamingResponse(
        _watched(_engine(request), task, _event_stream(request, who, task.id, int(raw))),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _watched(engine: Engine, task: Task, stream: AsyncIterator[str]) -> AsyncIterator[str]:
    """The stream, with a batch row's run stream open upstream while it is read (engine/viewers.py):
    a row's reasoning and sources show live only while someone looks at it."""
    async with engine.viewers.viewing(task), aclosing(stream) as frames:  # type: ignore[type-var]
        async for frame in frames:
            yield frame


class _Behind:
    """The subscriber fell behind: items were dropped, and what they said must be read from the store."""


BEHIND = _Behind()


async def _feed(
    request: Request, sub: Subscription, ended: asyncio.Event, still_valid: Callable[[], Awaitable[bool]]
) -> AsyncGenerator[Event | TaskChange | _Behind | None, None]:
    """A subscription's items as they come; None whenever it is quiet for PING_SECONDS (time to ping).

    When the subscriber fell behind (its queue overflowed, so the writer never waits for a slow
    reader), the queue starts afresh and ``BEHIND`` is yielded: the caller re-reads from the store
    what it missed, and later items it already has are skipped by their per-task sequence.
    Stops when the session ends (``ended``, or found gone at a ping) or when the server shuts down.
    """
    closing: asyncio.Event = request.app.state.closing
    while True:
        if sub.overflowed:
            sub.restart()
            yield BEHIND
            continue
        if not sub.queue.empty():
            yield sub.queue.get_nowait()
            continue
        if ended.is_set() or closing.is_set():
            return
        get = asyncio.ensure_future(sub.queue.get())
        stops = [asyncio.ensure_future(ended.wait()), asyncio.ensure_future(closing.wait())]
        try:
            done, _ = await asyncio.wait([get, *stops], timeout=PING_SECONDS, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when the client went away and this generator is closed mid-wait: no waiter is
            # left pending (asyncio would log "Task was destroyed but it is pending").
            for waiter in stops:
                waiter.cancel()
            if not get.done():
                get.cancel()
        if get in done and not get.cancelled():
            yield get.result()
            continue
        if done:
            return
        if not await still_valid():
            return
        yield None


def _frame(event: Event) -> str:
    # No event: line: browsers' EventSource delivers unnamed messages to one handler, and the
    # type (including kinds nobody knows yet) is in the data.
    return f"id: {event.seq}\ndata: {json.dumps(event_view(event), separators=(',', ':'))}\n\n"


async def _event_stream(request: Request, who: Caller, task_id: str, after: int) -> AsyncIterator[str]:
    catalog = catalog_of(request)
    sessions = _sessions(request)
    last = after
    # Subscribe first, then read the task and its history: a change committed in between is then
    # both in what we read and in the queue (skipped by seq), never in neither. The same read
    # runs again whenever the subscriber fell behind.
    with catalog.watch(task_id=task_id) as sub, sessions.watch(who.session, who.owner) as ended:
        feed = _feed(request, sub, ended, lambda: sessions.still_valid(who.session))
        async with aclosing(feed) as items:
            item: Event | TaskChange | _Behind | None = BEHIND
            while True:
                if item is BEHIND:
                    task = await catalog.get(task_id)
                    for event in await catalog.events(task_id, after_seq=last):
                        last = event.seq
                        yield _frame(event)
                    if task is None or task.status.is_terminal:
                        yield "event: end\ndata: {}\n\n"
                        return
                    # The status now: it may have changed since the page's render (or what was missed).
                    yield f"event: status\ndata: {json.dumps({'status': task.status.value})}\n\n"
                elif item is None:
                    yield ": ping\n\n"
                elif isinstance(item, Event):
                    if item.seq > last:
                        last = item.seq
                        yield _frame(item)
                elif isinstance(item, TaskChange):
                    status = item.changes.get("status")
                    if item.changes.get("deleted") or (isinstance(status, str) and TaskStatus(status).is_terminal):
                        yield "event: end\ndata: {}\n\n"
                        return
                    if isinstance(status, str):
                        # Taskdeck's own status (queued → running …), which upstream state events only
                        # give at the start and the end of a run.
                        yield f"event: status\ndata: {json.dumps({'status': status})}\n\n"
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    return
