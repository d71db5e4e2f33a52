"""A local emulator of the Parallel Task API, faithful to its wire contract.

``create_app(settings)`` gives the ASGI app; ``BackgroundEmulator`` runs it on a
real socket for tests and the demo; ``taskdeck emulator`` runs it from the shell.
See docs/emulator.md for directives (faults), magic keys and introspection.
"""

from __future__ import annotations

from taskdeck.emulator.app import create_app
from taskdeck.emulator.server import BackgroundEmulator, run_emulator
from taskdeck.emulator.settings import EmulatorSettings

__all__ = ["BackgroundEmulator", "EmulatorSettings", "create_app", "run_emulator"]
