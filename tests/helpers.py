"""Helpers shared by the tests: a strict SSE reader and OpenAPI schema validation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).parent / "fixtures" / "parallel-task-openapi.json"


@cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC_PATH.read_text())
    return spec


@cache
def _registry() -> Registry[Any]:
    resource: Resource[Any] = Resource.from_contents(_spec(), default_specification=DRAFT202012)
    registry: Registry[Any] = Registry().with_resource("urn:parallel-spec", resource)
    return registry


def assert_schema(name: str, body: Any) -> None:
    """Fail unless ``body`` validates against ``#/components/schemas/<name>`` of Parallel's spec."""
    validator = jsonschema.Draft202012Validator(
        {"$ref": f"urn:parallel-spec#/components/schemas/{name}"}, registry=_registry()
    )
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name} does not match the spec: " + "; ".join(
        f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]
    )


def response_schema(path: str, method: str, status: int) -> Any:
    """The schema the spec declares for one response (a $ref or a oneOf)."""
    op = _spec()["paths"][path][method]
    content = op["responses"][str(status)]["content"]
    return next(iter(content.values()))["schema"]  # application/json or text/event-stream


def assert_response(path: str, method: str, response: httpx.Response) -> None:
    """Fail unless the response body matches what the spec declares for its status code."""
    schema = json.loads(
        json.dumps(response_schema(path, method, response.status_code)).replace(
            '"#/components', '"urn:parallel-spec#/components'
        )
    )
    validator = jsonschema.Draft202012Validator(schema, registry=_registry())
    errors = list(validator.iter_errors(response.json()))
    assert not errors, f"{method.upper()} {path} {response.status_code}: " + "; ".join(e.message for e in errors[:5])


def assert_event(path: str, event: dict[str, Any]) -> None:
    """Fail unless one SSE payload matches the spec's event union for ``path`` (known types only)."""
    schema = response_schema(path, "get", 200)
    mapping = schema["discriminator"]["mapping"]
    assert event["type"] in mapping, f"event type {event['type']!r} is not in the spec's union for {path}"
    assert_schema(mapping[event["type"]].rsplit("/", 1)[1], event)


@dataclass
class SseEvent:
    event: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SseRead:
    events: list[SseEvent]
    raw: bytes
    cut: bool  # the connection ended mid-body (no clean end of the chunked stream)
    status: int


def parse_sse(raw: bytes) -> list[SseEvent]:
    """Parse SSE text strictly (LF or CRLF), ignoring ``:`` comments; keep a trailing partial block out."""
    text = raw.decode().replace("\r\n", "\n")
    blocks = text.split("\n\n")
    out = []
    for block in blocks[:-1]:  # the last piece has no blank line after it: incomplete
        event = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        if data:
            out.append(SseEvent(event, "\n".join(data)))
    return out


def read_sse(url: str, key: str = "test-key", headers: dict[str, str] | None = None, timeout: float = 30.0) -> SseRead:
    """Read one SSE connection to its end (server close or cut)."""
    raw = b""
    cut = False
    with (
        httpx.Client(timeout=timeout) as client,
        client.stream("GET", url, headers={"x-api-key": key, "accept": "text/event-stream", **(headers or {})}) as resp,
    ):
        if resp.status_code != 200:
            resp.read()
            return SseRead([], resp.content, False, resp.status_code)
        try:
            for chunk in resp.iter_raw():
                raw += chunk
        except (httpx.RemoteProtocolError, httpx.ReadError):
            cut = True
    return SseRead(parse_sse(raw), raw, cut, 200)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Re-check ``condition`` until it holds; a condition wait, not a fixed sleep."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
