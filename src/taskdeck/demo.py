"""Demo mode (``taskdeck serve --demo``): the built-in emulator as Parallel, on files of its own.

The demo keeps README's promise ("close the laptop and come back") like real mode does:
its emulator appends every create to a state file beside the demo database and reloads
it at start, so after a restart the runs Taskdeck was following still exist upstream
and are followed to their end. The emulator's port may change between restarts: the
engine reads the base URL from its settings, never from stored tasks.

The demo never shares real mode's database: its simulated runs do not belong among
billed ones, and real runs would 404 against the emulator.
"""

from __future__ import annotations

from pathlib import Path

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings

__all__ = ["DEMO_DB_NAME", "DEMO_TIME_SCALE", "demo_settings", "emulator_state_path", "start_demo_emulator"]

DEMO_DB_NAME = "demo.db"
# A pro run (2-10 min) takes 12-60 s: long enough to watch, short enough to wait for.
DEMO_TIME_SCALE = 0.1


def demo_settings(settings: Settings, db: Path | None) -> Settings:
    """``settings`` on the demo's database: ``db`` when given (``--db``), else ``demo.db`` beside real mode's."""
    # Never TASKDECK_DATABASE_URL either: simulated runs do not belong in a shared, real database.
    return settings.with_overrides(
        db_path=db if db is not None else settings.db_path.with_name(DEMO_DB_NAME), database_url=""
    )


def emulator_state_path(db_path: Path) -> Path:
    """The demo emulator's state file, beside the demo database: ``demo.db`` → ``demo.emulator.jsonl``."""
    return db_path.with_name(db_path.stem + ".emulator.jsonl")


def start_demo_emulator(settings: Settings, *, time_scale: float = DEMO_TIME_SCALE) -> BackgroundEmulator:
    """The demo's emulator on a free loopback port, keeping its runs in the file beside ``settings.db_path``."""
    state = emulator_state_path(settings.db_path)
    # The database folder is created 0700 by the store; the emulator may start first.
    state.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    emulator = BackgroundEmulator(EmulatorSettings(port=0, time_scale=time_scale, state_path=str(state)))
    return emulator.start()
