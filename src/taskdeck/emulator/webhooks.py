"""Webhook delivery as contract §10 describes it (Standard Webhooks headers).

When a run with ``webhook.url`` completes or fails, the emulator POSTs
``{"timestamp", "type": "task_run.status", "data": <TaskRun>}`` signed with the
account secret, and retries any non-2xx answer after 5 s, doubling the delay,
for 48 h (both scaled by the time scale).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from taskdeck.emulator.run import Run, rfc3339
from taskdeck.taskspec import compact_json

__all__ = ["WebhookSender", "sign", "verify"]

log = logging.getLogger("taskdeck.emulator.webhooks")


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one delivery."""
    msg = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), msg, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True when any signature in ``webhook-signature`` matches (constant-time compare)."""
    expected = sign(secret, headers["webhook-id"], headers["webhook-timestamp"], body)
    return any(hmac.compare_digest(expected, sig) for sig in headers.get("webhook-signature", "").split())


class WebhookSender:
    """Schedules one delivery task per run that asked for a webhook."""

    def __init__(self, secret: str, first_retry: float, retry_span: float) -> None:
        self.secret = secret
        self.first_retry = first_retry
        self.retry_span = retry_span
        self.deliveries: list[dict[str, Any]] = []  # introspection: one row per attempt
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    def schedule(self, run: Run) -> None:
        hook = run.request.get("webhook")
        if not hook or not hook.get("url"):
            return
        task = asyncio.create_task(self._deliver(run, hook["url"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, run: Run, url: str) -> None:
        await asyncio.sleep(max(0.0, run.created_mono + run.ends_at - time.monotonic()))
        if run.vanished(run.ends_at):
            return  # forgotten before it ended (vanish): for clients it never completed
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        webhook_id = f"whevent_{uuid.uuid4().hex}"
        body = compact_json(
            {"timestamp": rfc3339(datetime.now(UTC)), "type": "task_run.status", "data": run.wire(run.elapsed())}
        ).encode()
        delay = self.first_retry
        give_up = time.monotonic() + self.retry_span
        attempt = 0
        while True:
            attempt += 1
            stamp = str(int(time.time()))
            headers = {
                "content-type": "application/json",
                "webhook-id": webhook_id,
                "webhook-timestamp": stamp,
                "webhook-signature": sign(self.secret, webhook_id, stamp, body),
            }
            status: int | None = None
            try:
                resp = await self._client.post(url, content=body, headers=headers)
                status = resp.status_code
            except httpx.HTTPError as exc:
                log.info("webhook %s to %s failed: %s", webhook_id, url, type(exc).__name__)
            self.deliveries.append(
                {"run_id": run.run_id, "webhook_id": webhook_id, "attempt": attempt, "status": status}
            )
            if status is not None and 200 <= status < 300:
                return
            if time.monotonic() + delay > give_up:
                return
            await asyncio.sleep(delay)
            delay *= 2

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
