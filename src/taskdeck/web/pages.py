"""HTML pages. Each renders the same data function as its ``.json`` twin (see views.py).

Every page embeds the CSRF token of its session (or, signed out, of the anonymous
CSRF cookie) in ``<meta name="csrf-token">``; common.js sends it with every
unsafe request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from taskdeck.processors import PROCESSORS
from taskdeck.web.api import TASK_ID
from taskdeck.web.auth import Caller, optional_caller
from taskdeck.web.sessions import Sessions
from taskdeck.web.views import task_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
# Autoescaping is on for .html templates: upstream text in a page is always text.
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _render(
    request: Request, name: str, who: Caller | None, context: dict[str, Any], status_code: int = 200
) -> Response:
    sessions: Sessions = request.app.state.sessions
    response = HTMLResponse("")
    csrf = sessions.page_token(request, response, who.session if who else None)
    page = templates.TemplateResponse(
        request,
        name,
        {"demo": request.app.state.demo, "csrf": csrf, **context},
        status_code=status_code,
        headers={"cache-control": "no-store"},
    )
    for key, value in response.raw_headers:
        if key == b"set-cookie":
            page.raw_headers.append((key, value))
    return page


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    who = await optional_caller(request)
    return _render(request, "home.html", who, {"processors": list(PROCESSORS.values())})


@router.get("/task/{task_id}", response_class=HTMLResponse)
async def task_html(request: Request, task_id: str) -> Response:
    who = await optional_caller(request)
    if who is None:
        return RedirectResponse("/", status_code=303)
    engine = request.app.state.engine
    task = await engine.db(engine.store.get_task, task_id) if TASK_ID.fullmatch(task_id) else None
    if task is None or task.owner != who.owner:
        return _render(request, "home.html", who, {"processors": list(PROCESSORS.values())}, status_code=404)
    events = await engine.db(engine.store.events, task.id)
    return _render(request, "task.html", who, {"task": task_page(task, events)})
