"""The batch pages: ``/batches`` (the key's batches, and a new one from a dropped table) and
``/batch/{id}`` (the live grid), each with its ``.json`` twin answering the same data."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from taskdeck.processors import PROCESSORS
from taskdeck.web.api import catalog_of
from taskdeck.web.auth import SIGN_IN_MESSAGE, Caller, optional_caller
from taskdeck.web.batchapi import BATCH_ID, batch_data, batch_summaries
from taskdeck.web.pages import not_found, render, sign_in_first

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


async def _batches_data(request: Request, who: Caller) -> dict[str, Any]:
    batches = await batch_summaries(request, who.owner, 100)
    settings = request.app.state.settings
    return {
        "batches": batches,
        "processors": [
            {"name": p.name, "usd_per_run": p.usd_per_run, "latency": p.latency_label} for p in PROCESSORS.values()
        ],
        "limits": {
            # What the guard enforces on the batch routes (never less than any body's limit).
            "max_upload_bytes": max(settings.max_upload_bytes, settings.max_body_bytes),
            "max_batch_rows": settings.max_batch_rows,
        },
    }


async def _who(request: Request) -> Caller:
    who = await optional_caller(request)
    if who is None:
        raise HTTPException(401, SIGN_IN_MESSAGE)
    return who


@router.get("/batches", response_class=HTMLResponse)
async def batches_html(request: Request) -> Response:
    who = await optional_caller(request)
    if who is None:
        return sign_in_first(request)
    data = await _batches_data(request, who)
    return render(request, "batches.html", who, {"data": data, "title": "Batches — Taskdeck"})


@router.get("/batches.json")
async def batches_json(request: Request) -> JSONResponse:
    """The batches page's data: the key's batches with their counts, and the processors to choose from."""
    return JSONResponse(await _batches_data(request, await _who(request)), headers={"cache-control": "no-store"})


@router.get("/batch/{batch_id}", response_class=HTMLResponse)
async def batch_html(request: Request, batch_id: str) -> Response:
    who = await optional_caller(request)
    if who is None:
        return sign_in_first(request)
    if not BATCH_ID.fullmatch(batch_id) or await catalog_of(request).batch(who.owner, batch_id) is None:
        return not_found(request, who, f"There is no batch {batch_id[:40]!r} for this API key.")
    data = await batch_data(request, who, batch_id)
    return render(request, "batch.html", who, {"data": data, "title": f"{data['batch']['name'][:80]} — Taskdeck"})


@router.get("/batch/{batch_id}.json")
async def batch_json(request: Request, batch_id: str) -> JSONResponse:
    """The batch page's data (its header: counts, rate, ETA, cost); rows come from /api/batches/{id}/rows."""
    return JSONResponse(await batch_data(request, await _who(request), batch_id), headers={"cache-control": "no-store"})
