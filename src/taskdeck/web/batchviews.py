"""What a batch looks like to people and scripts: its summary (counts, rate, ETA, cost), its rows as
grid rows (values, outputs, basis per field), and its exports (CSV, JSON, JSON Lines) in row order.

Everything from upstream (outputs, citations, reasoning) stays data here; the page's script renders
it as text, and CSV cells are neutralised against formula injection (:func:`safe_cell`).
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from taskdeck.engine.batches import rows_cost
from taskdeck.engine.batchspec import output_fields
from taskdeck.models import Batch, BatchStatus, Task, TaskStatus
from taskdeck.processors import get_processor
from taskdeck.web.views import iso, safe_cell

__all__ = [
    "EXPORT_PAGE",
    "FAILED",
    "BatchFormat",
    "batch_summary",
    "export_batch",
    "row_basis",
    "row_view",
]

BatchFormat = Literal["csv", "json", "jsonl"]
FAILED = frozenset({TaskStatus.FAILED.value, TaskStatus.CANCELLED.value, TaskStatus.REJECTED.value})
EXPORT_PAGE = 1000  # rows read per store call while an export streams
# Reads one page of rows after a row index (the export never holds the whole batch).
RowPager = Callable[[int, int], Awaitable[list[Task]]]


def batch_summary(batch: Batch, counts: dict[str, int], cost_usd: float, now: float | None = None) -> dict[str, Any]:
    """The batch's header: counts per status, rows done/failed/running/queued, rate, ETA, cost so far and in all.

    ``waiting``: rows not yet added to the group; ``in_progress``: added and not ended, split into
    ``queued`` and ``running`` by the group's counts from Parallel (``upstream_counts``). The cost so
    far counts every run created, since Parallel bills a run when it is created.
    """
    now = time.time() if now is None else now
    done = counts.get(TaskStatus.COMPLETED.value, 0)
    failed = sum(n for s, n in counts.items() if s in FAILED)
    ended = done + failed
    waiting = counts.get(TaskStatus.PENDING.value, 0) + counts.get(TaskStatus.SUBMITTING.value, 0)
    in_progress = max(0, batch.row_count - ended - waiting)  # added to the group, not ended
    # A row learns its run's status only when the run ends; the group's counts (as Parallel last
    # reported them) tell the queued runs from the running ones. Unknown yet: all count as running.
    upstream = batch.upstream_counts
    running = in_progress if upstream is None else min(in_progress, upstream.get("running", 0))
    until = batch.completed_at if batch.completed_at is not None else now
    minutes = max(until - batch.created_at, 1e-6) / 60.0
    rate = ended / minutes if ended else 0.0
    left = batch.row_count - ended
    eta = None if batch.status == BatchStatus.COMPLETED or not rate else round(left / rate * 60.0, 1)
    processor = get_processor(str(batch.spec.get("processor")))
    price = processor.usd_per_run if processor else None
    return {
        "id": batch.id,
        "name": batch.name,
        "status": batch.status.value,
        "processor": batch.spec.get("processor"),
        "row_count": batch.row_count,
        "columns": batch.columns,
        "outputs": output_fields(batch.spec),
        "counts": counts,
        "done": done,
        "failed": failed,
        "running": running,
        "queued": in_progress - running,
        "in_progress": in_progress,
        "waiting": waiting,
        "upstream_counts": upstream,
        "percent": round(100.0 * ended / batch.row_count, 1) if batch.row_count else 100.0,
        "rows_per_minute": round(rate, 1),
        "eta_seconds": eta,
        "cost_usd": round(cost_usd, 4),
        "usd_per_row": price,
        "cost_usd_all_rows": rows_cost(processor, batch.row_count) if processor else None,
        "taskgroup_id": batch.taskgroup_id,
        "created_at": iso(batch.created_at),
        "completed_at": iso(batch.completed_at),
        "urls": {
            "self": f"/api/batches/{batch.id}",
            "page": f"/batch/{batch.id}",
            "json": f"/batch/{batch.id}.json",
            "rows": f"/api/batches/{batch.id}/rows",
            "retry": f"/api/batches/{batch.id}/retry",
            "export_csv": f"/api/batches/{batch.id}/export?format=csv",
            "export_csv_basis": f"/api/batches/{batch.id}/export?format=csv&basis=true",
            "export_json": f"/api/batches/{batch.id}/export?format=json",
            "export_jsonl": f"/api/batches/{batch.id}/export?format=jsonl",
        },
    }


def row_basis(row: Task) -> dict[str, dict[str, Any]]:
    """The row's basis by output field: citations (title, url, excerpts), reasoning, confidence."""
    found: dict[str, dict[str, Any]] = {}
    for item in (row.output or {}).get("basis") or []:
        if not isinstance(item, dict) or not isinstance(item.get("field"), str):
            continue
        citations = [
            {
                "title": c.get("title"),
                "url": c.get("url"),
                "excerpts": [e for e in c.get("excerpts") or [] if isinstance(e, str)],
            }
            for c in item.get("citations") or []
            if isinstance(c, dict)
        ]
        found[item["field"]] = {
            "citations": citations,
            "reasoning": item.get("reasoning"),
            "confidence": item.get("confidence"),
        }
    return found


def _error(row: Task) -> str | None:
    if row.error:
        message = row.error.get("message")
        return str(message) if message else json.dumps(row.error, ensure_ascii=False)
    return row.message if row.status.value in FAILED else None


def row_view(row: Task) -> dict[str, Any]:
    """One grid row: its place, status, input values, output (object or text), basis per field, error."""
    return {
        "index": row.row_index,
        "task_id": row.id,
        "status": row.status.value,
        "values": row.row_values or {},
        "output": (row.output or {}).get("content"),
        "basis": row_basis(row),
        "error": _error(row),
        "run_id": row.run_id,
        "url": f"/task/{row.id}",
    }


def _outputs_of(batch: Batch, row: Task) -> list[Any]:
    fields = output_fields(batch.spec)
    content = (row.output or {}).get("content")
    if isinstance(content, dict):
        return [content.get(f) for f in fields]
    return [content, *[None] * (len(fields) - 1)]  # a text (or auto) result fills the one column


def _text(value: Any) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def csv_header(batch: Batch, basis: bool) -> list[str]:
    """Input columns, output columns (with their basis columns when asked), status, error."""
    header = list(batch.columns)
    for field in output_fields(batch.spec):
        header.append(field)
        if basis:
            header += [f"{field}__confidence", f"{field}__citations", f"{field}__reasoning"]
    return [*header, "status", "error"]


def csv_cells(batch: Batch, row: Task, basis: bool) -> list[str]:
    """One row of the CSV export, every cell made safe for spreadsheets."""
    values = row.row_values or {}
    cells: list[Any] = [values.get(c) for c in batch.columns]
    grounds = row_basis(row) if basis else {}
    for field, value in zip(output_fields(batch.spec), _outputs_of(batch, row), strict=True):
        cells.append(value)
        if basis:
            ground = grounds.get(field) or {}
            urls = "\n".join(str(c.get("url") or "") for c in ground.get("citations") or [])
            cells += [ground.get("confidence"), urls, ground.get("reasoning")]
    cells += [row.status.value, _error(row)]
    return [safe_cell(_text(v)) if v is not None else "" for v in cells]


def export_record(row: Task, basis: bool) -> dict[str, Any]:
    """One row of the JSON and JSON Lines exports."""
    view = row_view(row)
    if not basis:
        view.pop("basis")
    view.pop("url")
    return view


async def export_batch(batch: Batch, pager: RowPager, fmt: BatchFormat, *, basis: bool) -> AsyncIterator[str]:
    """The batch's rows in input order, page by page, as CSV, a JSON document or JSON Lines."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if fmt == "csv":
        writer.writerow([safe_cell(c) for c in csv_header(batch, basis)])
    elif fmt == "json":
        head = {"batch": {"id": batch.id, "name": batch.name, "columns": batch.columns}}
        buffer.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "rows": [\n')
    after, first = -1, True
    while True:
        page = await pager(after, EXPORT_PAGE)
        for row in page:
            if fmt == "csv":
                writer.writerow(csv_cells(batch, row, basis))
            elif fmt == "jsonl":
                buffer.write(json.dumps(export_record(row, basis), ensure_ascii=False) + "\n")
            else:
                buffer.write(("" if first else ",\n") + json.dumps(export_record(row, basis), ensure_ascii=False))
            first = False
        if buffer.tell():
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        if len(page) < EXPORT_PAGE:
            break
        after = page[-1].row_index if page[-1].row_index is not None else after
    if fmt == "json":
        yield "\n]}\n"
