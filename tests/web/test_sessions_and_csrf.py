"""Sessions, CSRF, security headers and allowed hosts, as Django does them (issue 7, items 8-10 and 20)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import httpx
import pytest
from web_helpers import Web

from helpers import wait_for
from taskdeck.models import TaskStatus

KEY = "session-test-key-1234"
OTHER = "session-other-key-9999"


def test_sign_in_rotates_the_session_and_sign_out_ends_it_on_the_server(web: Web) -> None:
    with web.browser() as browser:
        first = browser.post("/api/session", json={"api_key": KEY})
        old_cookie = browser.cookies["taskdeck_session"]
        browser.headers["x-csrf-token"] = first.json()["csrf_token"]
        second = browser.post("/api/session", json={"api_key": KEY})
        assert second.status_code == 200
        new_cookie = browser.cookies["taskdeck_session"]
        assert new_cookie != old_cookie  # a new session at every sign-in
        with httpx.Client(base_url=web.url, cookies={"taskdeck_session": old_cookie}) as replay:
            assert replay.get("/api/session").status_code == 401  # the old one ended
        browser.headers["x-csrf-token"] = second.json()["csrf_token"]
        assert browser.delete("/api/session").status_code == 200
        with httpx.Client(base_url=web.url, cookies={"taskdeck_session": new_cookie}) as replay:
            assert replay.get("/api/session").status_code == 401  # checked by the server, not the client


def test_forged_and_unknown_session_cookies_authenticate_nothing(web: Web) -> None:
    owner = web.engine.vault.owner(KEY)
    forged = [owner, f"{owner}.deadbeef", "x" * 43, "", "a" * 5000]
    for value in forged:
        with httpx.Client(base_url=web.url, cookies={"taskdeck_session": value}) as client:
            assert client.get("/api/session").status_code == 401, value[:80]
            assert client.get("/api/tasks").status_code == 401
            create = client.post("/api/tasks", json={"input": "x", "processor": "lite"}, headers={"origin": web.url})
            assert create.status_code == 401, value[:80]  # not even asked for a CSRF token: nobody is signed in


def test_sessions_expire(make_web: Callable[..., Web]) -> None:
    web = make_web(session_ttl=1.0)
    with web.browser(KEY) as browser:
        assert browser.get("/api/session").status_code == 200
        wait_for(lambda: browser.get("/api/session").status_code == 401, 30, "the session to expire")


def test_unsafe_requests_with_a_cookie_need_same_origin_and_the_token(web: Web) -> None:
    with web.browser(KEY) as browser:
        token = browser.headers["x-csrf-token"]
        body = {"input": "csrf", "processor": "lite"}
        cases: list[tuple[dict[str, str], int]] = [
            ({"x-csrf-token": token}, 201),
            ({"x-csrf-token": ""}, 403),
            ({"x-csrf-token": "0" * 64}, 403),
            ({"x-csrf-token": token, "origin": "http://127.0.0.1:1"}, 403),  # another port: another origin
            ({"x-csrf-token": token, "origin": "null"}, 403),
            ({"x-csrf-token": token, "origin": "http://evil.example"}, 403),
        ]
        for headers, status in cases:
            sent = {**browser.headers, **headers}
            resp = browser.post("/api/tasks", json=body, headers=sent)
            assert resp.status_code == status, (headers, resp.text)
        # Without Origin, Sec-Fetch-Site decides.
        del browser.headers["origin"]
        for site, status in (("cross-site", 403), ("same-site", 403), ("same-origin", 201)):
            resp = browser.post("/api/tasks", json=body, headers={"sec-fetch-site": site})
            assert resp.status_code == status, site
        task_id = resp.json()["task"]["id"]
        for method, path in (("DELETE", f"/api/tasks/{task_id}"), ("POST", f"/api/tasks/{task_id}/resubmit")):
            forged = browser.request(method, path, headers={"x-csrf-token": "", "origin": "http://evil.example"})
            assert forged.status_code == 403, (method, path)
        assert browser.request("DELETE", "/api/key", headers={"x-csrf-token": ""}).status_code == 403
    # An x-api-key caller carries no ambient credential: no CSRF token needed.
    with web.client(KEY) as client:
        assert client.post("/api/tasks", json=body).status_code == 201


def test_signing_in_needs_the_token_too(web: Web) -> None:
    """Login CSRF: a page of another site (or another port) must not sign this browser into its own key."""
    with httpx.Client(base_url=web.url) as client:
        assert client.post("/api/session", json={"api_key": KEY}).status_code == 403
        token = client.get("/api/csrf").json()["csrf_token"]
        resp = client.post(
            "/api/session", json={"api_key": KEY}, headers={"x-csrf-token": token, "origin": "http://127.0.0.1:9"}
        )
        assert resp.status_code == 403
        assert "taskdeck_session" not in client.cookies
        resp = client.post("/api/session", json={"api_key": KEY}, headers={"x-csrf-token": token})
        assert resp.status_code == 200


def test_security_headers_on_every_response(web: Web) -> None:
    with web.client() as client:
        for path in ("/", "/static/app.css", "/api/tasks", "/nope", "/openapi.json", "/-/health"):
            resp = client.get(path)
            csp = resp.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert "unsafe-inline" not in csp
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.headers["referrer-policy"] == "same-origin"
            assert resp.headers["x-frame-options"] == "DENY"
        assert client.get("/docs").status_code == 404  # the CDN-loaded docs page is gone; /openapi.json stays


def test_only_allowed_hosts_are_answered(web: Web) -> None:
    port = web.url.rsplit(":", 1)[1]
    with web.client() as client:
        for host in ("evil.example", f"rebind.attacker.test:{port}", "127.0.0.2", "localhost.evil"):
            resp = client.get("/", headers={"host": host})
            assert resp.status_code == 400 and "TASKDECK_ALLOWED_HOSTS" in resp.json()["error"]["message"], host
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
            assert client.get("/-/health", headers={"host": host}).status_code == 200, host


def test_secure_cookies_over_https_from_a_trusted_proxy_only(make_web: Callable[..., Web]) -> None:
    web = make_web(trusted_proxies=("127.0.0.1",))
    https = {"x-forwarded-proto": "https"}
    # A Secure cookie is not sent back over plain http by a client, so the test carries it by hand.
    with httpx.Client(base_url=web.url) as proxy:
        first = proxy.get("/api/csrf", headers=https)
        anon = first.headers["set-cookie"]
        assert anon.startswith("__Host-taskdeck_csrf=") and "secure" in anon.lower()
        resp = proxy.post(
            "/api/session",
            json={"api_key": KEY},
            headers={
                **https,
                "origin": web.url.replace("http:", "https:"),
                "x-csrf-token": first.json()["csrf_token"],
                "cookie": anon.split(";")[0],
            },
        )
        assert resp.status_code == 200, resp.text
        cookie = resp.headers["set-cookie"]
        assert (
            cookie.startswith("__Host-taskdeck_session=") and "secure" in cookie.lower() and "path=/" in cookie.lower()
        )
    untrusted = make_web()
    with untrusted.browser() as browser:
        resp = browser.post("/api/session", json={"api_key": KEY}, headers=https)
        assert resp.status_code == 200
        assert resp.headers["set-cookie"].startswith("taskdeck_session=")  # the header was not believed


def test_another_key_gets_404_everywhere(web: Web) -> None:
    with web.client(KEY) as mine:
        task = mine.post("/api/tasks", json={"input": "mine", "processor": "lite"}).json()["task"]
    with web.browser(OTHER) as theirs:
        assert theirs.get(f"/task/{task['id']}").status_code == 404  # the HTML page
        assert "mine" not in theirs.get(f"/task/{task['id']}").text
        for method, path in (
            ("GET", f"/task/{task['id']}.json"),
            ("GET", f"/task/{task['id']}.csv"),
            ("GET", f"/api/tasks/{task['id']}"),
            ("GET", f"/api/tasks/{task['id']}/events"),
            ("DELETE", f"/api/tasks/{task['id']}"),
            ("POST", f"/api/tasks/{task['id']}/resubmit"),
        ):
            assert theirs.request(method, path).status_code == 404, (method, path)
        assert all(t["id"] != task["id"] for t in theirs.get("/api/tasks").json()["tasks"])
    assert web.engine.store.get_task(task["id"]) is not None  # nothing was deleted


def test_the_task_list_stream_shows_only_the_callers_tasks(web: Web) -> None:
    seen: list[str] = []
    with web.client(OTHER) as theirs, theirs.stream("GET", "/api/tasks/stream") as stream:
        with web.client(KEY) as mine:
            mine.post("/api/tasks", json={"input": "not yours", "processor": "lite"})
        with web.client(OTHER) as own:
            marker = own.post("/api/tasks", json={"input": "yours", "processor": "lite"}).json()["task"]
        for line in stream.iter_lines():
            if line.startswith("data: "):
                row = json.loads(line[6:])
                seen.append(row["id"])
                if row["id"] == marker["id"]:
                    break
    assert set(seen) == {marker["id"]}


def test_signing_out_ends_the_sessions_open_streams(web: Web) -> None:
    ended = threading.Event()
    with web.browser(KEY) as browser:

        def read() -> None:
            with (
                httpx.Client(base_url=web.url, cookies=browser.cookies, timeout=60) as reader,
                reader.stream("GET", "/api/tasks/stream") as stream,
            ):
                assert stream.status_code == 200
                for _ in stream.iter_lines():
                    pass
            ended.set()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        wait_for(lambda: any(w for w in web.app.state.sessions._watchers.values()), 10, "the stream to open")
        assert browser.delete("/api/session").status_code == 200
        assert ended.wait(10), "the stream of an ended session stayed open"
        thread.join(5)


def test_forgetting_the_key_erases_it_stops_following_and_resumes_on_sign_in(web: Web) -> None:
    key = "forget-me-key-5555"
    with web.browser(key) as browser:
        long = browser.post(
            "/api/tasks", json={"input": "x", "processor": "lite", "metadata": {"emulator": "duration=100000"}}
        ).json()["task"]
        wait_for(lambda: (t := web.engine.store.get_task(long["id"])) is not None and t.run_id is not None, 30, "run")
        resp = browser.delete("/api/key")
        assert resp.status_code == 200 and resp.json()["runs_no_longer_followed"] == 1
        owner = web.engine.vault.owner(key)
        assert web.engine.store.get_key(owner) is None
        assert long["id"] not in web.engine.followers
        task = web.engine.store.get_task(long["id"])
        assert task is not None and task.lease_owner is None and task.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
        assert browser.get("/api/session").status_code == 401  # every session of that key ended
    with web.browser(key):
        wait_for(lambda: long["id"] in web.engine.followers, 30, "the run to be followed again after sign-in")


@pytest.mark.parametrize("path", ["/", "/api/tasks"])
def test_pages_and_answers_never_contain_the_key(web: Web, path: str) -> None:
    with web.browser(KEY) as browser:
        browser.post("/api/tasks", json={"input": "secret check", "processor": "lite"})
        resp = browser.get(path)
        assert KEY not in resp.text and KEY not in str(resp.headers)
