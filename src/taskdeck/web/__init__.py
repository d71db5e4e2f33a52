"""The web app: the REST API (HTML pages and their ``.json`` twins come with the UI)."""

from __future__ import annotations

from taskdeck.web.app import create_app

__all__ = ["create_app"]
