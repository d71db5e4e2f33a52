"""``taskdeck run``, ``tasks``, ``show`` and ``watch``: single tasks (and batches) in the terminal.

Each works on the local database or, with ``--url``/``TASKDECK_URL``, through a running Taskdeck's REST
API and its event stream. ``run`` on the local database starts an engine inside the command for as long
as it follows the run; Ctrl-C leaves the run going (it is stored: any server or worker on the same
database follows it, and ``taskdeck watch`` picks it up again).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from taskdeck.batchcommands import KeyOption, ServerOption, _answer, _client, local_owner
from taskdeck.cli import BaseUrlOption, DbOption, UrlOption, _maybe_json, _settings, app, output_schema_of

__all__ = ["describe_event", "render_result", "run", "show", "tasks", "watch"]

TERMINAL = frozenset({"completed", "failed", "cancelled", "rejected", "submit_unknown"})
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts: one event per line, then the task.")]


def describe_event(kind: str, data: Any) -> str | None:
    """One line for a person about an event, or None for events not worth a line."""
    if not isinstance(data, dict):
        return None
    if kind.startswith("task_run.progress_msg."):
        return f"[{kind.removeprefix('task_run.progress_msg.')}] {data.get('message', '')}"
    if kind == "task_run.progress_stats":
        stats = data.get("source_stats") or {}
        return f"[sources] considered {stats.get('num_sources_considered', 0)}, read {stats.get('num_sources_read', 0)}"
    if kind == "task_run.state":
        run = data.get("run") or {}
        return f"[state] {run.get('status', '?')}"
    if kind.startswith("taskdeck."):
        what = kind.removeprefix("taskdeck.")
        extra = data.get("run_id") or data.get("message") or ""
        return f"[taskdeck] {what} {extra}".rstrip()
    return None


def render_result(task: dict[str, Any]) -> str:
    """The result as text: a Markdown report as it is, a JSON output as a table with confidence and sources."""
    output = task.get("output") or {}
    content = output.get("content")
    if content is None:
        error = task.get("error") or {}
        return f"no result: {task.get('status')}" + (
            f" ({error.get('message') or task.get('message')})" if error or task.get("message") else ""
        )
    if isinstance(content, str):
        return content
    basis = {b.get("field"): b for b in output.get("basis") or [] if isinstance(b, dict)}
    lines = []
    width = max((len(str(k)) for k in content), default=5)
    for name, value in content.items():
        ground = basis.get(name) or {}
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        confidence = f"  ({ground['confidence']})" if ground.get("confidence") else ""
        lines.append(f"{name:<{width}}  {shown}{confidence}")
        for citation in (ground.get("citations") or [])[:3]:
            lines.append(f"{'':<{width}}    - {citation.get('title') or ''} {citation.get('url') or ''}".rstrip())
    return "\n".join(lines)


def _sse(client: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, data) of a Taskdeck event stream until the server ends it."""
    with client.stream("GET", path, timeout=None) as resp:
        if resp.status_code >= 400:
            resp.read()
            _answer(resp)
        data: list[str] = []
        for line in resp.iter_lines():
            if line.startswith("data:"):
                data.append(line[5:].lstrip())
            elif not line and data:
                try:
                    item = json.loads("\n".join(data))
                except ValueError:
                    item = None
                data = []
                if isinstance(item, dict):
                    yield str(item.get("type", "")), item


def _emit(kind: str, data: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"type": kind, "data": data}, ensure_ascii=False))
        return
    line = describe_event(kind, data)
    if line:
        typer.echo(line, err=True)


def _remote_follow(client: Any, task_id: str, as_json: bool) -> dict[str, Any]:
    for kind, item in _sse(client, f"/api/tasks/{task_id}/events"):
        _emit(kind, item.get("data"), as_json)
    page: dict[str, Any] = _answer(client.get(f"/task/{task_id}.json"))
    page.pop("events", None)
    return page


def _finish(task: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"task": task}, ensure_ascii=False))
    else:
        typer.echo(render_result(task))
    if task.get("status") != "completed":
        raise typer.Exit(1)


async def _local_follow(settings: Any, task_id: str, as_json: bool, *, engine: Any = None) -> dict[str, Any]:
    """Follow a task of the local database: print its stored events as they arrive, until it ends."""
    from taskdeck.store.open import open_store
    from taskdeck.web.views import task_page

    store = open_store(settings.store_url) if engine is None else engine.store
    try:
        after = 0
        while True:
            task = await asyncio.to_thread(store.get_task, task_id)
            if task is None:
                raise typer.BadParameter(f"no task {task_id!r} in the database", param_hint="TASK")
            for event in await asyncio.to_thread(store.events, task_id, after_seq=after):
                after = event.seq
                try:
                    data = json.loads(event.data)
                except ValueError:
                    data = None
                _emit(event.type, data, as_json)
            if task.status.value in TERMINAL:
                page = task_page(task, [])
                page.pop("events", None)
                return page
            await asyncio.sleep(0.3)  # the database is read again: a terminal poll, not a test wait
    finally:
        if engine is None:
            store.close()


@app.command()
def run(
    question: Annotated[str, typer.Argument(help="The task's input: text, or a JSON object.")],
    processor: Annotated[str, typer.Option(help="Processor, e.g. lite, base, core, pro, ultra.")] = "core",
    output: Annotated[
        str | None, typer.Option(help="Output schema: a text description, 'auto', or a JSON schema object.")
    ] = None,
    as_json: JsonOption = False,
    api_key: KeyOption = None,
    url: ServerOption = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Run one task and follow it here: live reasoning and sources, then the result (Markdown, or a table
    of fields with confidence and citations). Exit 0 when it completed, 1 otherwise.

    Ctrl-C stops following; the run goes on (and is billed): `taskdeck watch TASK` picks it up again.
    """
    # Events on: the point of following a run here is to see its reasoning and sources as they come.
    request: dict[str, Any] = {"input": _maybe_json(question), "processor": processor, "enable_events": True}
    if output is not None:
        request["task_spec"] = {"output_schema": output_schema_of(output)}  # as `taskdeck submit` builds it
    if not api_key:
        typer.echo("error: no API key: set PARALLEL_API_KEY or pass --api-key", err=True)
        raise typer.Exit(2)
    try:
        if url:
            with _client(url, api_key) as client:
                task = _answer(client.post("/api/tasks", json=request))["task"]
                typer.echo(f"task {task['id']} ({processor}): {task['urls']['page']}", err=True)
                final = _remote_follow(client, task["id"], as_json)
        else:
            final = asyncio.run(_run_local(_settings(db, base_url), api_key, request, as_json))
    except KeyboardInterrupt:
        typer.echo("\nstopped following; the run goes on. `taskdeck watch TASK` follows it again.", err=True)
        raise typer.Exit(130) from None
    _finish(final, as_json)


async def _run_local(settings: Any, api_key: str, request: dict[str, Any], as_json: bool) -> dict[str, Any]:
    from taskdeck.engine import Engine
    from taskdeck.engine.intake import IntakeError

    engine = Engine(settings, kind="cli")
    await engine.start()
    try:
        try:
            task = await engine.submit(api_key, request)
        except IntakeError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"task {task.id} ({task.processor})", err=True)
        return await _local_follow(settings, task.id, as_json, engine=engine)
    finally:
        await engine.stop()


@app.command()
def tasks(
    status: Annotated[list[str] | None, typer.Option(help="Only tasks of this status (repeatable).")] = None,
    processor: Annotated[str | None, typer.Option(help="Only tasks of this processor.")] = None,
    q: Annotated[str | None, typer.Option("-q", help="Only tasks whose input contains this text.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Most tasks shown, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    api_key: KeyOption = None,
    url: ServerOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
) -> None:
    """List the key's tasks, newest first (batch rows are under `taskdeck batches`)."""
    if url:
        params: dict[str, Any] = {"limit": limit, "status": status or [], "processor": processor, "q": q}
        with _client(url, api_key) as client:
            rows = _answer(client.get("/api/tasks", params={k: v for k, v in params.items() if v}))["tasks"]
    else:
        from taskdeck.store.open import open_store
        from taskdeck.web.views import task_summary

        settings = _settings(db, None, database_url=database_url)
        owner = local_owner(settings, api_key, "tasks")
        store = open_store(settings.store_url)
        try:
            found = store.list_tasks(owner, statuses=status or None, processor=processor, text=q, limit=limit)
        finally:
            store.close()
        rows = [task_summary(t) for t in found]
    if as_json:
        typer.echo(json.dumps({"tasks": rows}, indent=2, ensure_ascii=False))
        return
    if not rows:
        typer.echo('no tasks: `taskdeck run "a question"` runs one')
        return
    for t in rows:
        typer.echo(f"{t['id']}  {t['status']:<14} {t['processor']:<8} {t['input_preview'][:70]}")


def _task_of(url: str | None, api_key: str | None, task_id: str, db: Any, database_url: Any) -> dict[str, Any]:
    if url:
        with _client(url, api_key) as client:
            page: dict[str, Any] = _answer(client.get(f"/task/{task_id}.json"))
            page.pop("events", None)
            return page
    from taskdeck.store.open import open_store
    from taskdeck.web.views import task_summary

    settings = _settings(db, None, database_url=database_url)
    store = open_store(settings.store_url)
    try:
        task = store.get_task(task_id)
    finally:
        store.close()
    if task is None:
        typer.echo(f"error: no task {task_id!r} in {settings.store_url}; `taskdeck tasks` lists them", err=True)
        raise typer.Exit(2)
    return task_summary(task) | {"output": task.output, "error": task.error, "input": task.input}


@app.command()
def show(
    task_id: Annotated[str, typer.Argument(help="The task (tsk_…).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the task as JSON.")] = False,
    api_key: KeyOption = None,
    url: ServerOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
) -> None:
    """Show one task: status, cost, and its result (Markdown, or fields with confidence and citations)."""
    task = _task_of(url, api_key, task_id, db, database_url)
    if as_json:
        typer.echo(json.dumps({"task": task}, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{task['id']}  {task['status']}  {task['processor']}  run {task.get('run_id') or '—'}")
    typer.echo(render_result(task))


@app.command()
def watch(
    target: Annotated[str, typer.Argument(help="A task (tsk_…) or a batch (bat_…).")],
    as_json: JsonOption = False,
    api_key: KeyOption = None,
    url: ServerOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
) -> None:
    """Follow a task's events (or a batch's progress) until it ends, then print the result."""
    try:
        if target.startswith("bat_"):
            _watch_batch(target, as_json, api_key, url, db, database_url)
            return
        if url:
            with _client(url, api_key) as client:
                final = _remote_follow(client, target, as_json)
        else:
            final = asyncio.run(_local_follow(_settings(db, None, database_url=database_url), target, as_json))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    _finish(final, as_json)


def _watch_batch(batch_id: str, as_json: bool, api_key: Any, url: Any, db: Any, database_url: Any) -> None:
    from taskdeck.batchcommands import show_progress
    from taskdeck.web.batchviews import batch_summary

    while True:
        if url:
            with _client(url, api_key) as client:
                batch = _answer(client.get(f"/api/batches/{batch_id}"))["batch"]
        else:
            from taskdeck.store.open import open_store

            settings = _settings(db, None, database_url=database_url)
            store = open_store(settings.store_url)
            try:
                found = store.get_batch(batch_id)
                if found is None:
                    typer.echo(f"error: no batch {batch_id!r}; `taskdeck batches` lists them", err=True)
                    raise typer.Exit(2)
                batch = batch_summary(found, store.batch_counts(batch_id), store.batch_cost(batch_id))
            finally:
                store.close()
        show_progress(batch, as_json=as_json, stream=sys.stdout if as_json else sys.stderr)
        if batch["status"] == "completed":
            if batch["failed"]:
                raise typer.Exit(1)
            return
        time.sleep(1.0)  # a progress poll once a second (a terminal display, not a test wait)
