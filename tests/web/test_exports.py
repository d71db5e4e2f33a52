"""What people copy out of Taskdeck: generated code that runs, and CSV a spreadsheet cannot run (items 11, 12)."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from web_helpers import Web

from helpers import wait_for
from taskdeck.models import Task, TaskStatus
from taskdeck.web.views import safe_cell, task_csv

KEY = "export-test-key"
TRICKY = 'It\'s "quoted", $(touch /tmp/pwned) `id` \\ back\nslash, ünïcødé ☃ and {"json": true}'


def created_run_input(web: Web, code: str, kind: str) -> dict[str, Any]:
    """Run a generated snippet against the emulator and return the request the emulator received."""
    env = {**os.environ, "PARALLEL_API_KEY": "snippet-key", "PARALLEL_BASE_URL": web.emulator.url}
    if kind == "python":
        script = code + "\nprint('RUN-ID', run.run_id)\n"  # the snippet names the run `run`
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        run_id = proc.stdout.rsplit("RUN-ID ", 1)[1].strip()
    else:
        proc = subprocess.run(["bash", "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        run_id = json.loads(proc.stdout)["run_id"]  # curl prints the TaskRun Parallel answered
    echoed: dict[str, Any] = httpx.get(
        f"{web.emulator.url}/v1/tasks/runs/{run_id}/input", headers={"x-api-key": "snippet-key"}
    ).json()
    return echoed


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_generated_python_and_curl_run_and_send_the_same_request(web: Web) -> None:
    body = {
        "input": TRICKY,
        "processor": "lite",
        "enable_events": True,
        "metadata": {"note": TRICKY[:100], "n": 3, "ok": False},
        "task_spec": {
            "output_schema": {
                "type": "json",
                "json_schema": {
                    "type": "object",
                    "properties": {"answer": {"type": ["string", "null"], "description": TRICKY}},
                    "required": ["answer"],
                    "additionalProperties": False,
                },
            }
        },
        "source_policy": {"include_domains": ["sec.gov"], "exclude_domains": [], "after_date": None},
    }
    with web.client(KEY) as client:
        task = client.post("/api/tasks", json=body).json()["task"]
        page = client.get(task["urls"]["json"]).json()
    code = page["code"]
    call = ast.parse(code["python"]).body[2].value  # run = client.task_run.create(...)
    assert isinstance(call, ast.Call)
    assert {k.arg: ast.literal_eval(k.value) for k in call.keywords}["enable_events"] is True
    assert "parallel-beta: events-sse-2025-07-24" in code["curl"]
    expected = {k: v for k, v in page["request"].items() if v is not None}
    for kind in ("python", "curl"):
        echoed = {k: v for k, v in created_run_input(web, code[kind], kind).items() if v is not None}
        assert echoed == expected, kind
    assert not os.path.exists("/tmp/pwned")


def test_csv_cells_that_would_be_formulas_are_neutralised() -> None:
    for cell in ("=1+1", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx", '=HYPERLINK("http://evil")'):
        assert safe_cell(cell) == "'" + cell
    assert safe_cell("plain") == "plain" and safe_cell(-5) == "-5" and safe_cell(2.5) == "2.5"
    assert safe_cell({"a": "=x"}) == '{"a": "=x"}' and safe_cell(True) == "true"
    task = Task(
        id="tsk_" + "0" * 24,
        owner="o",
        processor="core",
        request={},
        status=TaskStatus.COMPLETED,
        created_at=time.time(),
        output={"type": "json", "content": {"=cmd|' /C calc'!A0": "@SUM(1)", "revenue": -3, "nested": {"k": "+x"}}},
    )
    rows = list(csv.reader(io.StringIO(task_csv(task))))
    assert rows == [["'=cmd|' /C calc'!A0", "revenue", "nested"], ["'@SUM(1)", "-3", '{"k": "+x"}']]
    text = replace(task, output={"type": "text", "content": "-x"})
    assert list(csv.reader(io.StringIO(task_csv(text)))) == [["output"], ["'-x"]]


def test_the_csv_twin_serves_the_result_to_browsers_and_scripts_alike(web: Web) -> None:
    with web.client(KEY) as client:
        task = client.post("/api/tasks", json={"input": "csv me", "processor": "lite"}).json()["task"]
        wait_for(lambda: client.get(task["urls"]["self"]).json()["task"]["status"] == "completed", 60, "the run")
        resp = client.get(task["urls"]["csv"])
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/csv")
    assert resp.headers["content-disposition"] == f'attachment; filename="{task["id"]}.csv"'
    stored = web.engine.store.get_task(task["id"])
    assert stored is not None and resp.text == task_csv(stored)
    header, values = list(csv.reader(io.StringIO(resp.text)))
    assert header == list(stored.output["content"]) and len(values) == len(header)  # type: ignore[index]


def test_export_and_compare_many_tasks_for_scripts(web: Web) -> None:
    text = {"processor": "lite", "task_spec": {"output_schema": {"type": "text", "description": "A short report"}}}
    with web.client(KEY) as client:
        ids = [client.post("/api/tasks", json={**text, "input": f"report {i}"}).json()["task"]["id"] for i in range(2)]

        def all_done() -> bool:
            return all(client.get(f"/api/tasks/{i}").json()["task"]["status"] == "completed" for i in ids)

        wait_for(all_done, 60, "the runs")
        compared = client.get("/compare.json", params=[("id", i) for i in ids]).json()
        cells = compared["rows"][0]["cells"]
        assert compared["fields"] == ["output"] and [c["task_id"] for c in cells] == ids
        assert all("h3" in _tags(c["report"]) and "script" not in _tags(c["report"]) for c in cells)
        many = ids * 30  # 60 ids (duplicates folded): more than a page of the list holds
        lines = client.get("/api/export", params=[("format", "jsonl"), *[("id", i) for i in many]]).text.splitlines()
        assert [json.loads(x)["id"] for x in lines] == ids
        too_many = client.get("/api/export", params=[("id", ids[0])] * 1001)
        assert too_many.status_code == 422 and "at most 1000" in too_many.json()["error"]["message"]
        assert client.get("/compare.json", params={"id": ids[0]}).status_code == 422
    with web.client("someone-else-key") as other:
        assert other.get("/api/export", params={"id": ids[0]}).status_code == 404
        assert other.get("/compare.json", params=[("id", i) for i in ids]).status_code == 404


def test_bad_addresses_get_a_page_that_says_why(web: Web) -> None:
    with web.client(KEY) as client:
        for path, status in (("/?status=bogus", 422), ("/compare", 422), ("/?processor=nope", 422), ("/x/y", 404)):
            resp = client.get(path, headers={"accept": "text/html"})
            assert resp.status_code == status, path
            assert resp.headers["content-type"].startswith("text/html"), path
            assert 'id="not-found"' in resp.text, path
        # Scripts asking for JSON still get JSON.
        assert client.get("/index.json?status=bogus").json()["error"]["problems"][0]["loc"][:2] == ["query", "status"]


def _tags(nodes: list[Any]) -> set[str]:
    """Every element tag of a report tree (web/markdown.py: a string is text, [tag, attrs, children] an element)."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, list):
            found |= {node[0], *_tags(node[2])}
    return found
