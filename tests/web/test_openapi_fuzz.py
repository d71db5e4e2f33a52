"""Schemathesis against Taskdeck's own /openapi.json: no generated request gets a server error (issue 7, item 7).

Bounded (a fixed number of examples per operation, derandomised) so it runs in every ``make test``.
Each answer must also match what the spec declares: its status code, content type and body schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from web_helpers import Web, start_web

from taskdeck.emulator import BackgroundEmulator, EmulatorSettings

KEY = "schemathesis-key"


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    with (
        BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005)) as emu,
        ExitStack() as stack,
    ):
        yield start_web(stack, Path(tmp_path_factory.mktemp("fuzz")) / "f.db", emu)


@pytest.fixture(scope="module")
def api_schema(fuzzed: Web) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{fuzzed.url}/openapi.json")


@pytest.fixture(scope="module")
def task_id(fuzzed: Web) -> str:
    """A task of the fuzzing key, so that paths with {task_id} reach their query and body checks."""
    with fuzzed.client(KEY) as client:
        created: str = client.post("/api/tasks", json={"input": "fuzz target", "processor": "lite"}).json()["task"][
            "id"
        ]
    return created


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# The list stream never ends by design (it is tested on its own); every other operation is fuzzed.
SKIP = {("GET", "/api/tasks/stream")}


def test_no_generated_request_gets_a_server_error(api_schema: schemathesis.schemas.BaseSchema, task_id: str) -> None:
    # Driven through Hypothesis directly (schemathesis' pytest plugin does not load under pytest 9).
    tested = []
    for result in api_schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # a schema that does not load fails here, as it should
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        # The real task for {task_id} (deleting is fuzzed with generated ids, so the task stays).
        pinned = {"task_id": task_id} if "{task_id}" in operation.path and operation.method != "delete" else None
        # Data that fits the spec, then data that does not (bad types, out-of-range values, odd strings).
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = CHECKS if mode is GenerationMode.POSITIVE else [not_a_server_error, content_type_conformance]

            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned))
            @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
            def fuzz(case: schemathesis.Case[Any]) -> None:
                case.call_and_validate(headers={"x-api-key": KEY}, timeout=30, checks=checks)  # noqa: B023 - run at once

            fuzz()
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 15, tested
