"""End to end in a real browser (Debian's chromium driven by Playwright, never a downloaded browser)."""

from __future__ import annotations

from pathlib import Path

import httpx
from browser_helpers import KEY, shot, start_server
from playwright.sync_api import Browser, Dialog, expect

from taskdeck.emulator import BackgroundEmulator


def test_submit_watch_live_restart_and_come_back(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "taskdeck.db"
    server = start_server(db, emulator)
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    requests: list[str] = []
    page.on("request", lambda req: requests.append(req.url))
    try:
        page.goto(server.url)
        expect(page.locator(".banner")).to_contain_text("Demo: simulated API")
        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-mask")).to_have_text("…4321")
        assert KEY not in page.content()

        page.select_option("#processor", "pro")
        expect(page.locator("#cost")).to_have_text("$0.100")
        page.fill("#input", "Parallel Web Systems")
        page.check('input[name="schema_mode"][value="json"]')
        page.click("#schema-example")
        shot(page, "01-home-form")
        page.click("#task-form button[type=submit]")
        page.wait_for_url("**/task/tsk_*")
        task_url = page.url

        # Live, without reload: reasoning messages and the scorecard fill in as the run goes.
        expect(page.locator("#timeline li").first).to_be_visible(timeout=30_000)
        expect(page.locator("#considered")).not_to_have_text("0", timeout=30_000)
        expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#result-table table.result tbody tr")).to_have_count(3)
        expect(page.locator("#result-table .citations a").first).to_have_attribute("rel", "noopener noreferrer")
        shot(page, "02-task-completed")
        page.click("#tab-json")
        expect(page.locator("#result-json")).to_contain_text('"ceo"')
        page.locator("#result-json summary").first.click()  # the JSON view folds
        expect(page.locator("#result-json details").first).not_to_have_attribute("open", "")
        page.click("#req-curl")
        expect(page.locator("#request-code")).to_contain_text("curl -sS -X POST")
        expect(page.locator("#request-code")).not_to_contain_text(KEY)

        # Leave, restart the server on the same database, come back: the task is there, finished.
        page.goto("about:blank")
        server.stop()
        server = start_server(db, emulator)
        page.goto(server.url)
        expect(page.locator("#tasks tbody tr")).to_have_count(1)
        expect(page.locator("#tasks tbody tr .badge")).to_have_text("completed")
        page.goto(task_url.replace(task_url.split("/task/")[0], server.url))
        expect(page.locator("#status")).to_have_text("completed")
        expect(page.locator("#result-table table.result tbody tr")).to_have_count(3)
        shot(page, "03-after-restart")
    finally:
        context.close()
        server.stop()
    assert not errors, errors
    assert all(r.startswith(("http://127.0.0.1", "blob:", "about:", "data:")) for r in requests), requests


def test_hostile_upstream_text_executes_nothing(tmp_path: Path, browser: Browser, emulator: BackgroundEmulator) -> None:
    server = start_server(tmp_path / "x.db", emulator)
    context = browser.new_context()
    page = context.new_page()
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    try:
        with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}) as client:
            for spec in ({"output_schema": {"type": "auto"}}, {"output_schema": "A short report"}):
                client.post("/api/tasks", json={"input": "x", "processor": "pro", "task_spec": spec,
                                                "metadata": {"emulator": "xss;duration=120"}})  # fmt: skip
            tasks = client.get("/api/tasks").json()["tasks"]
        page.goto(server.url)
        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-mask")).to_have_text("…4321")  # signed in: the cookie is set
        for task in tasks:
            page.goto(f"{server.url}/task/{task['id']}")
            expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
            expect(page.locator("#result-table")).to_contain_text("<script>")  # shown as text
            assert page.evaluate("window.__xss") is None
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
            assert not [h for h in hrefs if h.lower().startswith("javascript:")]
        shot(page, "04-hostile-text")
    finally:
        context.close()
        server.stop()
    assert dialogs == []


def test_phone_keyboard_and_advanced_options(tmp_path: Path, browser: Browser, emulator: BackgroundEmulator) -> None:
    server = start_server(tmp_path / "p.db", emulator)
    context = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(server.url)
        page.fill("#api-key", KEY)
        page.keyboard.press("Enter")  # the key form submits from the keyboard
        expect(page.locator("#key-mask")).to_have_text("…4321")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no sideways scroll
        page.select_option("#processor", "lite")
        page.check('input[name="input_kind"][value="json"]')
        page.fill("#input", '{"company": "Parallel", "country": "US"}')
        page.click("#task-form summary")  # fold out source policy and metadata
        page.fill("#include", "sec.gov, reuters.com")
        page.fill("#metadata", '{"team": "research"}')
        page.check('input[name="schema_mode"][value="text"]')
        page.fill("#schema", "A two-line profile")
        shot(page, "05-phone-form")
        page.click("#task-form button[type=submit]")
        page.wait_for_url("**/task/tsk_*")
        expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
        sent = httpx.get(page.url + ".json", headers={"x-api-key": KEY}).json()["request"]
        assert sent["input"] == {"company": "Parallel", "country": "US"}
        assert sent["source_policy"]["include_domains"] == ["sec.gov", "reuters.com"]
        assert sent["metadata"] == {"team": "research"}
        assert sent["task_spec"]["output_schema"] == {"type": "text", "description": "A two-line profile"}
        expect(page.locator("#result-table .markdown h3").first).to_be_visible()  # Markdown as DOM
        expect(page.locator("#result-table .markdown em").first).to_contain_text("Brief")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        # Keyboard only: from the home page, Tab to the task's link in the list and open it with Enter.
        page.goto(server.url)
        row = page.locator("#tasks tbody tr").first
        expect(row).to_be_visible()
        for _ in range(60):
            page.keyboard.press("Tab")
            if page.evaluate("!!document.activeElement.closest('#tasks tbody td.preview a')"):
                break
        page.keyboard.press("Enter")
        page.wait_for_url("**/task/tsk_*")
        shot(page, "06-phone-task")
    finally:
        context.close()
        server.stop()
