"""In a real browser: the CSP stops injected script, other sites' forms cannot act for a signed-in user (issue 7)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser_helpers import ARTIFACTS, SECRET, shot, start_server
from playwright.sync_api import Browser, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.store.sqlite import SqliteStore
from taskdeck.vault import KeyVault

POOR_KEY = "emu-nocredit-browser-4321"  # the emulator refuses its creates with 402: a rejected task


@pytest.fixture
def attacker() -> Iterator[BackgroundServer]:
    """Another origin on the same machine: it serves a page with a self-submitting form aimed at Taskdeck."""

    async def page(request: Request) -> HTMLResponse:
        target = request.query_params["target"]
        html = (
            "<!doctype html><title>win a prize</title>"
            f'<form id="f" method="post" action="{target}"><input name="api_key" value="attacker-key"></form>'
            "<script>document.getElementById('f').submit()</script>"
        )
        return HTMLResponse(html)

    with BackgroundServer(Starlette(routes=[Route("/", page)])) as server:
        yield server


def sign_in(page: Page, url: str, key: str) -> None:
    page.goto(url)
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-mask")).to_have_text("…" + key[-4:])


def test_the_csp_blocks_an_injected_inline_script(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    server = start_server(tmp_path / "c.db", emulator)
    context = browser.new_context()
    page = context.new_page()
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    try:
        page.goto(server.url)
        page.evaluate(
            """() => {
                window.__violations = [];
                document.addEventListener(
                    'securitypolicyviolation', e => window.__violations.push(e.violatedDirective));
                const s = document.createElement('script');
                s.textContent = 'window.__inline = 1';
                document.body.append(s);
                const img = document.createElement('img');
                img.setAttribute('src', 'x');
                img.setAttribute('onerror', 'window.__handler = 1');
                document.body.append(img);
            }"""
        )
        page.wait_for_function("window.__violations.length >= 1")
        assert page.evaluate("window.__inline") is None
        assert page.evaluate("window.__handler") is None
        assert any(v.startswith("script-src") for v in page.evaluate("window.__violations"))
    finally:
        context.close()
        server.stop()


@pytest.mark.parametrize("site", ["same-site", "cross-site"])
def test_a_form_on_another_site_cannot_act_for_a_signed_in_user(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator, attacker: BackgroundServer, site: str
) -> None:
    db = tmp_path / "f.db"
    server = start_server(db, emulator)
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, server.url, POOR_KEY)
        page.fill("#input", "rejected on purpose")
        page.select_option("#processor", "lite")
        page.click("#task-form button[type=submit]")
        page.wait_for_url("**/task/tsk_*")
        expect(page.locator("#status")).to_have_text("rejected", timeout=30_000)
        task_id = page.url.rsplit("/", 1)[1]
        # 127.0.0.1 on another port is the same site (cookies are sent); localhost is another site.
        host = "127.0.0.1" if site == "same-site" else "localhost"
        evil = attacker.url.replace("127.0.0.1", host)
        for target in (f"{server.url}/api/tasks/{task_id}/resubmit", f"{server.url}/api/session"):
            with page.expect_response(target) as answer:
                page.goto(f"{evil}/?target={target}")
            assert answer.value.status in (401, 403, 415), (target, answer.value.status)
        shot_path = ARTIFACTS / f"07-csrf-{site}.png"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(shot_path))
    finally:
        context.close()
        server.stop()
    store = SqliteStore(db)
    try:
        task = store.get_task(task_id)
        assert task is not None and task.status.value == "rejected"  # not resubmitted: nothing paid again
        assert "taskdeck.resubmitted" not in [e.type for e in store.events(task_id)]
        # And nobody was signed in with the attacker's key.
        assert store.get_key(KeyVault(SECRET).owner("attacker-key")) is None
    finally:
        store.close()


def test_runs_of_a_dollar_or_more_are_confirmed_with_their_cost(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    server = start_server(tmp_path / "d.db", emulator)
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, server.url, "costly-key-4321")
        page.fill("#input", "an expensive question")
        page.select_option("#processor", "ultra4x")
        page.click("#task-form button[type=submit]")
        expect(page.locator("#confirm-cost")).to_be_visible()
        expect(page.locator("#confirm-cost-amount")).to_have_text("$1.200")  # as the form writes it
        page.screenshot(path=str(ARTIFACTS / "08-confirm-cost.png"))
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#confirm-cost")).to_be_hidden()
        with httpx.Client(base_url=server.url, headers={"x-api-key": "costly-key-4321"}) as client:
            assert client.get("/api/tasks").json()["tasks"] == []  # cancelled: nothing was created
        page.click("#task-form button[type=submit]")
        page.get_by_role("button", name="Run it").click()
        page.wait_for_url("**/task/tsk_*")
        page.goto(server.url)  # a cheap run needs no confirmation
        page.fill("#input", "a cheap question")
        page.select_option("#processor", "lite")
        page.click("#task-form button[type=submit]")
        page.wait_for_url("**/task/tsk_*")
    finally:
        context.close()
        server.stop()


def test_erasing_the_key_signs_out_and_says_what_happens_to_runs(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "e.db"
    server = start_server(db, emulator)
    context = browser.new_context()
    page = context.new_page()
    try:
        sign_in(page, server.url, "erase-me-key-4321")
        page.locator("details.erase summary").click()
        expect(page.locator("details.erase")).to_contain_text("go on at Parallel")
        page.click("#erase-key")
        expect(page.locator("#key-form")).to_be_visible()
        expect(page.locator("#key-note")).to_contain_text("Key erased from this server")
        shot(page, "09-key-erased")
    finally:
        context.close()
        server.stop()
    store = SqliteStore(db)
    try:
        assert store.get_key(KeyVault(SECRET).owner("erase-me-key-4321")) is None
    finally:
        store.close()
