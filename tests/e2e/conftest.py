"""Browser fixtures: one chromium and one emulator per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_helpers import CHROMIUM, LAUNCH_ARGS
from playwright.sync_api import Browser, sync_playwright

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def emulator() -> Iterator[BackgroundEmulator]:
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.01)) as emu:
        yield emu
