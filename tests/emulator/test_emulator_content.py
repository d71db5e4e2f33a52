"""JSON outputs for schemas with ``$ref``: local references resolved, recursion bounded, remote ones never fetched."""

from __future__ import annotations

import errno
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import jsonschema
import pytest

from helpers import assert_response
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.content import json_output, resolve_local_ref

KEY = {"x-api-key": "test-key"}
RUNS = "/v1/tasks/runs"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "Full name"},
        "reports": {"type": "array", "items": {"$ref": "#/$defs/person"}},
    },
    "required": ["name", "reports"],
    "additionalProperties": False,
}
DEFS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"person": PERSON, "money": {"type": ["number", "null"], "description": "USD"}},
    "definitions": {"country": {"type": "string", "enum": ["FR", "DE", "JP"]}},
    "properties": {
        "ceo": {"$ref": "#/$defs/person", "description": "The CEO and the tree below them"},
        "revenue": {"$ref": "#/$defs/money"},
        "country": {"$ref": "#/definitions/country"},
        "board": {"type": "array", "items": {"allOf": [{"$ref": "#/$defs/person"}]}},
        "parent": {"anyOf": [{"$ref": "#"}, {"type": "null"}]},
    },
    "required": ["ceo", "revenue", "country", "board", "parent"],
    "additionalProperties": False,
}


def json_spec(schema: dict[str, Any]) -> dict[str, Any]:
    return {"output_schema": {"type": "json", "json_schema": schema}}


def run_result(emu: BackgroundEmulator, schema: dict[str, Any], text: str = "Example Corp") -> httpx.Response:
    """Create a lite run with ``schema`` and long-poll its result (the run lasts at most 0.12 s)."""
    created = httpx.post(
        emu.url + RUNS, json={"input": text, "processor": "lite", "task_spec": json_spec(schema)}, headers=KEY
    )
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    return httpx.get(f"{emu.url}{RUNS}/{run_id}/result", params={"timeout": 30}, headers=KEY, timeout=20)


def test_local_refs_to_defs_definitions_and_root_give_content_that_validates(emulator: BackgroundEmulator) -> None:
    for text in ("Example Corp", "Other Corp", "Third Corp"):
        resp = run_result(emulator, DEFS_SCHEMA, text)
        assert resp.status_code == 200, resp.text
        assert_response(RUNS + "/{run_id}/result", "get", resp)
        content = resp.json()["output"]["content"]
        jsonschema.validate(content, DEFS_SCHEMA)
        assert isinstance(content["ceo"]["name"], str) and content["country"] in ("FR", "DE", "JP")


@pytest.mark.parametrize("seed", range(40))
def test_generated_values_validate_for_many_draws(seed: int) -> None:
    content, basis = json_output(DEFS_SCHEMA, "Example Corp", random.Random(seed))
    jsonschema.validate(content, DEFS_SCHEMA)
    assert [b["field"] for b in basis] == list(content)


def test_self_reference_in_a_property_neither_hangs_nor_raises(emulator: BackgroundEmulator) -> None:
    optional = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "self": {"$ref": "#"}},
        "required": ["name"],
        "additionalProperties": False,
    }
    resp = run_result(emulator, optional)
    assert resp.status_code == 200, resp.text
    jsonschema.validate(resp.json()["output"]["content"], optional)
    # Required and not nullable: no finite value exists, but the run still completes.
    required = {**optional, "required": ["name", "self"]}
    resp = run_result(emulator, required)
    assert resp.status_code == 200, resp.text
    assert resp.json()["output"]["content"]["self"]["name"]
    # Many properties all pointing at the root: the output stays bounded.
    fan = {"type": "object", "properties": {f"p{i}": {"$ref": "#"} for i in range(50)}}
    started = time.monotonic()
    resp = run_result(emulator, fan)
    assert resp.status_code == 200 and time.monotonic() - started < 10
    assert len(resp.content) < 5_000_000


def test_cycle_of_bare_references_gives_a_value() -> None:
    schema = {
        "type": "object",
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "properties": {"x": {"$ref": "#/$defs/a"}, "dangling": {"$ref": "#/$defs/missing"}},
    }
    content, _ = json_output(schema, "x", random.Random(0))
    assert set(content) == {"x", "dangling"}


def test_resolve_local_ref_is_a_json_pointer_into_the_root() -> None:
    root = {"$defs": {"a/b": {"type": "integer"}, "c~d": {"type": "string"}, "e f": {"type": "boolean"}}}
    assert resolve_local_ref(root, "#") is root
    assert resolve_local_ref(root, "#/$defs/a~1b") == {"type": "integer"}
    assert resolve_local_ref(root, "#/$defs/c~0d") == {"type": "string"}
    assert resolve_local_ref(root, "#/$defs/e%20f") == {"type": "boolean"}
    for ref in ("#/$defs/nope", "http://example.com/s.json", "file:///etc/passwd", "other.json#/x", "#anchor"):
        assert resolve_local_ref(root, ref) is None


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP socket listening on loopback that never accepts: a connection attempt would wait in its backlog."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def test_remote_refs_are_never_fetched_or_read(
    emulator: BackgroundEmulator, listener: socket.socket, tmp_path: Path
) -> None:
    port = listener.getsockname()[1]
    # A FIFO: a reader opening it would block until a writer came, so reading it would hang the run.
    fifo = tmp_path / "schema.json"
    os.mkfifo(fifo)
    schema = {
        "type": "object",
        "properties": {
            "http": {"$ref": f"http://127.0.0.1:{port}/schema.json"},
            "http_def": {"$ref": f"http://127.0.0.1:{port}/schema.json#/$defs/x", "description": "A remote part"},
            "file": {"$ref": fifo.as_uri()},
            "relative": {"$ref": "schema.json"},
        },
        "required": ["http", "http_def", "file", "relative"],
        "additionalProperties": False,
    }
    # The emulator refuses such a schema as Taskdeck does (422 naming each reference)...
    created = httpx.post(
        emulator.url + RUNS, json={"input": "x", "processor": "lite", "task_spec": json_spec(schema)}, headers=KEY
    )
    assert created.status_code == 422, created.text
    assert "only local references" in created.json()["error"]["message"]
    # ...and its content generator, given one anyway, treats remote references as unconstrained values.
    started = time.monotonic()
    content, _ = json_output(schema, "Example Corp", random.Random(1))
    assert time.monotonic() - started < 10
    assert set(content) == set(cast(dict[str, Any], schema["properties"]))
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing ever connected
    # ENXIO: no process has the FIFO open for reading (nor blocked opening it).
    with pytest.raises(OSError, match=os.strerror(errno.ENXIO)) as info:
        os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    assert info.value.errno == errno.ENXIO
