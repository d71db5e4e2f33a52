"""The official SDK (parallel-web) against the emulator: every output mode, several processors, groups."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import jsonschema
import parallel
import pytest
from parallel import AsyncParallel, DefaultAioHttpClient

from taskdeck.emulator import BackgroundEmulator

JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "ceo": {"type": "string", "description": "Name of the CEO"},
        "employees": {"type": "integer"},
        "public": {"type": "boolean"},
    },
    "required": ["ceo", "employees", "public"],
    "additionalProperties": False,
}
MODES: dict[str, Any] = {
    "text": {"output_schema": {"type": "text", "description": "A short profile"}},
    "json": {"output_schema": {"type": "json", "json_schema": JSON_SCHEMA}},
    "auto": {"output_schema": {"type": "auto"}},
}


async def follow(client: AsyncParallel, run_id: str) -> list[Any]:
    """Follow a run's stream to its terminal state, reconnecting when the server closes it.

    A connection to a run that has already ended (a short run under CPU load can end before
    the stream is opened) starts with that terminal state, then replays the history and the
    final state (contract §8). So a terminal state leading a connection means "read on to the
    end of this connection"; any later terminal state is the end of the run.
    """
    events: list[Any] = []
    while True:
        stream = await client.task_run.events(run_id)
        async with stream:  # closes the response when we return mid-stream
            leading = True
            ended_before_connect = False
            async for event in stream:
                events.append(event)
                if event.type == "task_run.state" and not event.run.is_active:
                    if not leading:
                        return events
                    ended_before_connect = True
                leading = False
            if ended_before_connect:
                return events


async def run_one(client: AsyncParallel, processor: str, mode: str) -> None:
    run = await client.task_run.create(
        input=f"Profile of Example Corp ({processor}, {mode})",
        processor=processor,
        task_spec=MODES[mode],
        enable_events=True,
        betas=["events-sse-2025-07-24"],
    )
    assert run.status == "queued" and run.run_id.startswith("trun_")
    events = await follow(client, run.run_id)
    assert events[0].type == "task_run.state"
    assert any(e.type.startswith("task_run.progress_msg.") for e in events)
    final = events[-1]
    assert final.run.status == "completed" and final.output is not None
    result = await client.task_run.result(run.run_id, api_timeout=60)
    assert result.run.status == "completed"
    out = result.output
    if mode == "text":
        assert out.type == "text" and isinstance(out.content, str) and out.basis[0].field == "output"
    elif mode == "json":
        assert out.type == "json"
        jsonschema.validate(out.content, JSON_SCHEMA)
        assert {b.field for b in out.basis} == set(cast(dict[str, Any], JSON_SCHEMA["properties"]))
    else:
        assert out.type == "json" and out.output_schema is not None
        jsonschema.validate(out.content, out.output_schema)
    assert final.output.content == out.content
    echoed = await client.task_run.retrieve_input(run.run_id)
    assert echoed.processor == processor


async def test_sdk_runs_every_mode_on_lite_core_and_ultra8x(emulator: BackgroundEmulator) -> None:
    # A task group, not gather: when one run fails, the others are cancelled and awaited
    # before the client closes. With gather they went on after it closed, and a connection
    # opened then was never closed: a ResourceWarning in whichever later test collected it.
    async with AsyncParallel(api_key="sdk-key", base_url=emulator.url) as client, asyncio.TaskGroup() as group:
        for processor in ("lite", "core", "ultra8x"):
            for mode in ("text", "json", "auto"):
                group.create_task(run_one(client, processor, mode))


async def test_sdk_on_aiohttp_transport(emulator: BackgroundEmulator) -> None:
    async with AsyncParallel(api_key="sdk-key", base_url=emulator.url, http_client=DefaultAioHttpClient()) as client:
        await run_one(client, "pro-fast", "json")


async def test_sdk_tolerates_keepalives_crlf_and_unknown_types(emulator: BackgroundEmulator) -> None:
    async with AsyncParallel(api_key="sdk-key", base_url=emulator.url) as client:
        run = await client.task_run.create(
            input="x", processor="pro", metadata={"emulator": "duration=120;keepalive=0.01;crlf;unknown"}
        )
        events = await follow(client, run.run_id)
        types = [e.type for e in events]
        assert "task_run.progress_msg.tool" in types and "task_run.emulator_diagnostic" in types
        assert types[-1] == "task_run.state"


async def test_sdk_error_classes(emulator: BackgroundEmulator) -> None:
    async with AsyncParallel(api_key="emu-invalid", base_url=emulator.url, max_retries=0) as client:
        with pytest.raises(parallel.AuthenticationError):
            await client.task_run.create(input="x", processor="lite")
    async with AsyncParallel(api_key="k", base_url=emulator.url, max_retries=0) as client:
        with pytest.raises(parallel.PermissionDeniedError):
            await client.task_run.create(input="x", processor="gigantic")
        with pytest.raises(parallel.UnprocessableEntityError):
            await client.task_run.create(input="x", processor="lite", metadata={"k" * 17: "v"})
        with pytest.raises(parallel.NotFoundError):
            await client.task_run.retrieve("trun_" + "0" * 32)
        run = await client.task_run.create(input="x", processor="lite", metadata={"emulator": "duration=100000"})
        with pytest.raises(parallel.APIStatusError) as info:
            await client.task_run.result(run.run_id, api_timeout=0)
        assert info.value.status_code == 408


async def test_sdk_task_group_end_to_end(emulator: BackgroundEmulator) -> None:
    async with AsyncParallel(api_key="sdk-key", base_url=emulator.url) as client:
        group = await client.task_group.create(metadata={"source": "sdk-test"})
        added = await client.task_group.add_runs(
            group.task_group_id,
            inputs=[{"input": f"Company {i}", "processor": "lite"} for i in range(5)],
            default_task_spec=MODES["json"],
        )
        assert len(added.run_ids) == 5
        finished: list[str] = []
        stream = await client.task_group.events(group.task_group_id)
        async for event in stream:
            if event.type == "task_run.state":
                finished.append(event.run.run_id)
            elif event.type == "task_group_status" and not event.status.is_active:
                break
        assert sorted(finished) == sorted(added.run_ids)
        status = await client.task_group.retrieve(group.task_group_id)
        assert status.status.task_run_status_counts == {"completed": 5}
        runs = await client.task_group.get_runs(group.task_group_id, include_output=True)
        outputs = [e async for e in runs]
        assert len(outputs) == 5 and all(getattr(e, "output", None) is not None for e in outputs)
        one = await client.task_group.retrieve_run(added.run_ids[0], task_group_id=group.task_group_id)
        assert one.status == "completed" and one.task_group_id == group.task_group_id


async def test_sdk_completes_every_processor_in_every_mode(make_emulator: Any) -> None:
    """All 18 processors x 3 output modes, at a time scale where ultra8x lasts at most 3.6 s."""
    from taskdeck.processors import processor_names

    emu = make_emulator(time_scale=0.0005)
    async with AsyncParallel(api_key="sdk-key", base_url=emu.url) as client:

        async def one(processor: str, mode: str) -> str:
            run = await client.task_run.create(input=f"{processor} {mode}", processor=processor, task_spec=MODES[mode])
            result = await client.task_run.result(run.run_id, api_timeout=30)
            assert result.run.status == "completed" and result.run.processor == processor
            return result.output.type

        async with asyncio.TaskGroup() as group:  # siblings cancelled and awaited if one fails
            tasks = [group.create_task(one(p, m)) for p in processor_names() for m in MODES]
    kinds = [task.result() for task in tasks]
    assert kinds.count("text") == 18 and kinds.count("json") == 36
