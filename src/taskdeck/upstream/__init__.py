"""Talking to Parallel: the SDK-based client and a tolerant SSE reader."""

from __future__ import annotations

from taskdeck.upstream.client import Upstream, UpstreamError
from taskdeck.upstream.sse import SseMessage, SseParser

__all__ = ["SseMessage", "SseParser", "Upstream", "UpstreamError"]
