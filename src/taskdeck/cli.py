"""The ``taskdeck`` command line: a thin typer layer over the package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from taskdeck import __version__

if TYPE_CHECKING:
    from taskdeck.config import Settings

app = typer.Typer(
    name="taskdeck",
    help="Taskdeck: a self-hosted playground and run manager for the Parallel Task API. With no command it runs serve.",
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskdeck {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Taskdeck: a self-hosted playground and run manager for the Parallel Task API.

    With no command, `taskdeck` runs `taskdeck serve`.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(serve, host=None, port=None, db=None, base_url=None, demo=False)


@app.command()
def emulator(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind; 0 picks a free one (default 8900).")] = None,
    time_scale: Annotated[
        float | None,
        typer.Option("--time-scale", help="Multiply every duration: 0.01 turns a 10-minute run into 6 s (default 1)."),
    ] = None,
    stream_lifetime: Annotated[
        float | None,
        typer.Option("--stream-lifetime", help="Seconds until the server closes a stream, scaled (default 570)."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for durations, content and fault draws (default 0).")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accept only this key (repeatable). Default: any key except the magic ones."),
    ] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="Account secret that signs webhook deliveries.")] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option("--rate-limit", help="Run-creating POSTs per key per minute (default 2000)."),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(help="Global fault directives, e.g. 'drop=400%0.1;error=503%0.05' (see docs/emulator.md)."),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Keep runs and groups in this file across restarts (appended on create, loaded at start). "
            "Default: memory only.",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="Server log level.")] = "info",
) -> None:
    """Run the Parallel Task API emulator (no key, no internet, no credits needed).

    Point any Parallel client at it, e.g. PARALLEL_BASE_URL=http://127.0.0.1:8900.
    Every option also reads TASKDECK_EMULATOR_<NAME> from the environment; flags win.
    """
    from taskdeck.emulator import EmulatorSettings, run_emulator

    try:
        settings = EmulatorSettings.from_env().with_overrides(
            host=host,
            port=port,
            time_scale=time_scale,
            stream_lifetime=stream_lifetime,
            seed=seed,
            api_keys=tuple(api_key) if api_key else None,
            webhook_secret=webhook_secret,
            rate_limit_per_minute=rate_limit,
            faults=faults,
            state_path=str(state) if state is not None else None,
        )
        settings.validate()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    where = f"http://{settings.host}:{settings.port}" if settings.port else "a free port (address below)"
    typer.echo(
        f"Parallel Task API emulator on {where}, time scale {settings.time_scale:g}. "
        "Point clients at it with PARALLEL_BASE_URL.",
        err=True,
    )
    run_emulator(settings, log_level=log_level)


def _settings(db: Path | None, base_url: str | None, **more: object) -> Settings:
    from taskdeck.config import Settings

    try:
        settings = Settings.from_env().with_overrides(db_path=db, parallel_base_url=base_url, **more)
        settings.validate()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


DbOption = Annotated[Path | None, typer.Option("--db", help="SQLite file (env TASKDECK_DB_PATH).")]
UrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="The database, e.g. postgresql://user@host/taskdeck, shared by every process (env "
        "TASKDECK_DATABASE_URL; needs TASKDECK_SECRET_KEY). Default: the SQLite file.",
    ),
]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help="Parallel API base URL (env TASKDECK_PARALLEL_BASE_URL).")
]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (env TASKDECK_HOST; default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (env TASKDECK_PORT; default 8000).")] = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
    database_url: UrlOption = None,
    no_engine: Annotated[
        bool,
        typer.Option(
            "--no-engine",
            help="Web only: follow no run here; `taskdeck worker` processes sharing the database do, and their "
            "events show here live.",
        ),
    ] = False,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo",
            help="Also start the built-in emulator and follow runs there: no key, no internet. Uses demo.db beside "
            "the real database (or --db), and keeps the emulator's runs beside it, so restarts resume them.",
        ),
    ] = False,
) -> None:
    """Run the web app and the engine in one process (SQLite file by default; --no-engine: the web app only)."""
    import logging

    from taskdeck.web.app import create_app, serve_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "parallel"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = _settings(db, base_url, host=host, port=port, database_url=database_url)
    emulator = None
    if demo:
        from taskdeck.demo import demo_settings, start_demo_emulator

        settings = demo_settings(settings, db)
        emulator = start_demo_emulator(settings)
        settings = settings.with_overrides(parallel_base_url=emulator.url)
        typer.echo(
            f"demo: emulator {emulator.url}, database {settings.db_path}, "
            f"emulator state {emulator.settings.state_path}",
            err=True,
        )
    typer.echo(
        f"Taskdeck on http://{settings.host}:{settings.port}" + (" (demo: simulated API)" if demo else ""), err=True
    )
    from taskdeck.engine.heap import tune

    tune()  # a long-lived server: see engine/heap.py
    try:
        serve_app(create_app(settings, demo=demo, follow=not no_engine), settings.host, settings.port)
    finally:
        if emulator is not None:
            emulator.stop()


@app.command()
def worker(db: DbOption = None, base_url: BaseUrlOption = None, database_url: UrlOption = None) -> None:
    """Run the engine without the web app: submit pending tasks and follow every active run.

    Several workers (and servers) may share one database; each run is followed by one of them.
    SIGTERM or Ctrl-C stops it cleanly within 10 s: streams closed, writes flushed, leases released.
    """
    import asyncio
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per upstream request would cost more than following the runs; keep warnings only.
    for noisy in ("httpx", "httpcore", "parallel"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = _settings(db, base_url, database_url=database_url)
    from taskdeck.engine.heap import tune

    tune()  # a long-lived engine: see engine/heap.py
    asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    import asyncio
    import signal

    from taskdeck.engine import Engine

    engine = Engine(settings, kind="worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await engine.start()
    typer.echo(
        f"worker {engine.holder} following {len(engine.followers)} task(s); database {_where(settings)}", err=True
    )
    await stop.wait()
    await engine.stop()
    typer.echo("worker stopped", err=True)


def _where(settings: Settings) -> str:
    """The database, for people: the SQLite file, or the PostgreSQL URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    from taskdeck.store.open import is_postgres

    if not is_postgres(settings.store_url):
        return settings.store_url
    parts = urlsplit(settings.database_url)
    host = parts.hostname or ""
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@app.command()
def migrate(db: DbOption = None, database_url: UrlOption = None) -> None:
    """Apply the database's migrations (every process also does at start, under a lock) and say where it stands."""
    from taskdeck.store.open import open_store

    settings = _settings(db, None, database_url=database_url)
    try:
        store = open_store(settings.store_url)
    except Exception as exc:
        typer.echo(f"error: cannot open {_where(settings)}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(1) from None
    store.close()
    typer.echo(f"{_where(settings)}: schema up to date")


@app.command()
def status(
    db: DbOption = None,
    database_url: UrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Processes alive (each registers with a heartbeat), leases they hold, runs by status, shared-feed lag."""
    import json
    import time

    from taskdeck.store.open import open_store

    settings = _settings(db, None, database_url=database_url)
    store = open_store(settings.store_url)
    try:
        now = time.time()
        procs, leases, counts = store.processes(), store.leases(now), store.count_tasks()
    finally:
        store.close()
    # A process is alive when it was seen within three heartbeats (the lease TTL is longer still).
    alive_within = max(3 * settings.heartbeat_interval, settings.lease_ttl)
    rows = [
        {
            "holder": p.holder,
            "kind": p.kind,
            "host": p.host,
            "pid": p.pid,
            "alive": now - p.seen_at <= alive_within,
            "seen_seconds_ago": round(now - p.seen_at, 1),
            "following": p.following,
            "leases": leases.get(p.holder, 0),
            "feed_lag_ms": None if p.feed_lag is None else round(p.feed_lag * 1000, 1),
        }
        for p in procs
    ]
    orphaned = sum(n for holder, n in leases.items() if holder not in {p.holder for p in procs})
    report = {"database": _where(settings), "processes": rows, "tasks": counts, "leases_of_unknown_processes": orphaned}
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(f"database {report['database']}")
    typer.echo(f"{'process':<40} {'kind':<7} {'alive':<5} {'seen':>7} {'follows':>8} {'leases':>7} {'feed lag':>9}")
    for r in rows:
        lag = "—" if r["feed_lag_ms"] is None else f"{r['feed_lag_ms']} ms"
        typer.echo(
            f"{r['holder']:<40} {r['kind']:<7} {'yes' if r['alive'] else 'NO':<5} {r['seen_seconds_ago']:>6}s "
            f"{r['following']:>8} {r['leases']:>7} {lag:>9}"
        )
    typer.echo("tasks: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))


@app.command()
def submit(
    input_text: Annotated[str, typer.Option("--input", help="Task input: text, or a JSON object.")],
    processor: Annotated[str, typer.Option(help="Processor, e.g. lite, core, pro, ultra.")] = "core",
    output: Annotated[
        str | None, typer.Option(help="Output schema: a text description, 'auto', or a JSON schema object.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="PARALLEL_API_KEY", help="Parallel API key.")] = None,
    db: DbOption = None,
) -> None:
    """Store a task for the running worker or server to submit; prints the task as JSON."""
    import json

    from taskdeck.engine.intake import IntakeError, enqueue

    settings = _settings(db, None)
    request: dict[str, object] = {"input": _maybe_json(input_text), "processor": processor}
    if output is not None:
        request["task_spec"] = {"output_schema": output_schema_of(output)}
    try:
        task = enqueue(settings, api_key or "", request)
    except IntakeError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"id": task.id, "status": task.status.value, "processor": task.processor}))


@app.command()
def enrich(
    source: Annotated[Path, typer.Argument(help="The table: CSV (any common dialect), a JSON array, or JSONL.")],
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Where to write the result: .csv, .json or .jsonl (default: CSV on stdout)."),
    ] = None,
    processor: Annotated[str, typer.Option(help="Processor for every row, e.g. lite, base, core, pro.")] = "core",
    output: Annotated[
        list[str] | None,
        typer.Option(help="An output column: 'name: description' or 'name:type: description' (repeatable)."),
    ] = None,
    schema: Annotated[Path | None, typer.Option(help="A JSON schema file for the output, instead of --output.")] = None,
    columns: Annotated[
        list[str] | None, typer.Option("--column", help="Input column to send (repeatable; default: all).")
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="Send each row as text instead: a template such as 'CEO of {company}?'.")
    ] = None,
    metadata: Annotated[
        str | None, typer.Option(help='Metadata for every row\'s run, a JSON object, e.g. \'{"team": "sales"}\'.')
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Print the first requests and the total cost; send nothing.")] = False,
    allow_failures: Annotated[bool, typer.Option(help="Exit 0 even when some rows failed.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Progress and summary as JSON lines on stderr.")] = False,
    api_key: Annotated[str | None, typer.Option(envvar="PARALLEL_API_KEY", help="Parallel API key.")] = None,
    basis: Annotated[
        bool, typer.Option(help="Add each output field's confidence, citations and reasoning columns.")
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="TASKDECK_URL", help="A running Taskdeck: run the batch there (default: this machine)."
        ),
    ] = None,
    db: DbOption = None,
    base_url: BaseUrlOption = None,
) -> None:
    """Enrich a table: one Parallel run per row, all in one task group, the result in row order.

    Ctrl-C leaves the batch running at Parallel; running the same command again (same file, same
    options) resumes it and pays for nothing twice. Exit code: 0 when every row succeeded (or
    --allow-failures), 1 when some failed, 2 for bad input, 130 when interrupted.
    """
    import asyncio
    import dataclasses
    import itertools
    import json

    from taskdeck.batchcommands import export_to, remote_enrich, show_progress
    from taskdeck.batchinput import TableError, read_table
    from taskdeck.engine.batches import plan_batch
    from taskdeck.engine.intake import IntakeError
    from taskdeck.enrich import build_spec, run_enrich

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(2)

    try:
        loaded = json.loads(schema.read_text()) if schema is not None else None
        spec = build_spec(processor, output or [], loaded, columns, template)
        if metadata is not None:
            parsed = _maybe_json(metadata)
            if not isinstance(parsed, dict):
                raise ValueError("--metadata must be a JSON object")
            spec["metadata"] = parsed
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if not api_key:
        raise fail("no API key: set PARALLEL_API_KEY or pass --api-key")

    def progress(summary: dict[str, Any]) -> None:
        show_progress(summary, as_json=json_out, stream=sys.stderr)

    if url:
        # On a running server: the batch is the server's (its web UI shows it live); this command
        # follows it and writes the result, and Ctrl-C leaves it running there.
        try:
            final = remote_enrich(url, api_key, source, spec, out, basis=basis, dry_run=dry_run, progress=progress)
        except KeyboardInterrupt:
            typer.echo("\nstopped following; the batch goes on at the server. Run the same command again.", err=True)
            raise typer.Exit(130) from None
        if final and final["failed"] and not allow_failures:
            raise typer.Exit(1)
        return
    settings = _settings(db, base_url)
    # This command runs its batch and nothing else (other tasks in the database are left to servers/workers).
    settings = dataclasses.replace(settings, max_followers=0)
    if dry_run:
        try:
            with read_table(source) as table:
                plan = plan_batch(
                    "dry-run",
                    source.name,
                    table.columns,
                    table.dicts,
                    spec,
                    table.digest,
                    holder=None,
                    lease_ttl=0,
                )
                sample = list(itertools.islice(plan.tasks(), 3))
        except (TableError, IntakeError) as exc:
            raise fail(getattr(exc, "message", str(exc))) from None
        for task in sample:
            typer.echo(json.dumps(task.request, ensure_ascii=False))
        rows = plan.batch.row_count
        typer.echo(f"{rows} rows x {processor}: ${plan.cost_usd:,.2f} in all (nothing was sent)", err=True)
        return

    try:
        result = asyncio.run(run_enrich(settings, api_key, source, spec, progress=progress))
    except (TableError, IntakeError) as exc:
        raise fail(getattr(exc, "message", str(exc))) from None
    if not json_out and sys.stderr.isatty():
        sys.stderr.write("\n")
    if result.resumed:
        typer.echo(f"resumed batch {result.batch.id} (same input and options): nothing was created twice", err=True)
    if result.interrupted:
        typer.echo(
            f"stopped following batch {result.batch.id}; it goes on at Parallel. Run the same command again "
            "to resume it (nothing is paid twice).",
            err=True,
        )
        raise typer.Exit(130)
    kind = out.suffix.lower().lstrip(".") if out is not None else "csv"
    kind = kind if kind in ("json", "jsonl") else "csv"
    handle = sys.stdout if out is None else out.open("w", newline="", encoding="utf-8")
    try:
        rows = asyncio.run(
            export_to(
                settings.store_url, result.batch.id, handle, kind if kind in ("json", "jsonl") else "csv", basis=basis
            )
        )
    finally:
        if out is not None:
            handle.close()
    summary = {"batch": result.batch.id, "rows": rows, "failed": result.failed, "out": str(out) if out else None}
    typer.echo(
        json.dumps(summary) if json_out else f"batch {result.batch.id}: {rows} rows, {result.failed} failed",
        err=True,
    )
    if result.failed and not allow_failures:
        raise typer.Exit(1)


def output_schema_of(text: str) -> object:
    """``--output``: 'auto', a text description, an output_schema object, or a JSON schema (wrapped)."""
    parsed = _maybe_json(text)
    if parsed == "auto":
        return {"type": "auto"}
    if isinstance(parsed, dict) and "json_schema" not in parsed and parsed.get("type") in (None, "object"):
        # A JSON schema itself (an object's properties), not an output_schema around one.
        return {"type": "json", "json_schema": parsed}
    return parsed


def _maybe_json(text: str) -> object:
    """A JSON object when ``text`` is one (strict RFC 8259, as the API takes it), else the text itself."""
    import json

    from taskdeck.jsonbody import JsonBodyError, parse_json

    stripped = text.strip()
    if not stripped.startswith("{"):
        return text
    try:
        return parse_json(stripped)
    except JsonBodyError as exc:
        try:
            json.loads(stripped)
        except (json.JSONDecodeError, RecursionError):
            return text  # not JSON at all: plain text that starts with a brace
        typer.echo(f"error: {exc} (Parallel takes strict JSON)", err=True)
        raise typer.Exit(2) from None


def main() -> None:
    """Console-script entry point."""
    app()


# The batch commands (batches, export) and the task commands (run, tasks, show, watch) live in their
# own modules and register on ``app``.
from taskdeck import batchcommands, taskcommands  # noqa: E402,F401
