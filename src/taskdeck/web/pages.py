"""HTML pages. Each renders a data function whose result is also served as the page's ``.json`` twin.

The data travels in the page as ``<script type="application/json">`` (escaped by ``tojson``), and
the page's script renders it; the twin answers the same dict to scripts. Every page embeds the CSRF
token of its session (or, signed out, of the anonymous CSRF cookie) in ``<meta name="csrf-token">``;
common.js sends it with every unsafe request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from taskdeck.models import TaskStatus
from taskdeck.processors import PROCESSORS
from taskdeck.vault import mask_key
from taskdeck.web.api import TASK_ID, Order, catalog_of, full_task, list_page, own_tasks
from taskdeck.web.assets import asset_url
from taskdeck.web.auth import Caller, optional_caller
from taskdeck.web.sessions import Sessions
from taskdeck.web.views import compare_page, task_summary

__all__ = ["not_found", "not_found_page", "problem_page", "render", "router", "sign_in_first", "wants_page"]

router = APIRouter(include_in_schema=False)
# Autoescaping is on for .html templates: upstream text in a page is always text.
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["asset"] = asset_url
PAGE_SIZE = 50
MAX_COMPARE = 6


def _render(
    request: Request, name: str, who: Caller | None, context: dict[str, Any], status_code: int = 200
) -> Response:
    sessions: Sessions = request.app.state.sessions
    response = HTMLResponse("")
    csrf = sessions.page_token(request, response, who.session if who else None)
    page = templates.TemplateResponse(
        request,
        name,
        {"demo": request.app.state.demo, "csrf": csrf, "signed_in": who is not None, **context},
        status_code=status_code,
        headers={"cache-control": "no-store"},
    )
    for key, value in response.raw_headers:
        if key == b"set-cookie":
            page.raw_headers.append((key, value))
    return page


def _processors() -> list[dict[str, Any]]:
    return [
        {"name": p.name, "usd_per_run": p.usd_per_run, "latency": p.latency_label, "max_fields": p.max_fields}
        for p in PROCESSORS.values()
    ]


async def _home_data(
    request: Request,
    who: Caller | None,
    *,
    status: list[TaskStatus] | None,
    processor: str | None,
    q: str | None,
    cursor: str | None,
    order: Order,
    from_task: str | None,
) -> dict[str, Any]:
    """The home page: the key, the new-task form's choices (pre-filled from a task, for Edit & rerun), and one
    page of the task list with counts per status."""
    data: dict[str, Any] = {
        "signed_in": who is not None,
        "key": mask_key(who.api_key) if who else None,
        "processors": _processors(),
        "filters": {
            "status": [s.value for s in status or []],
            "processor": processor,
            "q": q,
            "order": order,
            "cursor": cursor,
        },
        "counts": {},
        "total": 0,
        "tasks": [],
        "next_cursor": None,
        "prefill": None,
    }
    if who is None:
        return data
    catalog = catalog_of(request)
    page, next_cursor = await list_page(
        request, who, statuses=status, processor=processor, q=q, cursor=cursor, limit=PAGE_SIZE, order=order
    )
    counts = await catalog.counts(who.owner, processor=processor)
    data.update(
        counts=counts,
        total=sum(counts.values()),
        tasks=[task_summary(t) for t in page],
        next_cursor=next_cursor,
    )
    if from_task is not None:
        source = await catalog.owned(who.owner, from_task) if TASK_ID.fullmatch(from_task) else None
        if source is None:
            raise HTTPException(404, f"No task {from_task[:40]!r} for this API key.")
        data["prefill"] = {"task_id": source.id, "request": source.request, "input_preview": source.input_preview()}
    return data


StatusQuery = Annotated[list[TaskStatus] | None, Query()]
TextQuery = Annotated[str | None, Query(max_length=200)]
ProcessorQuery = Annotated[str | None, Query(max_length=40)]
CursorQuery = Annotated[str | None, Query(max_length=60)]
FromQuery = Annotated[str | None, Query(alias="from", max_length=40)]


async def _home_view(
    request: Request,
    status: StatusQuery = None,
    processor: ProcessorQuery = None,
    q: TextQuery = None,
    cursor: CursorQuery = None,
    order: Order = "newest",
    from_task: FromQuery = None,
) -> tuple[Caller | None, dict[str, Any]]:
    """The caller and the home page's data, from the page's query (shared by the page and its twin)."""
    who = await optional_caller(request)
    data = await _home_data(
        request, who, status=status, processor=processor, q=q, cursor=cursor, order=order, from_task=from_task
    )
    return who, data


HomeView = Annotated[tuple[Caller | None, dict[str, Any]], Depends(_home_view)]


@router.get("/", response_class=HTMLResponse)
async def home(request: Request, view: HomeView) -> Response:
    who, data = view
    return _render(request, "home.html", who, {"data": data, "title": "Taskdeck"})


@router.get("/index.json")
async def home_json(view: HomeView) -> JSONResponse:
    """The home page's data (its ``.json`` twin)."""
    return JSONResponse(view[1], headers={"cache-control": "no-store"})


def _sign_in_first(request: Request) -> Response:
    # Back to this very page after signing in; `next` is a local path (checked again by the page).
    asked = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/?next=" + quote(asked, safe=""), status_code=303)


def wants_page(request: Request) -> bool:
    """A person's browser asking for a page (not a script, not the API)."""
    path = request.url.path
    return (
        not path.startswith(("/api/", "/static/"))
        and not path.endswith(".json")
        and ("text/html" in request.headers.get("accept", ""))
    )


async def not_found_page(request: Request) -> Response:
    """The 404 page for any path nobody serves."""
    try:
        who = await optional_caller(request)
    except HTTPException:
        who = None
    return _not_found(request, who, "There is no page at this address.")


def _not_found(request: Request, who: Caller | None, what: str) -> Response:
    return _render(request, "notfound.html", who, {"what": what, "title": "Not found — Taskdeck"}, status_code=404)


async def problem_page(request: Request, status: int, message: str) -> Response:
    """A person's request that cannot be shown (a bad filter in the address, a compare of one task): say why."""
    try:
        who = await optional_caller(request)
    except HTTPException:
        who = None
    context = {"what": message, "heading": "Cannot show this page", "title": "Cannot show this page — Taskdeck"}
    return _render(request, "notfound.html", who, context, status_code=status)


@router.get("/task/{task_id}", response_class=HTMLResponse)
async def task_html(request: Request, task_id: str) -> Response:
    who = await optional_caller(request)
    if who is None:
        return _sign_in_first(request)
    task = await catalog_of(request).owned(who.owner, task_id) if TASK_ID.fullmatch(task_id) else None
    if task is None:
        return _not_found(request, who, f"There is no task {task_id[:40]!r} for this API key.")
    data = await full_task(request, task)
    title = (task.input_preview() or task.id)[:80]
    return _render(request, "task.html", who, {"task": data, "title": f"{title} — Taskdeck"})


async def _compare_data(request: Request, who: Caller, ids: list[str]) -> dict[str, Any]:
    ids = list(dict.fromkeys(ids))
    if not 2 <= len(ids) <= MAX_COMPARE or not all(TASK_ID.fullmatch(i) for i in ids):
        raise HTTPException(422, f"id: pick 2 to {MAX_COMPARE} of your tasks to compare (?id=tsk_…&id=tsk_…)")
    return compare_page(await own_tasks(request, who, ids))


IdsQuery = Annotated[list[str], Query(max_length=40)]


@router.get("/compare", response_class=HTMLResponse)
async def compare_html(request: Request, id: IdsQuery = []) -> Response:  # noqa: B006 (FastAPI copies it)
    who = await optional_caller(request)
    if who is None:
        return _sign_in_first(request)
    try:
        data = await _compare_data(request, who, id)
    except HTTPException as err:
        if err.status_code == 404:
            return _not_found(request, who, str(err.detail))
        return await problem_page(request, err.status_code, str(err.detail))
    return _render(request, "compare.html", who, {"data": data, "title": "Compare — Taskdeck"})


@router.get("/compare.json")
async def compare_json(request: Request, id: IdsQuery = []) -> JSONResponse:  # noqa: B006 (FastAPI copies it)
    """The compare page's data: one row per output field, one cell per task."""
    who = await optional_caller(request)
    if who is None:
        raise HTTPException(401, "Enter your Parallel API key to continue (scripts: send it in the x-api-key header).")
    return JSONResponse(await _compare_data(request, who, id))


# Shared with the batch pages (batchpages.py), which render the same way.
render = _render
sign_in_first = _sign_in_first
not_found = _not_found
