"""``python -m taskdeck`` runs the CLI."""

from __future__ import annotations

from taskdeck.cli import main

main()
