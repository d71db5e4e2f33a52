"""The ``taskdeck`` command line: a thin typer layer over the package."""

from __future__ import annotations

from typing import Annotated

import typer

from taskdeck import __version__

app = typer.Typer(
    name="taskdeck",
    help="Taskdeck: a self-hosted playground and run manager for the Parallel Task API.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskdeck {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Taskdeck: a self-hosted playground and run manager for the Parallel Task API."""


@app.command()
def emulator(
    host: Annotated[str | None, typer.Option(help="Interface to bind [default 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind; 0 picks a free one [default 8900].")] = None,
    time_scale: Annotated[
        float | None,
        typer.Option("--time-scale", help="Multiply every duration: 0.01 turns a 10-minute run into 6 s [default 1]."),
    ] = None,
    stream_lifetime: Annotated[
        float | None,
        typer.Option("--stream-lifetime", help="Seconds until the server closes a stream, scaled [default 570]."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for durations, content and fault draws [default 0].")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Accept only this key (repeatable). Default: any key except the magic ones."),
    ] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="Account secret that signs webhook deliveries.")] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option("--rate-limit", help="Run-creating POSTs per key per minute [default 2000]."),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(help="Global fault directives, e.g. 'drop=400%0.1;error=503%0.05' (see docs/emulator.md)."),
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


def main() -> None:
    """Console-script entry point."""
    app()
