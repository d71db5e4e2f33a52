"""The emulator's HTTP surface: Parallel's Task API routes plus ``/_emulator`` introspection.

Status codes and bodies follow the contract and the OpenAPI spec: run routes
answer errors with ``ErrorResponse`` (``{"type":"error","error":{...}}``), group
routes answer validation errors with ``HTTPValidationError`` (``{"detail":[...]}``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from taskdeck.emulator.directives import DirectiveError, Directives, parse_directives
from taskdeck.emulator.group import Group, parse_event_id, parse_run_cursor
from taskdeck.emulator.metrics import StreamMetrics
from taskdeck.emulator.run import Run
from taskdeck.emulator.settings import EmulatorSettings
from taskdeck.emulator.sse import SseWriter
from taskdeck.emulator.state import EmulatorState
from taskdeck.emulator.streams import stream_group_events, stream_group_runs, stream_run_events
from taskdeck.processors import get_processor
from taskdeck.taskspec import Problem, RunInputCheck, check_run_input, check_task_spec

__all__ = ["create_app"]

MAX_GROUP_INPUTS = 1000
Faults = dict[str, float | None]


# -- responses -------------------------------------------------------------------
def error_response(
    status: int, message: str, detail: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Parallel's ``ErrorResponse`` body."""
    body = {"type": "error", "error": {"ref_id": str(uuid.uuid4()), "message": message, "detail": detail}}
    return JSONResponse(body, status_code=status, headers=headers)


def problems_response(problems: list[Problem]) -> JSONResponse:
    """422 ``ErrorResponse`` for run routes, naming every problem."""
    message = "; ".join(str(p) for p in problems)
    detail = {"errors": [{"loc": list(p.loc), "msg": p.message, "type": p.kind} for p in problems]}
    return error_response(422, f"Invalid request: {message}", detail)


def validation_response(problems: list[Problem]) -> JSONResponse:
    """422 ``HTTPValidationError`` for group routes."""
    detail = [
        {"loc": ["body", *p.loc] if p.loc[:1] != ("query",) else list(p.loc), "msg": p.message, "type": p.kind}
        for p in problems
    ]
    return JSONResponse({"detail": detail}, status_code=422)


class SseResponse(Response):
    """A response that hands the raw ASGI channel to an SSE writer."""

    def __init__(
        self,
        serve: Callable[[SseWriter], Awaitable[None]],
        faults: Faults,
        on_open: Callable[[], None],
        on_close: Callable[[], None],
    ) -> None:
        super().__init__(status_code=200)
        self.serve = serve
        self.faults = faults
        self.on_open = on_open
        self.on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        f = self.faults
        writer = SseWriter(
            send,
            receive,
            crlf="crlf" in f,
            drop_after=int(f["drop"] or 0) if "drop" in f else None,
            keepalive=f.get("keepalive"),
        )
        self.on_open()
        try:
            await writer.start()
            await self.serve(writer)
        finally:
            self.on_close()
            await writer.finish()


# -- request plumbing ------------------------------------------------------------
def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


class Refused(Exception):
    """Raised inside a handler to answer at once with ``response``."""

    def __init__(self, response: Response) -> None:
        self.response = response


def _authenticate(request: Request) -> str:
    state = _state(request)
    key = request.headers.get("x-api-key")
    verdict = state.check_key(key)
    if verdict.status is not None or key is None:
        raise Refused(error_response(verdict.status or 401, verdict.message))
    request.scope["emulator_key"] = key
    return key


def _request_faults(request: Request, target: str, run: Run | None = None) -> Faults:
    """Faults that fire for this request: global, then the run's, then the request header's."""
    state = _state(request)
    try:
        header = parse_directives(request.headers.get("x-emulator"), allow_run_only=False)
    except DirectiveError as exc:
        raise Refused(error_response(400, f"x-emulator header: {exc}")) from None
    fired = state.global_faults.take(target, state.rng)
    if run is not None:
        fired.update(run.directives.take(target, state.rng))
    fired.update(header.take(target, state.rng))
    return fired


async def _apply_connect_faults(faults: Faults, *, stream: bool) -> None:
    if "error" in faults:
        code = int(faults["error"] or 500)
        raise Refused(error_response(code, f"Emulated upstream failure ({code}); retry with backoff."))
    if "ratelimit" in faults:
        wait = float(faults["ratelimit"] or 1)
        raise Refused(
            error_response(429, "Rate limit exceeded (emulated); retry later.", headers={"retry-after": f"{wait:g}"})
        )
    if "hang" in faults and not stream:
        await asyncio.sleep(float(faults["hang"] or 0))


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Refused(problems_response([Problem(("body",), f"is not valid JSON: {exc}", "json_invalid")])) from None


def _run_directives(request: Request, body: dict[str, Any], loc: tuple[str | int, ...]) -> Directives:
    parts = []
    header = request.headers.get("x-emulator-run")
    if header:
        parts.append(header)
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("emulator"), str):
        parts.append(meta["emulator"])
    try:
        return parse_directives(";".join(parts))
    except DirectiveError as exc:
        raise Refused(problems_response([Problem((*loc, "metadata", "emulator"), str(exc))])) from None


def _rate_limit(state: EmulatorState, key: str) -> None:
    wait = state.take_create_slot(key)
    if wait is not None:
        raise Refused(
            error_response(
                429,
                f"Rate limit exceeded: {state.settings.rate_limit_per_minute} run-creating requests per minute "
                "per API key.",
                headers={"retry-after": str(max(1, round(wait)))},
            )
        )


RUN_NOT_FOUND = "Run id not found"


def _lookup_run(request: Request, key: str) -> Run:
    run = _state(request).lookup_run(key, request.path_params["run_id"])
    if run is None:
        raise Refused(error_response(404, RUN_NOT_FOUND))
    return run


def _lookup_group(request: Request, key: str) -> Group:
    group = _state(request).lookup_group(key, request.path_params["taskgroup_id"])
    if group is None:
        raise Refused(error_response(404, "Task group not found"))
    return group


def _query_bool(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise Refused(validation_response([Problem(("query", name), "must be true or false", "bool_parsing")]))


Handler = Callable[[Request], Awaitable[Response]]


def endpoint(route: str) -> Callable[[Handler], Handler]:
    """Name a handler for the metrics and turn :class:`Refused` into its response."""

    def wrap(fn: Handler) -> Handler:
        async def handler(request: Request) -> Response:
            request.scope["emulator_route"] = route
            try:
                return await fn(request)
            except Refused as refused:
                return refused.response

        handler.__name__ = fn.__name__
        handler.__doc__ = fn.__doc__
        return handler

    return wrap


def _stream_response(
    state: EmulatorState,
    table: dict[str, StreamMetrics],
    ident: str,
    serve: Callable[[SseWriter], Awaitable[None]],
    faults: Faults,
) -> SseResponse:
    sm = state.metrics.stream(table, ident)
    return SseResponse(serve, faults, lambda: state.metrics.stream_opened(sm), lambda: state.metrics.stream_closed(sm))


# -- runs ------------------------------------------------------------------------
@endpoint("create_run")
async def create_run(request: Request) -> Response:
    """POST /v1/tasks/runs → 202 TaskRun."""
    state = _state(request)
    key = _authenticate(request)
    body = await _json_body(request)
    await _apply_connect_faults(_request_faults(request, "create"), stream=False)
    _rate_limit(state, key)
    # Schema checks can cost real CPU (bounded, see taskspec): off the event loop, as in Taskdeck.
    check = await asyncio.to_thread(check_run_input, body)
    if not check.ok:
        return problems_response(check.problems)
    processor = get_processor(body["processor"])
    if processor is None:
        return error_response(403, f"Processor {body['processor']!r} is not available for this API key.")
    credit = state.check_credit(key)
    if credit.status is not None:
        return error_response(credit.status, credit.message)
    directives = _run_directives(request, body, ())
    run = state.create_run(key, body, processor, check.warnings, directives)
    return JSONResponse(run.wire(0.0), status_code=202)


@endpoint("retrieve_run")
async def retrieve_run(request: Request) -> Response:
    """GET /v1/tasks/runs/{run_id} → TaskRun."""
    key = _authenticate(request)
    run = _lookup_run(request, key)
    await _apply_connect_faults(_request_faults(request, "get", run), stream=False)
    return JSONResponse(run.wire(run.elapsed()))


@endpoint("run_input")
async def run_input(request: Request) -> Response:
    """GET /v1/tasks/runs/{run_id}/input → TaskRunInput, as it was sent."""
    key = _authenticate(request)
    run = _lookup_run(request, key)
    await _apply_connect_faults(_request_faults(request, "get", run), stream=False)
    return JSONResponse(run.request)


@endpoint("run_result")
async def run_result(request: Request) -> Response:
    """GET /v1/tasks/runs/{run_id}/result?timeout= → long-poll for the result."""
    key = _authenticate(request)
    raw = request.query_params.get("timeout", "600")
    try:
        timeout = int(raw)
        if timeout < 0:
            raise ValueError
    except ValueError:
        return problems_response([Problem(("query", "timeout"), "must be a whole number of seconds, 0 or more")])
    run = _lookup_run(request, key)
    await _apply_connect_faults(_request_faults(request, "get", run), stream=False)
    give_up = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        elapsed = run.elapsed(now)
        if run.vanished(elapsed):
            # Forgotten while this long-poll waited: answer as if the id had never existed.
            return error_response(404, RUN_NOT_FOUND)
        if run.is_done(elapsed):
            if run.fails:
                message = run.wire(elapsed)["error"]["message"]
                return error_response(404, f"Run failed: {message}", {"run_id": run.run_id, "status": "failed"})
            return JSONResponse(run.result(elapsed))
        if now >= give_up:
            return error_response(408, "Request timed out; run still active")
        await asyncio.sleep(min(give_up, run.created_mono + run.ends_at, run.vanishes_mono) - now)


@endpoint("run_events")
async def run_events(request: Request) -> Response:
    """GET /v1/tasks/runs/{run_id}/events (and /v1beta/...) → SSE."""
    state = _state(request)
    key = _authenticate(request)
    run = _lookup_run(request, key)
    faults = _request_faults(request, "events", run)
    await _apply_connect_faults(faults, stream=True)
    lifetime = state.settings.scaled(state.settings.stream_lifetime)

    async def serve(writer: SseWriter) -> None:
        await stream_run_events(writer, run, lifetime, faults)

    return _stream_response(state, state.metrics.runs, run.run_id, serve, faults)


# -- groups ----------------------------------------------------------------------
@endpoint("create_group")
async def create_group(request: Request) -> Response:
    """POST /v1/tasks/groups → 200 TaskGroupResponse."""
    state = _state(request)
    key = _authenticate(request)
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return validation_response([Problem((), f"is not valid JSON: {exc}", "json_invalid")])
    # A group holds no run yet: its creation is not a run-creating request (`create` faults skip it).
    await _apply_connect_faults(_request_faults(request, "get"), stream=False)
    if not isinstance(body, dict):
        return validation_response([Problem((), "must be a JSON object", "type_error")])
    check = check_run_input({"processor": "lite", "input": "x", "metadata": body.get("metadata")})
    if not check.ok:
        return validation_response(check.problems)
    credit = state.check_credit(key)
    if credit.status is not None:
        return error_response(credit.status, credit.message)
    group = state.create_group(key, body.get("metadata"))
    return JSONResponse(group.wire())


@endpoint("retrieve_group")
async def retrieve_group(request: Request) -> Response:
    """GET /v1/tasks/groups/{taskgroup_id} → TaskGroupResponse."""
    key = _authenticate(request)
    group = _lookup_group(request, key)
    await _apply_connect_faults(_request_faults(request, "get"), stream=False)
    return JSONResponse(group.wire())


@endpoint("add_group_runs")
async def add_group_runs(request: Request) -> Response:
    """POST /v1/tasks/groups/{taskgroup_id}/runs → TaskGroupRunResponse."""
    state = _state(request)
    key = _authenticate(request)
    group = _lookup_group(request, key)
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return validation_response([Problem((), f"is not valid JSON: {exc}", "json_invalid")])
    await _apply_connect_faults(_request_faults(request, "create"), stream=False)
    _rate_limit(state, key)
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return validation_response([Problem(("inputs",), "field required: a list of run inputs", "missing")])
    inputs: list[Any] = body["inputs"]
    if len(inputs) > MAX_GROUP_INPUTS:
        return validation_response(
            [Problem(("inputs",), f"has {len(inputs)} items; at most {MAX_GROUP_INPUTS} per request", "too_long")]
        )
    default_spec = body.get("default_task_spec")
    refresh = _query_bool(request, "refresh_status", True)
    problems, checks = await asyncio.to_thread(_check_inputs, inputs, default_spec)
    if problems:
        return validation_response(problems)
    credit = state.check_credit(key)
    if credit.status is not None:
        return error_response(credit.status, credit.message)
    directives = [_run_directives(request, item, ("inputs", i)) for i, item in enumerate(inputs)]
    first_batch = not group.runs
    run_cursor = None if first_batch else group.run_cursor(len(group.runs) - 1)
    event_cursor = None if first_batch else group.cursor_now()
    run_ids = []
    for item, check, directive in zip(inputs, checks, directives, strict=True):
        if item.get("task_spec") is None and default_spec is not None:
            item = {**item, "task_spec": default_spec}
        processor = get_processor(item["processor"])
        assert processor is not None  # checked above
        run = state.create_run(key, item, processor, check.warnings, directive, taskgroup_id=group.taskgroup_id)
        group.runs.append(run)
        run_ids.append(run.run_id)
    # refresh_status=false answers the group's cached status (contract §9: "faster"), not a fresh count.
    status = group.status() if refresh else group.cached_status()
    return JSONResponse({"status": status, "run_ids": run_ids, "run_cursor": run_cursor, "event_cursor": event_cursor})


def _check_inputs(inputs: list[Any], default_spec: Any) -> tuple[list[Problem], list[RunInputCheck]]:
    """Problems with a group's new inputs, and each input's check (warnings included)."""
    problems: list[Problem] = []
    if default_spec is not None:
        problems += check_task_spec(default_spec, loc=("default_task_spec",)).problems
    checks = []
    for i, item in enumerate(inputs):
        check = check_run_input(item, loc=("inputs", i), default_task_spec=default_spec)
        problems += check.problems
        if check.ok and get_processor(item["processor"]) is None:
            problems.append(Problem(("inputs", i, "processor"), f"unknown processor {item['processor']!r}", "enum"))
        checks.append(check)
    return problems, checks


@endpoint("group_events")
async def group_events(request: Request) -> Response:
    """GET /v1/tasks/groups/{taskgroup_id}/events?last_event_id=&timeout= → SSE."""
    state = _state(request)
    key = _authenticate(request)
    group = _lookup_group(request, key)
    after = None
    raw = request.query_params.get("last_event_id")
    if raw:
        after = parse_event_id(raw)
        if after is None:
            return validation_response([Problem(("query", "last_event_id"), "is not an event id of this group")])
    lifetime = state.settings.scaled(state.settings.group_stream_lifetime)
    raw_timeout = request.query_params.get("timeout")
    if raw_timeout is not None:
        try:
            lifetime = min(lifetime, float(raw_timeout))
        except ValueError:
            return validation_response([Problem(("query", "timeout"), "must be a number of seconds")])
    faults = _request_faults(request, "events")
    await _apply_connect_faults(faults, stream=True)

    async def serve(writer: SseWriter) -> None:
        await stream_group_events(writer, group, after, lifetime)

    return _stream_response(state, state.metrics.groups, group.taskgroup_id, serve, faults)


@endpoint("group_runs")
async def group_runs(request: Request) -> Response:
    """GET /v1/tasks/groups/{taskgroup_id}/runs → SSE of one state event per run."""
    key = _authenticate(request)
    group = _lookup_group(request, key)
    after = None
    raw = request.query_params.get("last_event_id")
    if raw:
        after = parse_run_cursor(raw)
        if after is None:
            return validation_response([Problem(("query", "last_event_id"), "is not a run cursor of this group")])
    status = request.query_params.get("status")
    statuses = ("queued", "action_required", "running", "completed", "failed", "cancelling", "cancelled")
    if status is not None and status not in statuses:
        return validation_response([Problem(("query", "status"), f"must be one of {', '.join(statuses)}", "enum")])
    include_input = _query_bool(request, "include_input", False)
    include_output = _query_bool(request, "include_output", False)
    faults = _request_faults(request, "get")
    await _apply_connect_faults(faults, stream=False)

    async def serve(writer: SseWriter) -> None:
        await stream_group_runs(writer, group, after, status, include_input, include_output)

    return SseResponse(serve, {}, lambda: None, lambda: None)


@endpoint("group_run")
async def group_run(request: Request) -> Response:
    """GET /v1/tasks/groups/{taskgroup_id}/runs/{run_id} → TaskRun."""
    key = _authenticate(request)
    group = _lookup_group(request, key)
    run = _lookup_run(request, key)
    if run.taskgroup_id != group.taskgroup_id:
        return error_response(404, "Run id not found in this task group")
    await _apply_connect_faults(_request_faults(request, "get", run), stream=False)
    return JSONResponse(run.wire(run.elapsed()))


# -- introspection -----------------------------------------------------------------
async def emulator_stats(request: Request) -> Response:
    """GET /_emulator/stats: counters (``?runs=false`` leaves out the per-run table; ``?window=S`` adds each
    key's busiest S seconds as ``max_requests_per_window``)."""
    state = _state(request)
    include_runs = request.query_params.get("runs", "true") != "false"
    try:
        window = float(request.query_params["window"]) if "window" in request.query_params else None
    except ValueError:
        return error_response(422, "window: a number of seconds")
    body = state.metrics.to_json(include_runs=include_runs, window=window)
    body["num_runs"] = len(state.runs)
    body["num_groups"] = len(state.groups)
    body["webhook_deliveries"] = state.webhooks.deliveries[-1000:]
    return JSONResponse(body)


async def emulator_run(request: Request) -> Response:
    """GET /_emulator/runs/{run_id}: stream counters and the run's full planned timeline.

    Vanished runs are still shown here (with ``vanished: true``): introspection sees everything.
    """
    state = _state(request)
    run = state.runs.get(request.path_params["run_id"])
    if run is None:
        return error_response(404, RUN_NOT_FOUND)
    sm = state.metrics.runs.get(run.run_id) or StreamMetrics()
    elapsed = run.elapsed()
    return JSONResponse(
        {
            **sm.to_json(),
            "run_id": run.run_id,
            "key_label": run.owner[:12],  # key_label(key): the owner is the key's SHA-256
            "status": run.status_at(elapsed),
            "vanished": run.vanished(elapsed),
            "ends_in_seconds": round(run.created_mono + run.ends_at - time.monotonic(), 3),
            "duration_seconds": round(run.ends_at / state.settings.time_scale, 3),
            "events_enabled": run.events_enabled,
            "directives": run.directives.source,
            "timeline": run.timeline(),
            "sent_events": None if run.sent is None else [{"type": t, "data": d} for t, d in run.sent],
        }
    )


async def emulator_health(request: Request) -> Response:
    return JSONResponse({"ok": True, "time_scale": _state(request).settings.time_scale})


# -- app ---------------------------------------------------------------------------
class MetricsMiddleware:
    """Counts every request per key (by route) and every answer per status code."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                key = scope.get("emulator_key")
                if key:
                    km = self.state.metrics.key(key)
                    km.record(scope.get("emulator_route", "unmatched"), started)
                    km.by_status[int(message["status"])] += 1
                    run_id = scope.get("path_params", {}).get("run_id")
                    if run_id in self.state.runs:
                        self.state.metrics.stream(self.state.metrics.runs, run_id).requests += 1
            await send(message)

        await self.app(scope, receive, send_wrapper)


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = "Not found" if status == 404 else "Method not allowed" if status == 405 else "Error"
    return error_response(status, f"{message}: {request.method} {request.url.path}")


def _routes() -> list[Route]:
    routes = [
        Route("/v1/tasks/runs", create_run, methods=["POST"]),
        Route("/v1/tasks/runs/{run_id}", retrieve_run, methods=["GET"]),
        Route("/v1/tasks/runs/{run_id}/input", run_input, methods=["GET"]),
        Route("/v1/tasks/runs/{run_id}/result", run_result, methods=["GET"]),
        Route("/v1/tasks/runs/{run_id}/events", run_events, methods=["GET"]),
        Route("/v1beta/tasks/runs/{run_id}/events", run_events, methods=["GET"]),
    ]
    for prefix in ("/v1", "/v1beta"):
        routes += [
            Route(f"{prefix}/tasks/groups", create_group, methods=["POST"]),
            Route(f"{prefix}/tasks/groups/{{taskgroup_id}}", retrieve_group, methods=["GET"]),
            Route(f"{prefix}/tasks/groups/{{taskgroup_id}}/runs", add_group_runs, methods=["POST"]),
            Route(f"{prefix}/tasks/groups/{{taskgroup_id}}/runs", group_runs, methods=["GET"]),
            Route(f"{prefix}/tasks/groups/{{taskgroup_id}}/events", group_events, methods=["GET"]),
            Route(f"{prefix}/tasks/groups/{{taskgroup_id}}/runs/{{run_id}}", group_run, methods=["GET"]),
        ]
    routes += [
        Route("/_emulator/stats", emulator_stats, methods=["GET"]),
        Route("/_emulator/runs/{run_id}", emulator_run, methods=["GET"]),
        Route("/_emulator/health", emulator_health, methods=["GET"]),
    ]
    return routes


def create_app(settings: EmulatorSettings | None = None) -> Starlette:
    """The emulator as an ASGI app (settings from the environment when not given)."""
    state = EmulatorState(settings or EmulatorSettings.from_env())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.resume_webhooks()
        try:
            yield
        finally:
            await state.webhooks.close()
            state.close()

    app = Starlette(
        routes=_routes(),
        exception_handlers={404: _not_found, 405: _not_found},
        lifespan=lifespan,
    )
    app.state.emulator = state
    app.add_middleware(MetricsMiddleware, state=state)
    return app
