"""HTML pages. Each renders the same data function as its ``.json`` twin (see views.py)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from taskdeck.processors import PROCESSORS
from taskdeck.web.auth import caller
from taskdeck.web.views import task_page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
# Autoescaping is on for .html templates: upstream text in a page is always text.
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    return templates.TemplateResponse(
        request, "home.html", {"demo": request.app.state.demo, "processors": list(PROCESSORS.values())}
    )


@router.get("/task/{task_id}", response_class=HTMLResponse)
async def task_html(request: Request, task_id: str) -> Response:
    try:
        who = await caller(request)
    except Exception:
        return RedirectResponse("/", status_code=303)
    engine = request.app.state.engine
    task = await engine.db(engine.store.get_task, task_id)
    if task is None or task.owner != who.owner:
        return templates.TemplateResponse(
            request,
            "home.html",
            {"demo": request.app.state.demo, "processors": list(PROCESSORS.values())},
            status_code=404,
        )
    events = await engine.db(engine.store.events, task.id)
    return templates.TemplateResponse(
        request, "task.html", {"demo": request.app.state.demo, "task": task_page(task, events)}
    )
