"""The task list's cursor pages through every task once, whatever the clock's last digits."""

from __future__ import annotations

from dataclasses import replace

from web_helpers import Web

from taskdeck.engine.intake import key_record, new_task
from taskdeck.models import TaskStatus
from taskdeck.processors import get_processor
from taskdeck.store.base import InsertTask

KEY = "listing-key"


def test_paging_visits_every_task_exactly_once(web: Web) -> None:
    owner = web.engine.vault.owner(KEY)
    processor = get_processor("lite")
    done = TaskStatus.COMPLETED
    assert processor is not None
    # Times whose 7th+ decimals would round up if a cursor kept only 6: the task itself would come again.
    stamps = [1000.0000009, 1000.0000004, 1000.0000001, 999.9999996, 999.99999999, 1000.0]
    tasks = [
        replace(new_task(owner, {"input": f"t{i}", "processor": "lite"}, processor), created_at=stamp, status=done)
        for i, stamp in enumerate(stamps)
    ]
    web.engine.store.apply([key_record(web.engine.vault, KEY), *map(InsertTask, tasks)])
    seen: list[str] = []
    cursor = None
    with web.client(KEY) as client:
        for _ in range(len(stamps) + 1):  # bounded: a cursor that repeats a task would page for ever
            params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            page = client.get("/api/tasks", params=params).json()
            seen += [t["id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        else:
            raise AssertionError(f"paging did not end: {seen}")
    assert sorted(seen) == sorted(t.id for t in tasks) and len(seen) == len(tasks)
