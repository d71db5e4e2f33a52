"""The batch REST API: check before paying, create or resume, rows in order with their basis, live
polling, retry of failed rows (only they are paid again), exports, and every refusal naming its field."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from web_helpers import Web, sse

from helpers import wait_for
from taskdeck.emulator.run import FAIL_MARKER

KEY = "batch-api-key"
OTHER = "batch-api-other-key"
SPEC: dict[str, Any] = {
    "processor": "lite",
    "outputs": [
        {"name": "ceo", "type": "string", "description": "name of the CEO"},
        {"name": "founded", "type": "integer", "description": "year founded"},
    ],
    "columns": ["company"],
    "metadata": {"emulator": "duration=20"},
}
# A nasty CSV: BOM, semicolons, a quoted newline, a duplicate header, a formula in a cell.
CSV = '\ufeffcompany;city;city\r\nAcme;"Paris\nNord";x\r\n=HYPERLINK("http://evil");Lyon;y\r\nGlobex;Nice;z\r\n'


_OPEN: list[httpx.Client] = []


def _client(web: Web, key: str) -> httpx.Client:
    """An API client closed at the end of the test (see the autouse fixture)."""
    client = web.client(key)
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _creates(web: Web) -> int:
    stats = httpx.get(f"{web.emulator.url}/_emulator/stats").json()
    return sum(int(k["runs"]) for k in stats["keys"].values())


def _until_done(api: httpx.Client, batch_id: str, timeout: float = 120.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def done() -> bool:
        seen.update(api.get(f"/api/batches/{batch_id}").json()["batch"])
        return bool(seen["status"] == "completed")

    wait_for(done, timeout, f"batch {batch_id} to complete")
    return seen


def _check(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    resp = api.post("/api/batches/check", json=body)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()
    return out


def test_check_then_create_runs_every_row_in_order_with_outputs_and_basis_and_a_rerun_pays_nothing(web: Web) -> None:
    api = _client(web, KEY)
    body = {"name": "companies.csv", "content": CSV, "spec": SPEC}
    before = _creates(web)
    check = _check(api, body)
    assert check["columns"] == ["company", "city", "city_2"]
    assert check["row_count"] == 3
    assert any("city" in w for w in check["warnings"])  # the duplicate header was renamed, and said so
    assert check["sample"][0]["request"]["input"] == {"company": "Acme"}  # only the chosen column is sent
    assert check["cost_usd"] == round(3 * check["usd_per_row"], 4) and check["resumes"] is None
    assert _creates(web) == before  # a check creates nothing

    # No confirmation, or the wrong one: refused, naming the field, nothing stored or sent.
    for confirm in (None, check["cost_usd"] * 2):
        resp = api.post("/api/batches", json={**body, **({"confirm_cost_usd": confirm} if confirm else {})})
        assert resp.status_code == 422, resp.text
        assert resp.json()["error"]["problems"][0]["loc"] == ["confirm_cost_usd"]
    assert api.get("/api/batches").json()["batches"] == [] and _creates(web) == before

    resp = api.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]})
    assert resp.status_code == 201, resp.text
    batch_id = resp.json()["batch"]["id"]
    summary = _until_done(api, batch_id)
    assert summary["done"] == 3 and summary["failed"] == 0 and summary["percent"] == 100.0
    assert summary["cost_usd"] == check["cost_usd"]
    assert _creates(web) - before == 3

    rows = api.get(f"/api/batches/{batch_id}/rows").json()["rows"]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[0]["values"] == {"company": "Acme", "city": "Paris\nNord", "city_2": "x"}
    assert all(set(r["output"]) == {"ceo", "founded"} for r in rows)
    assert all(r["basis"]["ceo"]["citations"] and r["basis"]["ceo"]["confidence"] for r in rows)

    # CSV export: the input's columns and rows in order, outputs with their basis, no cell a formula.
    export = api.get(f"/api/batches/{batch_id}/export", params={"format": "csv", "basis": "true"})
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    table = list(csv.reader(io.StringIO(export.text)))
    assert table[0][:5] == ["company", "city", "city_2", "ceo", "ceo__confidence"]
    assert [r[0] for r in table[1:]] == ["Acme", '\'=HYPERLINK("http://evil")', "Globex"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in table for cell in row)
    jsonl = api.get(f"/api/batches/{batch_id}/export", params={"format": "jsonl"}).text.splitlines()
    assert [json.loads(line)["index"] for line in jsonl] == [0, 1, 2]
    doc = api.get(f"/api/batches/{batch_id}/export", params={"format": "json", "basis": "true"}).json()
    assert [r["values"]["company"] for r in doc["rows"]] == ["Acme", '=HYPERLINK("http://evil")', "Globex"]

    # The same table and spec again (as bytes this time): the same batch, resumed, nothing new paid.
    again = {"name": "companies.csv", "content_base64": base64.b64encode(CSV.encode()).decode(), "spec": SPEC}
    assert _check(api, again)["resumes"]["batch_id"] == batch_id
    resp = api.post("/api/batches", json={**again, "confirm_cost_usd": check["cost_usd"]})
    assert resp.status_code == 200 and resp.json()["resumed"] is True
    resp = api.post("/api/batches", json={**again, "confirm_cost_usd": 0})  # resuming costs nothing: 0 confirms
    assert resp.status_code == 200 and resp.json()["resumed"] is True
    assert resp.json()["batch"]["id"] == batch_id and _creates(web) - before == 3

    # Another key sees none of it.
    other = _client(web, OTHER)
    assert other.get(f"/api/batches/{batch_id}").status_code == 404
    assert other.get(f"/api/batches/{batch_id}/rows").status_code == 404
    assert other.get(f"/api/batches/{batch_id}/export").status_code == 404
    assert other.post(f"/api/batches/{batch_id}/retry").status_code == 404
    assert other.get("/api/batches").json()["batches"] == []


def test_failed_rows_stay_in_place_and_a_retry_pays_only_for_them(web: Web) -> None:
    api = _client(web, KEY)
    # Every third row asks the emulator to fail its run (and does again when retried).
    rows = [{"company": f"Co {i}" + (f" {FAIL_MARKER}" if i % 3 == 1 else "")} for i in range(24)]
    body = {"name": "fails.json", "rows": rows, "spec": SPEC}
    check = _check(api, body)
    before = _creates(web)
    created = api.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]})
    assert created.status_code == 201, created.text
    batch_id = created.json()["batch"]["id"]
    summary = _until_done(api, batch_id)
    failed = summary["failed"]
    assert failed == 8
    failed_rows = api.get(f"/api/batches/{batch_id}/rows", params={"status": "failed"}).json()["rows"]
    assert len(failed_rows) == failed and all(r["error"] for r in failed_rows)
    everything = api.get(f"/api/batches/{batch_id}/rows").json()["rows"]
    assert [r["index"] for r in everything] == list(range(24))  # failed rows keep their place
    paid_before = summary["cost_usd"]

    resp = api.post(f"/api/batches/{batch_id}/retry")
    assert resp.status_code == 200, resp.text
    assert resp.json()["retried"] == failed
    # Only the failed rows were created again (checked before the batch ends: no other create happens).
    wait_for(lambda: _creates(web) - before == 24 + failed, 60, "the retried rows to be added")
    after = _until_done(api, batch_id)
    assert _creates(web) - before == 24 + failed
    assert after["cost_usd"] == round(paid_before + failed * check["usd_per_row"], 4)  # each attempt is paid
    again = api.get(f"/api/batches/{batch_id}/rows").json()["rows"]
    assert [r["index"] for r in again] == list(range(24))
    assert [r["index"] for r in again if r["status"] == "failed"] == [i for i in range(24) if i % 3 == 1]
    retried_ids = {r["task_id"] for r in failed_rows}
    assert {r["task_id"] for r in again if r["task_id"] in retried_ids} == retried_ids  # same tasks, same places
    # Each retried row keeps what happened before in its events.
    first = failed_rows[0]
    page = api.get(f"/task/{first['task_id']}.json").json()
    notes = [e["data"] for e in page["events"] if e["type"] == "taskdeck.retried"]
    assert notes and notes[0]["previous_run_id"] == first["run_id"] and notes[0]["attempt"] == 1


def test_retry_is_refused_while_rows_run_and_when_nothing_failed(web: Web) -> None:
    api = _client(web, KEY)
    body = {
        "name": "slow.csv",
        "content": "company\nSlow Co\n",
        "spec": {**SPEC, "metadata": {"emulator": "duration=600"}},
    }
    check = _check(api, body)
    batch_id = api.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]}).json()["batch"]["id"]
    resp = api.post(f"/api/batches/{batch_id}/retry")
    assert resp.status_code == 409 and "still running" in resp.json()["error"]["message"]

    ok = {"name": "ok.csv", "content": "company\nFine Co\n", "spec": SPEC}
    check = _check(api, ok)
    done_id = api.post("/api/batches", json={**ok, "confirm_cost_usd": check["cost_usd"]}).json()["batch"]["id"]
    _until_done(api, done_id)
    resp = api.post(f"/api/batches/{done_id}/retry")
    assert resp.status_code == 409 and "no failed rows" in resp.json()["error"]["message"]


def test_rows_changed_since_a_poll_are_only_the_rows_that_changed(web: Web) -> None:
    api = _client(web, KEY)
    body = {"name": "poll.csv", "content": "company\nA\nB\nC\n", "spec": SPEC}
    check = _check(api, body)
    batch_id = api.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]}).json()["batch"]["id"]
    _until_done(api, batch_id)
    first = api.get(f"/api/batches/{batch_id}/rows").json()
    assert len(first["rows"]) == 3
    # Long after: nothing changed since (the 5 s overlap for other processes' clocks is inside "now").
    later = api.get(f"/api/batches/{batch_id}/rows", params={"changed_since": first["now"] + 10}).json()
    assert later["rows"] == []
    everything = api.get(f"/api/batches/{batch_id}/rows", params={"changed_since": 0}).json()
    assert len(everything["rows"]) == 3
    # Out-of-range paging and bad statuses: 422 naming the parameter, never a 500 from the database.
    for params in ({"after": 10**30}, {"limit": 0}, {"status": "nonsense"}, {"changed_since": "nan"}):
        resp = api.get(f"/api/batches/{batch_id}/rows", params=params)
        assert resp.status_code == 422, (params, resp.text)
    assert api.get("/api/batches/bat_nope/rows").status_code == 404


def _refusal(api: httpx.Client, body: Any, path: str = "/api/batches/check") -> tuple[int, list[Any]]:
    resp = api.post(path, json=body)
    problems = resp.json()["error"].get("problems") or [{}]
    return resp.status_code, problems[0].get("loc", [])


def test_every_bad_batch_body_is_refused_naming_the_field_and_nothing_is_stored(
    make_web: Callable[..., Web],
) -> None:
    web = make_web(max_batch_rows=5, max_upload_bytes=8192, max_body_bytes=4096)
    api = _client(web, KEY)
    good = {"name": "t.csv", "content": "company\nAcme\n", "spec": SPEC}
    out = ["spec", "outputs", 0]
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({**good, "surprise": 1}, ["surprise"]),
        ({k: v for k, v in good.items() if k != "content"}, ["content"]),
        ({**good, "rows": [{"company": "x"}]}, ["content"]),
        ({**good, "content": ""}, ["content"]),
        ({**good, "content": "company\n" + "x\n" * 6}, ["content"]),  # over max_batch_rows
        ({"name": "t.csv", "content_base64": "%%%", "spec": SPEC}, ["content_base64"]),
        ({"name": "t.csv", "rows": [1, 2], "spec": SPEC}, ["rows", 0]),
        ({**good, "name": ""}, ["name"]),
        ({**good, "format": "xlsx"}, ["format"]),
        ({**good, "spec": None}, ["spec"]),
        ({**good, "spec": {**SPEC, "processor": "turbo"}}, ["spec", "processor"]),
        (
            {**good, "spec": {**SPEC, "outputs": [{"name": "not ok", "description": "x"}]}},
            [*out, "name"],
        ),
        (
            {**good, "spec": {**SPEC, "outputs": [{"name": "a", "type": "date", "description": "x"}]}},
            [*out, "type"],
        ),
        ({**good, "spec": {**SPEC, "columns": ["nope"]}}, ["spec", "columns", 0]),
        ({**good, "spec": {"processor": "lite", "template": "{company.__class__}"}}, ["spec", "template"]),
        ({**good, "spec": {"processor": "lite", "template": "Who runs {nope}?"}}, ["spec", "template"]),
        ({**good, "spec": {"processor": "lite", "template": "The same question for every row"}}, ["spec", "template"]),
        ({**good, "spec": {**SPEC, "extra": True}}, ["spec", "extra"]),
    ]
    for body, loc in cases:
        status, got = _refusal(api, body)
        assert (status, got) == (422, loc), (body, status, got)
        status, got = _refusal(api, {**body, "confirm_cost_usd": 0.005}, "/api/batches")
        assert (status, got) == (422, loc), (body, status, got)
    # A table over TASKDECK_MAX_UPLOAD_BYTES: 413 before anything is read; other routes keep their own limit.
    fits = {**good, "content": "company\n" + "y" * 6000 + "\n"}  # over the body limit, within the upload limit
    assert api.post("/api/batches/check", json=fits).status_code == 200
    big = {**good, "content": "company\n" + "y" * 9000 + "\n"}
    resp = api.post("/api/batches/check", json=big)
    assert resp.status_code == 413 and "TASKDECK_MAX_UPLOAD_BYTES" in resp.text
    resp = api.post("/api/tasks", json={"input": "y" * 6000, "processor": "lite"})
    assert resp.status_code == 413 and "TASKDECK_MAX_BODY_BYTES" in resp.text
    assert api.get("/api/batches").json()["batches"] == []


def test_the_same_batch_flow_on_postgresql(make_web: Callable[..., Web]) -> None:
    """Create, follow, read rows, export and retry, with every process's state in PostgreSQL."""
    from pg import fresh_schema

    with fresh_schema() as url:
        web = make_web(database_url=url)
        api = _client(web, KEY)
        rows = [{"company": f"Pg {i}" + (f" {FAIL_MARKER}" if i == 2 else ""), "note": "☃ ünïcode"} for i in range(6)]
        body = {"name": "pg.json", "rows": rows, "spec": SPEC}
        check = _check(api, body)
        before = _creates(web)
        batch_id = api.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]}).json()["batch"]["id"]
        summary = _until_done(api, batch_id)
        assert (summary["done"], summary["failed"]) == (5, 1)
        got = api.get(f"/api/batches/{batch_id}/rows").json()["rows"]
        assert [r["index"] for r in got] == list(range(6)) and got[0]["values"]["note"] == "☃ ünïcode"
        export = list(csv.reader(io.StringIO(api.get(f"/api/batches/{batch_id}/export").text)))
        assert [r[0] for r in export[1:]] == [r["company"] for r in rows]
        assert api.post(f"/api/batches/{batch_id}/retry").json()["retried"] == 1
        _until_done(api, batch_id)
        assert _creates(web) - before == 7  # six rows, and the one failed row once more


def test_a_watched_rows_run_stream_is_opened_on_demand_and_its_reasoning_streams_live(web: Web) -> None:
    """Rows are followed through the group (no stream per run); opening a row's event stream opens its
    run's own stream upstream for the while, and its progress messages arrive like any task's."""
    api = _client(web, KEY)
    slow = {**SPEC, "metadata": {"emulator": "duration=800"}}  # ~4 s here
    body = {"name": "watch.csv", "content": "company\nWatched Co\nOther Co\n", "spec": slow}
    check = _check(api, body)
    batch_id = api.post("/api/batches", json={**body, "confirm_cost_usd": check["cost_usd"]}).json()["batch"]["id"]

    def rows() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = api.get(f"/api/batches/{batch_id}/rows").json()["rows"]
        return got

    wait_for(lambda: all(r["run_id"] for r in rows()), 60, "the rows' runs to be created")
    first, second = rows()
    frames = sse(api, f"/api/tasks/{first['task_id']}/events")  # until the row ends
    kinds = [json.loads(data).get("type") for _, event, data in frames if not event and data]
    assert any(str(k).startswith("task_run.progress_msg.") for k in kinds), kinds
    stats = httpx.get(f"{web.emulator.url}/_emulator/stats").json()
    assert stats["max_open_streams_per_run"] == 1
    _until_done(api, batch_id)
    # The row nobody opened has no run events stored: its outcome came in bulk through the group.
    page = api.get(f"/task/{second['task_id']}.json").json()
    assert not [e for e in page["events"] if e["type"].startswith("task_run.progress_msg.")]
    watched = api.get(f"/task/{first['task_id']}.json").json()
    assert watched["status"] == "completed" and watched["output"]["content"]
