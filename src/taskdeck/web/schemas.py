"""The API's documented shapes: response models, request bodies and error answers, for ``/openapi.json``.

Request bodies are parsed strictly by ``api.json_body`` and checked with Parallel's
rules (taskspec.py), which say more than a schema can; the models here describe
them for readers and for schemathesis, which the test suite runs against the spec.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskdeck.models import TaskStatus
from taskdeck.processors import processor_names

__all__ = [
    "Check",
    "CsrfToken",
    "ErrorBody",
    "EventView",
    "KeyForgotten",
    "Session",
    "SignIn",
    "SignedOut",
    "TaskEnvelope",
    "TaskList",
    "TaskPage",
    "TaskRequest",
    "TaskSummary",
    "Track",
    "body_of",
    "error_responses",
]


class Problem(BaseModel):
    loc: list[str | int] = Field(description="Where: the path of the field, e.g. ['task_spec', 'output_schema']")
    msg: str = Field(description="What is wrong with it")
    type: str | None = None


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and what to do next, for people")
    problems: list[Problem] | None = Field(default=None, description="One entry per field at fault (422)")


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


_ERROR_TEXT = {
    400: "Bad request (e.g. a host name that is not served here)",
    401: "Not signed in, or the x-api-key header is not a key",
    403: "Forbidden: the CSRF check failed (cross-site request or missing x-csrf-token)",
    404: "No such task for this API key",
    409: "The task is in a state that does not allow this",
    413: "The request body is larger than the limit",
    415: "The body is not JSON",
    422: "A field is missing or wrong; `problems` names each one",
    502: "Parallel could not be reached",
}
error_responses: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _ERROR_TEXT.items()
}


def body_of(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` declaring ``model`` as the JSON request body (bodies are parsed by ``json_body``)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}
            },
        }
    }


# -- requests ---------------------------------------------------------------------------
class TaskRequest(BaseModel):
    """Parallel's TaskRunInput, plus ``follow_up_of`` (one of your task ids: continues that run's context)."""

    model_config = ConfigDict(extra="forbid")

    input: str | dict[str, Any] = Field(description="The question or the record to research", max_length=25_000)
    processor: str = Field(
        description="lite, base, core, core2x, pro, ultra, ... (and -fast variants)",
        json_schema_extra={"enum": list[Any](processor_names())},
    )
    task_spec: dict[str, Any] | None = Field(default=None, description="output_schema (text, json, auto), input_schema")
    metadata: dict[str, str | int | float | bool] | None = None
    source_policy: dict[str, Any] | None = None
    advanced_settings: dict[str, Any] | None = None
    enable_events: bool | None = None
    previous_interaction_id: str | None = None
    mcp_servers: list[dict[str, Any]] | None = None
    webhook: dict[str, Any] | None = None
    memory_scope_key: str | None = None
    follow_up_of: str | None = Field(default=None, pattern=r"^tsk_[0-9a-f]{24}$")


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: str = Field(description="Your Parallel API key", min_length=1, max_length=256)


class Track(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(description="A Parallel run id (trun_...)", pattern=r"^[A-Za-z0-9_-]{1,128}$")


# -- responses --------------------------------------------------------------------------
class CsrfToken(BaseModel):
    csrf_token: str = Field(description="Send it as the x-csrf-token header with unsafe requests of this browser")


class Session(BaseModel):
    key: str = Field(description="The signed-in key, masked: only its last four characters")
    csrf_token: str


class SignedOut(BaseModel):
    signed_out: bool = True
    csrf_token: str = Field(description="The token for signing in again")


class KeyForgotten(BaseModel):
    forgotten: bool = True
    runs_no_longer_followed: int = Field(description="Active runs this server stopped following (they go on upstream)")


class TaskSummary(BaseModel):
    """One row of the task list."""

    id: str
    status: TaskStatus
    processor: str
    input_preview: str
    run_id: str | None
    created_at: str | None
    completed_at: str | None
    submitted_at: str | None = Field(description="When the create was sent to Parallel")
    duration_seconds: float | None
    progress_meter: float | None
    cost_usd: float | None = Field(description="What Parallel bills for the run; null when no run was created")
    message: str | None
    follow_up_of: str | None = Field(description="The task this one follows up, if any")
    urls: dict[str, str]


class TaskEnvelope(BaseModel):
    task: TaskSummary


class TaskList(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null on the last page")


class Warning(BaseModel):
    type: str
    message: str
    detail: dict[str, Any] | None = None


class Check(BaseModel):
    """What ``POST /api/tasks`` would say about a request, without creating anything."""

    ok: bool = Field(description="True when the request would be accepted")
    problems: list[Problem] = Field(description="Each field at fault (what the create would answer with 422)")
    warnings: list[Warning] = Field(description="Non-blocking advice, as Parallel's own warnings")
    cost_usd: float | None = Field(description="The processor's price per run, when the processor is known")


class EventView(BaseModel):
    seq: int
    type: str
    origin: Literal["upstream", "taskdeck"]
    received_at: str | None
    upstream_ts: str | None
    data: Any


class TaskPage(TaskSummary):
    """Everything about one task."""

    price_usd: float | None = Field(description="What the run costs once Parallel created it (the processor's price)")
    interaction_id: str | None
    upstream_status: str | None
    request: dict[str, Any]
    first_event_at: str | None
    last_event_at: str | None
    warnings: list[dict[str, Any]] | None
    error: dict[str, Any] | None
    progress: dict[str, Any] | None
    output: dict[str, Any] | None
    code: dict[str, str] = Field(description="The request as json, curl and python, ready to copy")
    report: list[Any] | None = Field(
        description="A text output rendered from Markdown and sanitised, as a tree: a string is text; "
        "[tag, {attribute: value}, [children]] an element (only an allow-list of tags and attributes)"
    )
    follow_ups: list[TaskSummary] = Field(description="Tasks that follow this one up, oldest first")
    events: list[EventView]
