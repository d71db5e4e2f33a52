"""Exports of many tasks at once: CSV, JSON or JSON Lines of their inputs, outputs and basis.

One row (or object) per task. CSV gets one column per output field (the union over the tasks,
in first-seen order) plus the basis as JSON, every cell neutralised against formula injection.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any, Literal

from taskdeck.models import Task
from taskdeck.web.views import iso, safe_cell

__all__ = ["EXPORT_FORMATS", "ExportFormat", "export_record", "export_tasks"]

ExportFormat = Literal["csv", "json", "jsonl"]
EXPORT_FORMATS: dict[str, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "jsonl": "application/x-ndjson",
}


def export_record(task: Task) -> dict[str, Any]:
    """What an export says about one task: its request, its run and its result."""
    output = task.output or {}
    return {
        "id": task.id,
        "status": task.status.value,
        "processor": task.processor,
        "run_id": task.run_id,
        "created_at": iso(task.created_at),
        "completed_at": iso(task.completed_at),
        "cost_usd": task.cost_usd if task.run_id else None,
        "input": task.request.get("input"),
        "output_type": output.get("type"),
        "output": output.get("content"),
        "basis": output.get("basis"),
        "follow_up_of": task.follow_up_of,
    }


def _csv(records: list[dict[str, Any]]) -> Iterator[str]:
    fields: list[str] = []
    for record in records:
        content = record["output"]
        for name in content if isinstance(content, dict) else ["output"]:
            if name not in fields:
                fields.append(name)
    fixed = ["id", "status", "processor", "run_id", "created_at", "completed_at", "cost_usd", "input"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([safe_cell(c) for c in [*fixed, *(f"output.{f}" for f in fields), "basis"]])
    for record in records:
        content = record["output"]
        values = content if isinstance(content, dict) else {"output": content}
        row = [record[c] for c in fixed] + [values.get(f) for f in fields] + [record["basis"]]
        writer.writerow(["" if v is None else safe_cell(v) for v in row])
    yield buffer.getvalue()


def export_tasks(tasks: list[Task], fmt: ExportFormat) -> str:
    """The tasks in one of :data:`EXPORT_FORMATS`."""
    records = [export_record(t) for t in tasks]
    if fmt == "csv":
        return "".join(_csv(records))
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return json.dumps({"tasks": records}, ensure_ascii=False, indent=1)
