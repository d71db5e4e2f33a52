"""Web fixtures: one Taskdeck per module, or one per test with custom settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from web_helpers import Web, start_web

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings


@pytest.fixture(scope="module")
def web_emulator() -> Iterator[BackgroundEmulator]:
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005, record_sent=True)) as emu:
        yield emu


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, web_emulator: BackgroundEmulator) -> Iterator[Web]:
    """One Taskdeck per test module."""
    with ExitStack() as stack:
        yield start_web(stack, tmp_path_factory.mktemp("web") / "taskdeck.db", web_emulator)


@pytest.fixture
def make_web(tmp_path: Path, web_emulator: BackgroundEmulator) -> Iterator[Callable[..., Web]]:
    """A Taskdeck with custom settings, for one test."""
    with ExitStack() as stack:
        made = 0

        def make(**settings: Any) -> Web:
            nonlocal made
            made += 1
            return start_web(stack, tmp_path / f"t{made}.db", web_emulator, **settings)

        yield make
