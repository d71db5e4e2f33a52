"""The REST API over a real socket: sessions, validation, tasks, the event stream, key isolation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from web_helpers import sse

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator, EmulatorSettings
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

KEY = "web-test-key-1234"
OTHER = "web-test-key-9999"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db: Path = tmp_path_factory.mktemp("web") / "taskdeck.db"
    with BackgroundEmulator(EmulatorSettings(port=0, time_scale=0.005)) as emu:
        settings = Settings(
            db_path=db, parallel_base_url=emu.url, secret_key="web-secret", heartbeat_interval=1, lease_ttl=5
        )
        app = create_app(settings)
        with BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)) as web:
            yield web.url


def api(url: str, key: str | None = KEY) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"x-api-key": key} if key else {}, timeout=30)


def test_health_and_settings_hide_the_secret(server: str) -> None:
    with api(server, None) as client:
        assert client.get("/-/health").json()["ok"] is True
        body = client.get("/-/settings.json").text
        assert "web-secret" not in body and '"secret_key":"***"' in body.replace(" ", "")
        assert client.get("/openapi.json").json()["info"]["title"] == "Taskdeck"


def test_no_key_is_401_with_what_to_do(server: str) -> None:
    with api(server, None) as client:
        resp = client.get("/api/tasks")
    assert resp.status_code == 401 and "Enter your Parallel API key" in resp.json()["error"]["message"]


def test_bad_input_is_422_naming_the_field_and_stores_nothing(server: str) -> None:
    with api(server, "fresh-key-for-422") as client:
        bad = {
            "input": "x",
            "processor": "lite",
            "task_spec": {"output_schema": {"type": "json", "json_schema": {"type": "array"}}},
        }
        resp = client.post("/api/tasks", json=bad)
        assert resp.status_code == 422
        assert "task_spec.output_schema.json_schema" in resp.json()["error"]["message"]
        assert resp.json()["error"]["problems"][0]["loc"][:3] == ["task_spec", "output_schema", "json_schema"]
        assert client.post("/api/tasks", json={"input": "x", "processor": "mega"}).status_code == 422
        assert client.post("/api/tasks", json=[1]).status_code == 422
        assert client.get("/api/tasks").json()["tasks"] == []


def test_submit_follow_and_read_back(server: str) -> None:
    schema = {
        "type": "object",
        "properties": {"ceo": {"type": "string"}},
        "required": ["ceo"],
        "additionalProperties": False,
    }
    body = {
        "input": "Parallel Web Systems",
        "processor": "pro",
        "task_spec": {"output_schema": {"type": "json", "json_schema": schema}},
    }
    with api(server) as client:
        created = client.post("/api/tasks", json=body)
        assert created.status_code == 201
        task = created.json()["task"]
        assert task["status"] == "pending" and task["urls"]["json"] == f"/task/{task['id']}.json"
        messages = sse(client, task["urls"]["events"])
        assert messages[-1][1] == "end"
        types = [json.loads(m[2])["type"] for m in messages[:-1] if m[1] != "status"]
        statuses = {json.loads(m[2])["status"] for m in messages if m[1] == "status"}
        assert statuses <= {"pending", "submitting", "queued", "running"}
        assert "task_run.progress_msg.exec_status" in types and "taskdeck.result_stored" in types
        ids = [int(m[0]) for m in messages if m[0]]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        page = client.get(task["urls"]["json"]).json()
        assert page["status"] == "completed" and set(page["output"]["content"]) == {"ceo"}
        assert [e["seq"] for e in page["events"]] == ids
        # Last-Event-ID resumes after that event.
        resumed = sse(client, task["urls"]["events"], {"last-event-id": str(ids[-3])})
        assert [int(m[0]) for m in resumed if m[0]] == ids[-2:]
        listed = client.get("/api/tasks").json()["tasks"]
        assert listed[0]["id"] == task["id"] and listed[0]["status"] == "completed"
        assert KEY not in json.dumps(page) and KEY not in client.get("/api/tasks").text


def test_another_key_sees_nothing(server: str) -> None:
    with api(server) as mine, api(server, OTHER) as theirs:
        task = mine.post("/api/tasks", json={"input": "mine", "processor": "lite"}).json()["task"]
        assert all(t["id"] != task["id"] for t in theirs.get("/api/tasks").json()["tasks"])
        assert theirs.get(f"/task/{task['id']}.json").status_code == 404
        assert theirs.get(f"/api/tasks/{task['id']}/events").status_code == 404


def test_list_filters_and_cursor(server: str) -> None:
    with api(server, "pager-key") as client:
        for i in range(5):
            client.post("/api/tasks", json={"input": f"needle {i}" if i % 2 else f"hay {i}", "processor": "lite"})
        first = client.get("/api/tasks", params={"limit": 2}).json()
        assert len(first["tasks"]) == 2 and first["next_cursor"]
        rest = client.get("/api/tasks", params={"limit": 10, "cursor": first["next_cursor"]}).json()
        assert len(rest["tasks"]) == 3 and rest["next_cursor"] is None
        found = client.get("/api/tasks", params={"q": "needle"}).json()["tasks"]
        assert {t["input_preview"] for t in found} == {"needle 1", "needle 3"}
        assert client.get("/api/tasks", params={"processor": "pro"}).json()["tasks"] == []
        assert client.get("/api/tasks", params={"status": "nonsense"}).status_code == 422
        assert client.get("/api/tasks", params={"cursor": "garbage"}).status_code == 422


def test_session_cookie_sign_in_and_out(server: str) -> None:
    with api(server, None) as client:
        token = client.get("/api/csrf").json()["csrf_token"]
        client.headers["x-csrf-token"] = token
        assert client.post("/api/session", json={"api_key": "emu-invalid-abc"}).status_code == 401
        assert client.post("/api/session", json={}).status_code == 422
        resp = client.post("/api/session", json={"api_key": KEY})
        assert resp.status_code == 200 and resp.json()["key"] == "…1234"
        cookie = resp.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower() and "path=/" in cookie.lower()
        assert KEY not in cookie and "secure" not in cookie.lower()  # plain http here: no Secure flag
        client.headers["x-csrf-token"] = resp.json()["csrf_token"]
        assert client.get("/api/session").json()["key"] == "…1234"
        assert client.get("/api/tasks").status_code == 200  # the cookie authenticates
        session_cookie = client.cookies["taskdeck_session"]
        out = client.delete("/api/session")
        assert out.status_code == 200 and out.json()["csrf_token"]
        # The server ended the session: the old cookie, replayed, authenticates nothing.
        client.cookies.set("taskdeck_session", session_cookie)
        assert client.get("/api/session").status_code == 401
        assert client.post("/api/tasks", json={"input": "x", "processor": "lite"}).status_code == 401


def test_resubmit_delete_and_track(server: str) -> None:
    with api(server, "emu-nocredit-web") as poor:
        task = poor.post("/api/tasks", json={"input": "x", "processor": "lite"}).json()["task"]
        sse(poor, task["urls"]["events"])  # to its end: rejected (402)
        assert poor.get(task["urls"]["json"]).json()["status"] == "rejected"
        again = poor.post(f"/api/tasks/{task['id']}/resubmit")
        assert again.status_code == 200 and again.json()["task"]["status"] == "pending"
        sse(poor, task["urls"]["events"])
        assert poor.delete(f"/api/tasks/{task['id']}").status_code == 204
        assert poor.get(task["urls"]["json"]).status_code == 404
    with api(server) as client:
        long = client.post(
            "/api/tasks", json={"input": "x", "processor": "lite", "metadata": {"emulator": "duration=1000000"}}
        ).json()["task"]
        resubmit = client.post(f"/api/tasks/{long['id']}/resubmit")
        assert resubmit.status_code == 409 and "delete it" in resubmit.json()["error"]["message"]
        # A running task can be deleted: Taskdeck stops following it (the run itself goes on upstream).
        assert client.delete(f"/api/tasks/{long['id']}").status_code == 204
        assert client.get(long["urls"]["self"]).status_code == 404
        assert client.delete(f"/api/tasks/{long['id']}").status_code == 404
        assert client.post("/api/track", json={}).status_code == 422
        assert client.post("/api/track", json={"run_id": "trun_" + "0" * 32}).status_code == 404


def test_task_list_stream_pushes_status_changes(server: str) -> None:
    with api(server, "stream-key") as client:
        seen: list[str] = []
        with client.stream("GET", "/api/tasks/stream") as resp:
            created = client.post("/api/tasks", json={"input": "watch me", "processor": "lite"}).json()["task"]
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    row = json.loads(line[6:])
                    assert row["id"] == created["id"]
                    seen.append(row["status"])
                    if row["status"] == "completed":
                        break
        assert seen[-1] == "completed" and len(seen) >= 2
