"""``taskdeck batches`` and ``taskdeck export``, and ``taskdeck enrich`` against a running server.

Each works on the local database (the SQLite file, or ``--database-url``) or, when ``TASKDECK_URL``
(``--url``) names a running Taskdeck, through its REST API with the key in ``PARALLEL_API_KEY``.
Exports are written page by page in the input's row order (never the whole batch in memory).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from taskdeck.cli import DbOption, UrlOption, _settings, app

__all__ = ["batches", "export", "export_to", "local_owner", "remote_enrich"]

ServerOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="TASKDECK_URL",
        help="A running Taskdeck (e.g. http://127.0.0.1:8000): use its REST API instead of the local database.",
    ),
]
KeyOption = Annotated[str | None, typer.Option(envvar="PARALLEL_API_KEY", help="Parallel API key.")]
FORMATS = ("csv", "json", "jsonl")


def _format_of(out: Path | None, given: str | None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}", param_hint="--format")
        return given
    suffix = out.suffix.lower().lstrip(".") if out is not None else ""
    return suffix if suffix in FORMATS else "csv"


def _client(url: str, api_key: str | None) -> Any:
    import httpx

    if not api_key:
        typer.echo("error: no API key for the server: set PARALLEL_API_KEY or pass --api-key", err=True)
        raise typer.Exit(2)
    return httpx.Client(base_url=url.rstrip("/"), headers={"x-api-key": api_key}, timeout=120)


def _answer(resp: Any) -> Any:
    """The JSON of a 2xx answer; anything else ends the command with the server's own message."""
    if resp.status_code >= 400:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = resp.text[:500]
        typer.echo(f"error: the server answered {resp.status_code}: {message}", err=True)
        raise typer.Exit(1 if resp.status_code >= 500 else 2)
    return resp.json()


def _print_batches(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"batches": rows}, indent=2))
        return
    if not rows:
        typer.echo("no batches yet: `taskdeck enrich table.csv --output 'name: description'` makes one")
        return
    typer.echo(f"{'batch':<29} {'status':<10} {'rows':>7} {'done':>7} {'failed':>7} {'cost':>10}  name")
    for b in rows:
        typer.echo(
            f"{b['id']:<29} {b['status']:<10} {b['row_count']:>7,} {b['done']:>7,} {b['failed']:>7,} "
            f"{'$' + format(b['cost_usd'], ',.2f'):>10}  {b['name']}"
        )


@app.command()
def batches(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=200, help="Most batches shown, newest first.")] = 50,
    api_key: KeyOption = None,
    url: ServerOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
) -> None:
    """List the key's batches, newest first: status, rows done and failed, cost so far."""
    if url:
        with _client(url, api_key) as client:
            _print_batches(_answer(client.get("/api/batches", params={"limit": limit}))["batches"], as_json)
        return
    from taskdeck.store.open import open_store
    from taskdeck.web.batchviews import batch_summary

    settings = _settings(db, None, database_url=database_url)
    owner = local_owner(settings, api_key, "batches")
    store = open_store(settings.store_url)
    try:
        rows = [batch_summary(b, store.batch_counts(b.id), store.batch_cost(b.id)) for b in store.list_batches(owner)]
    finally:
        store.close()
    _print_batches(rows[:limit], as_json)


async def export_to(store_url: str, batch_id: str, handle: IO[str], fmt: str, *, basis: bool) -> int:
    """Write a batch of the local database in ``fmt``, in row order, page by page; returns the rows written.

    Raises KeyError when there is no such batch.
    """
    from taskdeck.store.open import open_store
    from taskdeck.web.batchviews import export_batch

    store = open_store(store_url)
    try:
        batch = store.get_batch(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        written = 0

        async def pager(after: int, limit: int) -> list[Any]:
            nonlocal written
            page = await asyncio.to_thread(store.batch_rows, batch_id, after_index=after, limit=limit)
            written += len(page)
            return page

        async for chunk in export_batch(batch, pager, fmt, basis=basis):  # type: ignore[arg-type]
            handle.write(chunk)
        return written
    finally:
        store.close()


def _open_out(out: Path | None) -> IO[str]:
    return sys.stdout if out is None else out.open("w", newline="", encoding="utf-8")


def _download(client: Any, batch_id: str, kind: str, basis: bool, out: Path | None) -> None:
    """A server's export of a batch, streamed to ``out`` (stdout when None); nothing is written on an error."""
    params = {"format": kind, "basis": str(basis).lower()}
    with client.stream("GET", f"/api/batches/{batch_id}/export", params=params) as resp:
        if resp.status_code >= 400:
            resp.read()
            _answer(resp)
        handle = _open_out(out)
        try:
            for text in resp.iter_text():
                handle.write(text)
        finally:
            if out is not None:
                handle.close()


def local_owner(settings: Any, api_key: str | None, what: str) -> str:
    """The owner of ``api_key`` in the local database (its keyed hash), or exit 2 saying a key is needed."""
    from taskdeck.vault import KeyVault

    if not api_key:
        typer.echo(f"error: no API key: set PARALLEL_API_KEY or pass --api-key ({what} are listed per key)", err=True)
        raise typer.Exit(2)
    return KeyVault.open(settings.secret_key, settings.db_path).owner(api_key)


@app.command()
def export(
    batch_id: Annotated[str, typer.Argument(help="The batch (bat_…), from `taskdeck batches`.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="The file to write (default: stdout).")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv, json or jsonl (default: from --out's extension, else csv).")
    ] = None,
    basis: Annotated[
        bool, typer.Option(help="Add each output field's confidence, citations and reasoning columns.")
    ] = False,
    api_key: KeyOption = None,
    url: ServerOption = None,
    db: DbOption = None,
    database_url: UrlOption = None,
) -> None:
    """Write a batch's rows in input order: input columns, outputs (and their basis), status, error.

    CSV cells that a spreadsheet would run as a formula are written as text.
    """
    kind = _format_of(out, fmt)
    if url:
        with _client(url, api_key) as client:
            _download(client, batch_id, kind, basis, out)
        return
    settings = _settings(db, None, database_url=database_url)
    handle = _open_out(out)
    try:
        rows = asyncio.run(export_to(settings.store_url, batch_id, handle, kind, basis=basis))
    except KeyError:
        typer.echo(f"error: no batch {batch_id!r} in {settings.store_url}; `taskdeck batches` lists them", err=True)
        raise typer.Exit(2) from None
    finally:
        if out is not None:
            handle.close()
    typer.echo(f"{rows:,} rows written" + (f" to {out}" if out else ""), err=True)


PROGRESS_KEYS = ("status", "done", "failed", "running", "queued", "waiting", "row_count", "percent", "eta_seconds")


def show_progress(summary: dict[str, Any], *, as_json: bool, stream: IO[str]) -> None:
    """One progress line of a batch summary (``enrich`` and ``watch``): JSON for scripts, else a line that
    redraws itself in a terminal (one per poll when the stream is not one)."""
    if as_json:
        stream.write(json.dumps({**{k: summary[k] for k in PROGRESS_KEYS}, "cost_usd": summary["cost_usd"]}) + "\n")
    else:
        eta = "—" if summary["eta_seconds"] is None else f"{summary['eta_seconds']:,.0f} s"
        ended = summary["done"] + summary["failed"]
        stream.write(
            f"{summary['percent']:5.1f} %  rows {ended:,}/{summary['row_count']:,}: {summary['done']:,} done, "
            f"{summary['failed']:,} failed, {summary['running']:,} running, "
            f"{summary['queued'] + summary['waiting']:,} queued; ETA {eta}; ${summary['cost_usd']:,.2f}   "
            + ("\r" if stream.isatty() else "\n")
        )
    stream.flush()


def remote_enrich(
    url: str,
    api_key: str | None,
    source: Path,
    spec_body: dict[str, Any],
    out: Path | None,
    *,
    basis: bool,
    dry_run: bool,
    progress: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """``taskdeck enrich`` through a running server: check, create (or resume), follow, export.

    Returns the batch's final summary. Ctrl-C leaves the batch running on the server; the same
    command again resumes it (same bytes, same spec) and pays for nothing twice.
    """
    body: dict[str, Any] = {
        "name": source.name,
        "content_base64": base64.b64encode(source.read_bytes()).decode(),
        "spec": spec_body,
    }
    with _client(url, api_key) as client:
        check = _answer(client.post("/api/batches/check", json=body))
        for warning in check["warnings"]:
            typer.echo(f"warning: {warning}", err=True)
        if dry_run:
            for sample in check["sample"]:
                typer.echo(json.dumps(sample["request"], ensure_ascii=False))
            typer.echo(f"{check['row_count']} rows: ${check['cost_usd']:,.2f} in all (nothing was sent)", err=True)
            return {}
        made = _answer(client.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]}))
        batch = made["batch"]
        if made["resumed"]:
            typer.echo(f"resumed batch {batch['id']} (same input and options): nothing was created twice", err=True)
        while True:
            batch = _answer(client.get(f"/api/batches/{batch['id']}"))["batch"]
            progress(batch)
            if batch["status"] == "completed":
                break
            time.sleep(1.0)  # a progress poll of the server, once a second (not a test synchronisation)
        _download(client, batch["id"], _format_of(out, None), basis, out)
    summary: dict[str, Any] = batch
    return summary
