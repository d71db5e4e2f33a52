"""The REST API of batches: check (the preview before paying), create or resume, list, one batch,
its rows (paged, filtered, or changed since the last poll of a live grid), retry failed rows, export.

A table arrives in the JSON body, as text (``content``), base64 bytes (``content_base64``: any
encoding the reader knows, byte-order marks included) or ready rows (``rows``: a list of objects).
Those two routes accept bodies up to ``TASKDECK_MAX_UPLOAD_BYTES`` (the guard), every other route
``TASKDECK_MAX_BODY_BYTES``. Nothing is stored before the whole table and spec are checked, and
creating needs ``confirm_cost_usd``: the total the check answered, so no script or click pays for
more than it was shown.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import itertools
import json
import math
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from taskdeck.batchinput import Table, TableError, read_table
from taskdeck.engine.batches import RowSource, plan_batch, resume_key, rows_cost
from taskdeck.engine.batchspec import spec_from_body
from taskdeck.engine.intake import field_problem as _problem
from taskdeck.models import TaskStatus
from taskdeck.processors import get_processor
from taskdeck.web.api import ERRORS, Auth, Body, catalog_of
from taskdeck.web.auth import Caller
from taskdeck.web.batchviews import FAILED, BatchFormat, batch_summary, export_batch, row_view

__all__ = ["BATCH_ID", "batch_data", "batch_summaries", "read_upload", "router"]

router = APIRouter()
BATCH_ID = re.compile(r"bat_[0-9a-f]{24}")
BODY_KEYS = ("name", "format", "content", "content_base64", "rows", "spec", "confirm_cost_usd")
PREVIEW_ROWS = 3
MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class Upload:
    """A table read from a request body: its name, columns, rows (read again on each call of ``rows``),
    digest and what a person should know."""

    name: str
    columns: list[str]
    rows: RowSource
    row_count: int
    digest: str
    warnings: list[str]
    kind: str


def _read_bytes(raw: bytes, kind: str, max_rows: int) -> tuple[Table, RowSource]:
    try:
        # Checked from end to end here; its rows are parsed again a page at a time when they are used
        # (a BytesIO needs no closing), so the body's bytes are the only copy of the table held.
        table = read_table(io.BytesIO(raw), kind=kind, limit_rows=max_rows)  # type: ignore[arg-type]
    except TableError as err:
        raise _problem(["content"], f"cannot be read as a table: {err}") from None
    return table, table.dicts


def _ready_rows(value: Any, max_rows: int) -> tuple[list[str], list[dict[str, Any]], str]:
    if not isinstance(value, list) or not value:
        raise _problem(["rows"], "must be a non-empty list of objects (one per row)")
    if len(value) > max_rows:
        raise _problem(["rows"], f"{len(value):,} rows; at most {max_rows:,} (TASKDECK_MAX_BATCH_ROWS)")
    columns: dict[str, None] = {}
    for i, row in enumerate(value):
        if not isinstance(row, dict):
            raise _problem(["rows", i], "must be an object of column: value")
        for key in row:
            columns.setdefault(key, None)
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return list(columns), [dict(r) for r in value], hashlib.sha256(canonical.encode()).hexdigest()


async def read_upload(body: Any, max_rows: int) -> Upload:
    """The table of a check or create body, or IntakeError naming the field."""
    if not isinstance(body, dict):
        raise _problem(["body"], "must be a JSON object with the table (content, content_base64 or rows) and a spec")
    unknown = sorted(set(body) - set(BODY_KEYS))
    if unknown:
        raise _problem([unknown[0]], f"unknown field; a batch body has {', '.join(BODY_KEYS)}")
    given = [k for k in ("content", "content_base64", "rows") if body.get(k) is not None]
    if len(given) != 1:
        raise _problem(["content"], "give the table once: content (text), content_base64 (a file's bytes) or rows")
    name = body.get("name", "table")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise _problem(["name"], f"must be the table's name (a file name), 1 to {MAX_NAME} characters")
    kind = body.get("format", "auto")
    if kind not in ("auto", "csv", "json", "jsonl"):
        raise _problem(["format"], "must be auto, csv, json or jsonl")
    if given[0] == "rows":
        columns, rows, digest = _ready_rows(body["rows"], max_rows)
        return Upload(name.strip(), columns, lambda: iter(rows), len(rows), digest, [], "rows")
    if given[0] == "content":
        if not isinstance(body["content"], str):
            raise _problem(["content"], "must be the table as text")
        raw = body["content"].encode()
    else:
        value = body["content_base64"]
        try:
            raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if not raw:
            raise _problem(["content_base64"], "must be the file's bytes in standard base64")
    table, source = await asyncio.to_thread(_read_bytes, raw, str(kind), max_rows)
    return Upload(name.strip(), table.columns, source, table.row_count, table.digest, table.warnings, table.kind)


def _max_rows(request: Request) -> int:
    rows: int = request.app.state.settings.max_batch_rows
    return rows


@router.post("/api/batches/check", tags=["batches"], responses=ERRORS)
async def check_batch(request: Request, who: Auth, body: Body) -> dict[str, Any]:
    """The preview before paying: the table as read (columns, rows, warnings), the first rows' exact
    requests, the total cost, and whether this table and spec were run before (then nothing is paid again).

    Creates nothing. ``POST /api/batches`` with the same body and ``confirm_cost_usd`` runs it.
    """
    upload = await read_upload(body, _max_rows(request))
    spec = spec_from_body(body.get("spec"), upload.columns)
    plan = await asyncio.to_thread(
        plan_batch, who.owner, upload.name, upload.columns, upload.rows, spec, upload.digest, holder=None, lease_ttl=0
    )
    found = await catalog_of(request).find_batch(who.owner, plan.batch.resume_key)
    sample = await asyncio.to_thread(lambda: list(itertools.islice(plan.tasks(), PREVIEW_ROWS)))
    return {
        "ok": True,
        "name": upload.name,
        "format": upload.kind,
        "columns": upload.columns,
        "row_count": plan.batch.row_count,
        "warnings": upload.warnings,
        "spec": spec,
        "sample": [{"index": t.row_index, "values": t.row_values, "request": t.request} for t in sample],
        "usd_per_row": plan.processor.usd_per_run,
        "cost_usd": plan.cost_usd,
        # Run before: creating again resumes that batch and pays nothing more.
        "resumes": None if found is None else {"batch_id": found.id, "url": f"/batch/{found.id}", "cost_usd": 0.0},
    }


@router.post("/api/batches", tags=["batches"], status_code=201, responses=ERRORS)
async def create_batch(request: Request, response: Response, who: Auth, body: Body) -> dict[str, Any]:
    """Run a table: one Parallel task group, one run per row. The same table and spec again resume the
    batch made before (200, ``resumed: true``) and pay for nothing twice.

    ``confirm_cost_usd`` must equal the total ``POST /api/batches/check`` answered (rows × price); to
    resume a batch made before, 0 confirms too.
    """
    upload = await read_upload(body, _max_rows(request))
    spec = spec_from_body(body.get("spec"), upload.columns)
    confirm = body.get("confirm_cost_usd")
    if not isinstance(confirm, int | float) or isinstance(confirm, bool) or not math.isfinite(confirm):
        raise _problem(["confirm_cost_usd"], "required: the total cost POST /api/batches/check answered, to confirm it")
    engine = request.app.state.engine
    # The same check a create makes, first: a wrong confirmation stores nothing and sends nothing.
    # Every row costs the processor's price (the check's total); engine.create_batch checks every row.
    total = rows_cost(get_processor(spec["processor"]), upload.row_count)
    # Resuming costs nothing: 0 confirms it too (the check answered resumes.cost_usd = 0).
    resumes = await catalog_of(request).find_batch(who.owner, resume_key(upload.digest, spec)) is not None
    if abs(float(confirm) - total) > 0.005 and not (resumes and float(confirm) == 0.0):
        raise _problem(
            ["confirm_cost_usd"],
            f"is {confirm}, but these {upload.row_count:,} rows cost ${total:,.4f}; check again and confirm that",
        )
    batch, resumed = await engine.create_batch(
        who.api_key, name=upload.name, columns=upload.columns, rows=upload.rows, spec=spec, digest=upload.digest
    )
    if resumed:
        response.status_code = 200
    summary = await batch_data(request, who, batch.id)
    return {**summary, "resumed": resumed, "warnings": upload.warnings}


@router.get("/api/batches", tags=["batches"], responses=ERRORS)
async def list_batches(request: Request, who: Auth, limit: Annotated[int, Query(ge=1, le=200)] = 50) -> dict[str, Any]:
    """The key's batches, newest first, each with its counts, rate, ETA and cost."""
    return {"batches": await batch_summaries(request, who.owner, limit)}


async def batch_summaries(request: Request, owner: str, limit: int) -> list[dict[str, Any]]:
    """The owner's batches, newest first, as summaries (the list route and the batches page)."""
    catalog = catalog_of(request)
    out = []
    for batch in await catalog.batches(owner, limit=limit):
        out.append(batch_summary(batch, await catalog.batch_counts(batch.id), await catalog.batch_cost(batch.id)))
    return out


def _batch_id(batch_id: str) -> str:
    if not BATCH_ID.fullmatch(batch_id):
        raise HTTPException(404, f"No batch {batch_id[:40]!r} for this API key.")
    return batch_id


async def batch_data(request: Request, who: Caller, batch_id: str) -> dict[str, Any]:
    """A batch's summary (the batch page's data and ``GET /api/batches/{id}``), or 404."""
    catalog = catalog_of(request)
    batch = await catalog.batch(who.owner, _batch_id(batch_id))
    if batch is None:
        raise HTTPException(404, f"No batch {batch_id!r} for this API key.")
    counts = await catalog.batch_counts(batch.id)
    return {"batch": batch_summary(batch, counts, await catalog.batch_cost(batch.id)), "now": time.time()}


@router.get("/api/batches/{batch_id}", tags=["batches"], responses=ERRORS)
async def get_batch(request: Request, who: Auth, batch_id: str) -> dict[str, Any]:
    """One batch: counts per status, rows done, failed and running, rate, ETA, cost so far and in all."""
    return await batch_data(request, who, batch_id)


@router.get("/api/batches/{batch_id}/rows", tags=["batches"], responses=ERRORS)
async def batch_rows(
    request: Request,
    who: Auth,
    batch_id: str,
    after: Annotated[int, Query(ge=-1, le=10**9, description="the last row index of the previous page")] = -1,
    limit: Annotated[int, Query(ge=1, le=2000)] = 500,
    status: Annotated[
        list[str] | None, Query(description="only rows of these statuses ('failed': every failure)")
    ] = None,
    changed_since: Annotated[float | None, Query(ge=0, description="only rows added or ended after this time")] = None,
) -> dict[str, Any]:
    """The batch's rows in input order: values, output, basis per field (citations, reasoning,
    confidence), status and error. A live grid polls with ``changed_since`` = the last answer's ``now``."""
    catalog = catalog_of(request)
    batch = await catalog.batch(who.owner, _batch_id(batch_id))
    if batch is None:
        raise HTTPException(404, f"No batch {batch_id!r} for this API key.")
    statuses: list[str] | None = None
    if status:
        statuses = []
        for value in status:
            if value == "failed":
                statuses += sorted(FAILED)
            elif value in {s.value for s in TaskStatus}:
                statuses.append(value)
            else:
                raise _problem(["query", "status"], f"{value[:40]!r} is not a status")
    now = time.time()
    # A little overlap: a row ended by another process whose clock runs behind is not missed.
    since = None if changed_since is None else changed_since - 5.0
    rows = await catalog.batch_rows(batch.id, after=after, limit=limit, statuses=statuses, changed_since=since)
    last = rows[-1].row_index if len(rows) == limit and rows else None
    return {"rows": [row_view(r) for r in rows], "next_after": last, "now": now}


@router.post("/api/batches/{batch_id}/retry", tags=["batches"], responses=ERRORS)
async def retry_batch(request: Request, who: Auth, batch_id: str) -> dict[str, Any]:
    """Add the failed, cancelled and rejected rows of a finished batch again, to the same task group.
    Only those rows are paid for again; every row keeps its place and task id."""
    engine = request.app.state.engine
    _, retried = await engine.retry_batch(who.api_key, _batch_id(batch_id))
    return {**await batch_data(request, who, batch_id), "retried": retried}


@router.get("/api/batches/{batch_id}/export", tags=["batches"], response_class=StreamingResponse, responses=ERRORS)
async def export(
    request: Request,
    who: Auth,
    batch_id: str,
    format: Annotated[BatchFormat, Query()] = "csv",
    basis: Annotated[bool, Query(description="add field__confidence, field__citations, field__reasoning")] = False,
) -> StreamingResponse:
    """Every row in input order (failed rows too, with their error) as CSV (spreadsheet-safe cells),
    JSON or JSON Lines; streamed page by page."""
    catalog = catalog_of(request)
    batch = await catalog.batch(who.owner, _batch_id(batch_id))
    if batch is None:
        raise HTTPException(404, f"No batch {batch_id!r} for this API key.")

    async def pager(after: int, limit: int) -> list[Any]:
        return await catalog.batch_rows(batch.id, after=after, limit=limit)

    media = {"csv": "text/csv; charset=utf-8", "json": "application/json", "jsonl": "application/x-ndjson"}[format]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", batch.name.rsplit(".", 1)[0])[:80] or "batch"
    return StreamingResponse(
        export_batch(batch, pager, format, basis=basis),
        media_type=media,
        headers={"content-disposition": f'attachment; filename="{stem}-enriched.{format}"'},
    )
