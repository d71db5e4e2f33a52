"""Running the emulator: in the foreground (CLI) or in a background thread (tests, demo)."""

from __future__ import annotations

import asyncio
import logging
import resource
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

import uvicorn
from starlette.types import ASGIApp

from taskdeck.emulator.app import create_app
from taskdeck.emulator.settings import EmulatorSettings

__all__ = ["BackgroundEmulator", "BackgroundServer", "raise_fd_limit", "run_emulator"]

# The drop fault ends a response mid-body on purpose; uvicorn reports that as an
# application error, which would bury real errors in noise.
_DROP_NOTICE = "ASGI callable returned without completing response."


class _DropNoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != _DROP_NOTICE


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropNoiseFilter) for f in logger.filters):
        logger.addFilter(_DropNoiseFilter())


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard limit (10,000 streams need 10,000 sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _uvicorn_config(app: ASGIApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        backlog=16384,
        timeout_keep_alive=30,
        lifespan="on",
        # uvicorn believes X-Forwarded-* from 127.0.0.1 by default; Taskdeck decides whom to believe itself.
        proxy_headers=False,
        # Open event streams must not keep a stopping server alive for ever.
        timeout_graceful_shutdown=5,
    )


def run_emulator(settings: EmulatorSettings, *, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    _install_log_filter()
    raise_fd_limit()
    uvicorn.Server(_uvicorn_config(create_app(settings), settings.host, settings.port, log_level)).run()


class BackgroundServer:
    """An ASGI app on a real socket, served by uvicorn in a daemon thread.

    Use as a context manager; ``url`` is its base URL. Port 0 picks a free port.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        before_shutdown: Callable[[], None] | None = None,
    ) -> None:
        _install_log_filter()
        self.host = host
        self._before_shutdown = before_shutdown
        self._server = uvicorn.Server(_uvicorn_config(app, host, port, log_level))
        self._thread = threading.Thread(target=self._run, name="taskdeck-server", daemon=True)
        self._ready = threading.Event()
        self.port = 0

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        # uvicorn.Server.serve() would install signal handlers, which only the main thread may do.
        config = self._server.config
        if not config.loaded:
            config.load()
        self._server.lifespan = config.lifespan_class(config)
        await self._server.startup()
        if self._server.servers:
            self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self._ready.set()
        await self._server.main_loop()
        if self._before_shutdown is not None:
            self._before_shutdown()  # e.g. end open event streams, which uvicorn would wait for
        await self._server.shutdown()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(timeout=30) or not self.port:
            raise RuntimeError("the server did not start within 30 s")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class BackgroundEmulator(BackgroundServer):
    """The emulator in a background thread (tests, the demo)."""

    def __init__(self, settings: EmulatorSettings | None = None, *, log_level: str = "warning") -> None:
        self.settings = settings or EmulatorSettings(port=0)
        super().__init__(
            create_app(self.settings), host=self.settings.host, port=self.settings.port, log_level=log_level
        )
