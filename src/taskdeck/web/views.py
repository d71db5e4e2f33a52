"""Data functions: what each page or API answer shows, built once, rendered as JSON (and later HTML)."""

from __future__ import annotations

import csv
import functools
import io
import json
from datetime import UTC, datetime
from typing import Any

from taskdeck.models import Event, Task
from taskdeck.web.snippets import request_code

__all__ = ["compare_page", "event_view", "iso", "safe_cell", "task_csv", "task_page", "task_summary"]

# Cells a spreadsheet would read as a formula (OWASP "CSV injection"): = + - @, tab, carriage return.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def iso(ts: float | None) -> str | None:
    """Unix seconds as RFC 3339 UTC, or None."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _urls(task: Task) -> dict[str, str]:
    return {
        "self": f"/api/tasks/{task.id}",
        "page": f"/task/{task.id}",
        "json": f"/task/{task.id}.json",
        "csv": f"/task/{task.id}.csv",
        "events": f"/api/tasks/{task.id}/events",
    }


def task_summary(task: Task) -> dict[str, Any]:
    """One row of the task list."""
    duration = None
    if task.completed_at is not None and task.submitted_at is not None:
        duration = round(task.completed_at - task.submitted_at, 3)
    return {
        "id": task.id,
        "status": task.status.value,
        "processor": task.processor,
        "input_preview": task.input_preview(),
        "run_id": task.run_id,
        "created_at": iso(task.created_at),
        "completed_at": iso(task.completed_at),
        "submitted_at": iso(task.submitted_at),
        "duration_seconds": duration,
        "progress_meter": task.progress_meter,
        # Billed only once Parallel created the run: a refused create (402, 422) costs nothing.
        "cost_usd": task.cost_usd if task.run_id else None,
        "message": task.message,
        "follow_up_of": task.follow_up_of,
        "urls": _urls(task),
    }


def event_view(event: Event) -> dict[str, Any]:
    """A stored event as shown to people and scripts (the payload parsed, never re-written)."""
    return {
        "seq": event.seq,
        "type": event.type,
        "origin": event.origin.value,
        "received_at": iso(event.received_at),
        "upstream_ts": event.upstream_ts,
        "data": event.payload,
    }


def _report(task: Task) -> list[Any] | None:
    output = task.output or {}
    content = output.get("content")
    if output.get("type") != "text" or not isinstance(content, str):
        return None
    return _render_report(content, task.id)


@functools.lru_cache(maxsize=64)
def _render_report(content: str, doc_id: str) -> list[Any]:
    # A report never changes once stored, and each view of the page would parse it again.
    from taskdeck.web.markdown import render_report  # markdown-it is loaded on first use only

    return render_report(content, doc_id=doc_id)


def task_page(task: Task, events: list[Event], follow_ups: list[Task] | None = None) -> dict[str, Any]:
    """Everything about one task: the request sent, the run, the result, and the whole event history."""
    return {
        **task_summary(task),
        # What the run costs once created: the page shows it as soon as the run is (live, by its event).
        "price_usd": task.cost_usd,
        "interaction_id": task.interaction_id,
        "upstream_status": task.upstream_status,
        "request": task.request,
        "first_event_at": iso(task.first_event_at),
        "last_event_at": iso(task.last_event_at),
        "warnings": task.warnings,
        "error": task.error,
        "progress": task.progress,
        "output": task.output,
        "code": request_code(task.request),
        "report": _report(task),
        "follow_ups": [task_summary(t) for t in follow_ups or []],
        "events": [event_view(e) for e in events],
    }


def safe_cell(value: Any) -> str:
    """A CSV cell that no spreadsheet runs: text, with a leading ``'`` where it would start a formula."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)  # a number is data, never a formula: keep it a number
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def task_csv(task: Task) -> str:
    """The result as CSV: a header of the output's fields and one row of values (text output: one column).

    Nested values are written as JSON; every cell is neutralised against formula injection.
    """
    output = task.output or {}
    content = output.get("content")
    if output.get("type") == "text" or not isinstance(content, dict):
        row: dict[str, Any] = {"output": content if content is not None else ""}
    else:
        row = content
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([safe_cell(k) for k in row])
    writer.writerow([safe_cell(v) for v in row.values()])
    return buffer.getvalue()


def _fields(task: Task) -> dict[str, Any]:
    """A result's fields: JSON outputs by key, a text output as one field named ``output``."""
    output = task.output or {}
    content = output.get("content")
    if isinstance(content, dict):
        return content
    return {"output": content} if content is not None else {}


def compare_page(tasks: list[Task]) -> dict[str, Any]:
    """Several tasks' results side by side: one row per field, one column per task.

    Each cell holds the value with its confidence and citations, so a person sees what a larger
    processor buys them on the same question.
    """
    fields: list[str] = []
    for task in tasks:
        for name in _fields(task):
            if name not in fields:
                fields.append(name)
    rows = []
    for name in fields:
        cells = []
        for task in tasks:
            values = _fields(task)
            basis = next((b for b in (task.output or {}).get("basis") or [] if b.get("field") == name), None)
            is_report = (task.output or {}).get("type") == "text" and isinstance(values.get(name), str)
            cells.append(
                {
                    "task_id": task.id,
                    "present": name in values,
                    "value": values.get(name),
                    # Footnote anchors carry the task id: several reports share the compare page.
                    "report": _render_report(values[name], task.id) if is_report else None,
                    "confidence": basis.get("confidence") if basis else None,
                    "citations": basis.get("citations") or [] if basis else [],
                    "reasoning": basis.get("reasoning") if basis else None,
                }
            )
        rows.append({"field": name, "cells": cells})
    return {"tasks": [task_summary(t) for t in tasks], "fields": fields, "rows": rows}
