"""Every documented error code of the emulator, with the spec's bodies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from helpers import assert_response
from taskdeck.emulator import BackgroundEmulator

RUNS = "/v1/tasks/runs"
GOOD = {"input": "x", "processor": "lite"}


def post(emu: BackgroundEmulator, body: Any, key: str | None = "test-key", **kw: Any) -> httpx.Response:
    headers = {"x-api-key": key} if key is not None else {}
    if isinstance(body, bytes | str):
        return httpx.post(emu.url + RUNS, content=body, headers={**headers, "content-type": "application/json"})
    return httpx.post(emu.url + RUNS, json=body, headers=headers, **kw)


def message(resp: httpx.Response) -> str:
    text: str = resp.json()["error"]["message"]
    return text


def test_missing_key_is_401(emulator: BackgroundEmulator) -> None:
    resp = post(emulator, GOOD, key=None)
    assert resp.status_code == 401
    assert_response(RUNS, "post", resp)
    assert "x-api-key" in message(resp)
    assert httpx.get(f"{emulator.url}{RUNS}/trun_x").status_code == 401


def test_magic_invalid_key_is_401_and_no_credit_key_is_402(emulator: BackgroundEmulator) -> None:
    assert post(emulator, GOOD, key="emu-invalid-1").status_code == 401
    resp = post(emulator, GOOD, key="emu-nocredit-1")
    assert resp.status_code == 402
    assert_response(RUNS, "post", resp)
    assert "credit" in message(resp).lower()


def test_configured_keys_only(make_emulator: Any) -> None:
    emu = make_emulator(api_keys=("alpha",))
    assert post(emu, GOOD, key="alpha").status_code == 202
    assert post(emu, GOOD, key="beta").status_code == 401


def test_unknown_processor_is_403(emulator: BackgroundEmulator) -> None:
    resp = post(emulator, {"input": "x", "processor": "mega"})
    assert resp.status_code == 403
    assert_response(RUNS, "post", resp)
    assert "mega" in message(resp)


def test_unknown_run_and_other_keys_run_are_404(emulator: BackgroundEmulator) -> None:
    run_id = post(emulator, GOOD).json()["run_id"]
    for path in ("", "/input", "/result", "/events"):
        resp = httpx.get(f"{emulator.url}{RUNS}/trun_{'0' * 32}{path}", headers={"x-api-key": "test-key"})
        assert resp.status_code == 404, path
        assert_response(RUNS + "/{run_id}" + path, "get", resp)
        other = httpx.get(f"{emulator.url}{RUNS}/{run_id}{path}", headers={"x-api-key": "another-key"})
        assert other.status_code == 404


def test_unknown_path_is_json_404(emulator: BackgroundEmulator) -> None:
    resp = httpx.get(f"{emulator.url}/v1/nothing", headers={"x-api-key": "k"})
    assert resp.status_code == 404 and resp.json()["type"] == "error"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"processor": "lite"}, "input"),
        ({"input": "x"}, "processor"),
        ({"input": 5, "processor": "lite"}, "input"),
        ({"input": "", "processor": "lite"}, "input"),
        ({**GOOD, "task_spec": {"output_schema": {"type": "json", "json_schema": {"type": "array"}}}}, "json_schema"),
        (
            {
                **GOOD,
                "task_spec": {"output_schema": {"json_schema": {"anyOf": [], "type": "object", "properties": {}}}},
            },
            "anyOf",
        ),
        (
            {
                **GOOD,
                "task_spec": {
                    "output_schema": {
                        "json_schema": {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}
                    }
                },
            },
            "maxLength",
        ),
        (
            {
                **GOOD,
                "task_spec": {
                    "output_schema": {"json_schema": {"type": "object", "properties": {"a": {"type": "null"}}}}
                },
            },
            "null",
        ),
        ({**GOOD, "task_spec": {"input_schema": "x"}}, "output_schema"),
        ({**GOOD, "task_spec": {"output_schema": {"type": "nope"}}}, "type"),
        ({**GOOD, "metadata": {"a_key_that_is_far_too_long": "v"}}, "metadata"),
        ({**GOOD, "metadata": {"k": "v" * 513}}, "metadata"),
        ({**GOOD, "metadata": {"k": ["list"]}}, "metadata"),
        ({**GOOD, "source_policy": {"include_domains": [f"d{i}.com" for i in range(201)]}}, "source_policy"),
        ({**GOOD, "source_policy": {"after_date": "yesterday"}}, "after_date"),
        ({**GOOD, "advanced_settings": {"location": "usa"}}, "location"),
        ({**GOOD, "enable_events": "yes"}, "enable_events"),
        ({**GOOD, "mcp_servers": [{"url": "https://m"}]}, "name"),
        ({**GOOD, "mcp_servers": [{"url": "https://m", "name": f"s{i}"} for i in range(11)]}, "mcp_servers"),
        ({**GOOD, "webhook": {"url": "ftp://x"}}, "webhook.url"),
        ({**GOOD, "webhook": {"url": "https://x", "event_types": ["task_run.progress"]}}, "event_types"),
        ({**GOOD, "metadata": {"emulator": "explode"}}, "metadata.emulator"),
        ([1, 2], "body"),
    ],
)
def test_validation_errors_are_422_naming_the_field(emulator: BackgroundEmulator, body: Any, field: str) -> None:
    resp = post(emulator, body)
    assert resp.status_code == 422, resp.text
    assert_response(RUNS, "post", resp)
    assert field in message(resp)


def test_schema_limits(emulator: BackgroundEmulator) -> None:
    def spec(schema: dict[str, Any]) -> dict[str, Any]:
        return {**GOOD, "task_spec": {"output_schema": {"type": "json", "json_schema": schema}}}

    many = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(101)}}
    assert "101 properties" in message(post(emulator, spec(many)))
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(6):
        deep = {"type": "object", "properties": {"x": deep}}
    assert "nest 6 levels" in message(post(emulator, spec(deep)))
    ok_deep: dict[str, Any] = {"type": "string"}
    for _ in range(5):
        ok_deep = {"type": "object", "properties": {"x": ok_deep}, "required": ["x"], "additionalProperties": False}
    assert post(emulator, spec(ok_deep)).status_code == 202
    enums = {"type": "object", "properties": {"e": {"type": "string", "enum": [f"v{i}" for i in range(501)]}}}
    assert "501 enum values" in message(post(emulator, spec(enums)))
    long_enums = {"type": "object", "properties": {"e": {"type": "string", "enum": [f"{i:030d}" for i in range(260)]}}}
    assert "7500 characters" in message(post(emulator, spec(long_enums)))
    big = {"type": "object", "properties": {"a": {"type": "string", "description": "d" * 15_000}}}
    assert "task spec is" in message(post(emulator, spec(big)))
    small_spec = {"type": "object", "properties": {"a": {"type": "string"}}}
    resp = post(emulator, {**spec(small_spec), "input": "i" * 25_000})
    assert resp.status_code == 422 and "25000" in message(resp)


def test_malformed_json_is_422(emulator: BackgroundEmulator) -> None:
    resp = post(emulator, b'{"input": "x", "processor": ')
    assert resp.status_code == 422
    assert_response(RUNS, "post", resp)
    assert "not valid JSON" in message(resp)


def test_rate_limit_429_with_retry_after(make_emulator: Any) -> None:
    emu = make_emulator(rate_limit_per_minute=3)
    codes = [post(emu, GOOD, key="rl").status_code for _ in range(3)]
    assert codes == [202, 202, 202]
    resp = post(emu, GOOD, key="rl")
    assert resp.status_code == 429
    assert_response(RUNS, "post", resp)
    assert 1 <= int(resp.headers["retry-after"]) <= 60
    assert post(emu, GOOD, key="other").status_code == 202  # per key
    # GETs do not count against the create budget.
    run_id = post(emu, GOOD, key="other").json()["run_id"]
    for _ in range(5):
        assert httpx.get(f"{emu.url}{RUNS}/{run_id}", headers={"x-api-key": "other"}).status_code == 200
    stats = httpx.get(f"{emu.url}/_emulator/stats").json()
    assert sum(k["by_status"].get("429", 0) for k in stats["keys"].values()) == 1


def test_bad_result_timeout_is_422(emulator: BackgroundEmulator) -> None:
    run_id = post(emulator, GOOD).json()["run_id"]
    resp = httpx.get(f"{emulator.url}{RUNS}/{run_id}/result?timeout=soon", headers={"x-api-key": "test-key"})
    assert resp.status_code == 422 and "timeout" in message(resp)


def test_bad_request_directive_header_is_400(emulator: BackgroundEmulator) -> None:
    resp = httpx.post(emulator.url + RUNS, json=GOOD, headers={"x-api-key": "k", "x-emulator": "error=200"})
    assert resp.status_code == 400 and "5xx" in message(resp)
