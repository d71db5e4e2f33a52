"""Taskdeck: a self-hosted playground and run manager for the Parallel Task API."""

from __future__ import annotations

__version__ = "0.1.0"
