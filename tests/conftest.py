"""Fixtures: an emulator on a real loopback socket, per module or made to order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings

# 0.002: a pro run (2-10 min) lasts 0.24-1.2 s, an ultra8x run (5 min-2 h) 0.6-14 s.
FAST_SCALE = 0.002


@pytest.fixture(scope="module")
def emulator() -> Iterator[BackgroundEmulator]:
    """A shared emulator for a test module, fast time scale, default settings otherwise."""
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=FAST_SCALE)) as emu:
        yield emu


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., BackgroundEmulator]]:
    """Start an emulator with custom settings; stopped at the end of the test."""
    with ExitStack() as stack:

        def make(**settings: Any) -> BackgroundEmulator:
            settings.setdefault("port", 0)
            settings.setdefault("time_scale", FAST_SCALE)
            return stack.enter_context(BackgroundEmulator(EmulatorSettings(**settings)))

        yield make
