"""The emulator's state file: every create, appended as one JSON line, reloaded at start.

A run's plan is a pure function of the seed, its request, its directives, the time
scale and its creation time (see run.py), so keeping those is keeping the run: after
a restart the same id answers with the same status, the same replayed history (same
timestamps) and the same output, and a run that was still going ends when it was
always going to. Groups are kept the same way; their runs are the run lines naming
them, in file order, which is the order they were added in.

The file holds request bodies but never a key: runs and groups belong to the SHA-256
of the key that created them. It is append-only JSON Lines because a create is one
small write and there is nothing to update later; a line cut short by a crash is
skipped at load, and the next append starts on a fresh line.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import IO, Any

__all__ = ["FORMAT_VERSION", "StateFile", "parse_time"]

log = logging.getLogger("taskdeck.emulator.statefile")

FORMAT_VERSION = 1


class StateFile:
    """One state file: ``load()`` its records once, then ``append()`` one per create."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self._fh: IO[str] | None = None

    def load(self) -> list[dict[str, Any]]:
        """Every well-formed record in file order (none when the file does not exist yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                # Only a crash mid-append leaves such a line; what it described was never answered.
                log.warning("%s:%d: skipping a line that is not JSON (cut short by a crash?)", self.path, number)
                continue
            if not isinstance(record, dict) or record.get("v") != FORMAT_VERSION:
                log.warning("%s:%d: skipping a record this emulator does not understand", self.path, number)
                continue
            records.append(record)
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it, so it survives this process (not a power cut: no fsync)."""
        if self._fh is None:
            self._fh = self._open()
        line = json.dumps({"v": FORMAT_VERSION, **record}, separators=(",", ":"), ensure_ascii=False)
        self._fh.write(line + "\n")
        self._fh.flush()

    def _open(self) -> IO[str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # 0600: the file holds people's task inputs.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fh = open(fd, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the life of the emulator
        size = self.path.stat().st_size
        if size:
            with self.path.open("rb") as check:
                check.seek(size - 1)
                if check.read(1) != b"\n":
                    fh.write("\n")  # a line cut short by a crash must not swallow the next record
        return fh

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as written by ``run.rfc3339`` (microseconds, ``Z``)."""
    return datetime.fromisoformat(text)
