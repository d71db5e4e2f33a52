"""Turning a request into a task: validation and the new task row, shared by every way in.

``Engine.submit`` leases the new task and starts at once; :func:`enqueue` only
stores it (``pending``, unleased) for whichever engine process claims it next,
which is how the CLI submits without a server.
"""

from __future__ import annotations

import time
from typing import Any

from taskdeck.config import Settings
from taskdeck.jsonbody import text_problems
from taskdeck.models import Task, TaskStatus, new_task_id
from taskdeck.processors import Processor, get_processor
from taskdeck.store.base import InsertTask, PutKey
from taskdeck.store.open import open_store
from taskdeck.taskspec import Problem, check_run_input
from taskdeck.vault import KeyVault

__all__ = [
    "TAG_KEY",
    "IntakeError",
    "enqueue",
    "enqueue_many",
    "field_problem",
    "key_record",
    "new_task",
    "review_request",
    "validate_request",
]

# The metadata key under which Taskdeck tags each run it creates with the task's submit token,
# so that a restarted process can find the run in its owner's task group (see follower.py).
TAG_KEY = "taskdeck_id"


class IntakeError(Exception):
    """A request refused before anything is stored: ``status`` fits HTTP, ``problems`` name the fields."""

    def __init__(self, status: int, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


def field_problem(loc: list[str | int], message: str, status: int = 422) -> IntakeError:
    """An error naming one field (``spec.outputs.0.name: …``), as every API refusal does."""
    path = ".".join(str(x) for x in loc)
    return IntakeError(status, f"{path}: {message}", [{"loc": loc, "msg": message, "type": "value_error"}])


def review_request(request: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every problem (as ``{"loc", "msg", "type"}``) and every warning of a TaskRunInput, without raising.

    The same rules as :func:`validate_request`, which the web form calls as the person types.
    """
    unstorable = text_problems(request)
    if unstorable:
        return [{"loc": list(loc), "msg": msg, "type": "value_error.text"} for loc, msg in unstorable], []
    check = check_run_input(request, known_fields_only=True)
    meta = request.get("metadata") if isinstance(request, dict) else None
    if isinstance(meta, dict) and TAG_KEY in meta:
        check.problems.append(Problem(("metadata", TAG_KEY), "is reserved: Taskdeck tags each run it creates with it"))
    name = request.get("processor") if isinstance(request, dict) else None
    if isinstance(name, str) and name and get_processor(name) is None:
        check.problems.append(Problem(("processor",), f"unknown processor {name!r}", "enum"))
    problems = [{"loc": list(p.loc), "msg": p.message, "type": p.kind} for p in check.problems]
    return problems, [w.to_wire() for w in check.warnings]


def validate_request(request: Any) -> tuple[dict[str, Any], Processor]:
    """Check a TaskRunInput with Parallel's rules; return it (events on unless set) and its processor.

    Also refused: fields TaskRunInput does not have, text no store can hold (lone
    surrogates, NUL), and the metadata key Taskdeck reserves for its own tag.
    """
    problems, _ = review_request(request)
    if problems:
        raise IntakeError(422, "; ".join(f"{_path(p['loc'])}: {p['msg']}" for p in problems), problems)
    processor = get_processor(request["processor"])
    assert processor is not None  # review_request refused unknown processors
    request = dict(request)
    if request.get("enable_events") is None:
        request["enable_events"] = True  # Taskdeck follows runs live; events cost nothing extra
    return request, processor


def _path(loc: Any) -> str:
    return str(Problem(tuple(loc), "")).removesuffix(": ")


def new_task(
    owner: str,
    request: dict[str, Any],
    processor: Processor,
    *,
    follow_up_of: str | None = None,
    holder: str | None = None,
    lease_ttl: float = 0.0,
) -> Task:
    """A ``pending`` task, leased to ``holder`` when given."""
    now = time.time()
    return Task(
        id=new_task_id(),
        owner=owner,
        processor=processor.name,
        request=request,
        status=TaskStatus.PENDING,
        created_at=now,
        cost_usd=processor.usd_per_run,
        follow_up_of=follow_up_of,
        lease_owner=holder,
        lease_expires=now + lease_ttl if holder else None,
    )


def key_record(vault: KeyVault, api_key: str) -> PutKey:
    """The write that stores a key: encrypted, under its owner hash, with its last four characters."""
    return PutKey(vault.owner(api_key), vault.encrypt(api_key), api_key[-4:] if len(api_key) > 4 else "", time.time())


def enqueue(settings: Settings, api_key: str, request: Any) -> Task:
    """Store a pending task (and the encrypted key) for an engine process to submit."""
    return enqueue_many(settings, api_key, [request])[0]


def enqueue_many(settings: Settings, api_key: str, requests: list[Any]) -> list[Task]:
    """Store pending tasks in one transaction; all or none (every request is checked first)."""
    if not api_key.strip():
        raise IntakeError(401, "An API key is required (set PARALLEL_API_KEY or pass --api-key).")
    vault = KeyVault.open(settings.secret_key, settings.db_path)
    owner = vault.owner(api_key)
    tasks = [new_task(owner, *validate_request(r)) for r in requests]
    store = open_store(settings.store_url)
    try:
        store.apply([key_record(vault, api_key), *map(InsertTask, tasks)])
    finally:
        store.close()
    return tasks
