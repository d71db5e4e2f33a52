"""Webhooks: signed per contract §10, retried on non-2xx with doubling delays."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from taskdeck.emulator.server import BackgroundServer

SECRET = "whsec_test_secret"


class Receiver:
    """A webhook endpoint that fails the first ``failures`` deliveries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.done = threading.Event()

    async def hook(self, request: Request) -> Response:
        self.received.append((dict(request.headers), await request.body()))
        if len(self.received) <= self.failures:
            return Response(status_code=500)
        self.done.set()
        return Response(status_code=204)


def contract_verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The contract's algorithm, written out independently of the emulator's code."""
    msg = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha256).digest()).decode()
    return any(
        sig.startswith("v1,") and hmac.compare_digest(sig[3:], expected) for sig in headers["webhook-signature"].split()
    )


def test_webhook_is_signed_and_retried(make_emulator: Any) -> None:
    receiver = Receiver(failures=2)
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    with BackgroundServer(app) as hook_server:
        emu = make_emulator(webhook_secret=SECRET)
        body = {
            "input": "x",
            "processor": "lite",
            "webhook": {"url": f"{hook_server.url}/hook", "event_types": ["task_run.status"]},
        }
        run = httpx.post(f"{emu.url}/v1/tasks/runs", json=body, headers={"x-api-key": "k"}).json()
        assert receiver.done.wait(timeout=30)
    assert len(receiver.received) == 3
    ids = {h["webhook-id"] for h, _ in receiver.received}
    assert len(ids) == 1 and next(iter(ids)).startswith("whevent_")
    for headers, raw in receiver.received:
        assert headers["content-type"] == "application/json"
        assert contract_verify(SECRET, headers, raw)
        assert not contract_verify("wrong-secret", headers, raw)
        payload = json.loads(raw)
        assert payload["type"] == "task_run.status"
        assert payload["data"]["run_id"] == run["run_id"] and payload["data"]["status"] == "completed"
        assert "output" not in payload
    stats = httpx.get(f"{emu.url}/_emulator/stats").json()
    assert [d["status"] for d in stats["webhook_deliveries"]] == [500, 500, 204]
