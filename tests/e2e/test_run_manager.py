"""The UI as a run manager (issue 8), each item in a real browser: Debian's chromium via Playwright."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from browser_helpers import KEY, SECRET, low_contrast, no_sideways_scroll, seed_tasks, shot, start_server
from playwright.sync_api import Browser, BrowserContext, Page, ViewportSize, expect

from taskdeck.config import Settings
from taskdeck.demo import demo_settings, start_demo_emulator
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}


@pytest.fixture
def server(tmp_path: Path, emulator: BackgroundEmulator) -> Iterator[BackgroundServer]:
    srv = start_server(tmp_path / "ui.db", emulator)
    yield srv
    srv.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP)
    yield ctx
    ctx.close()


def sign_in(page: Page, url: str, key: str = KEY) -> None:
    page.goto(url)
    page.fill("#api-key", key)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-mask")).to_have_text("…" + key[-4:])


def submit(page: Page, text: str, processor: str = "lite", schema: str | None = None) -> str:
    """Run a task from the home page's form; returns the task page's URL."""
    page.select_option("#processor", processor)
    page.fill("#input", text)
    if schema is not None:
        page.check('input[name="schema_mode"][value="json"]')
        page.fill("#schema", schema)
    page.click("#run-task")
    page.wait_for_url("**/task/tsk_*")
    return page.url


def api(server: BackgroundServer, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, server.url + path, headers={"x-api-key": KEY}, timeout=30, **kw)  # type: ignore[arg-type]


SCHEMA_3 = json.dumps(
    {
        "type": "object",
        "properties": {
            "ceo": {"type": "string", "description": "CEO"},
            "founded": {"type": "integer", "description": "Year founded"},
            "hq": {"type": "string", "description": "Headquarters"},
        },
        "required": ["ceo", "founded", "hq"],
        "additionalProperties": False,
    }
)


def test_phone_pages_never_scroll_sideways_with_long_content(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "phone.db"
    tasks = seed_tasks(db, 100, long_text=True)
    srv = start_server(db, emulator)
    ctx = browser.new_context(viewport=PHONE, is_mobile=True)
    page = ctx.new_page()
    try:
        sign_in(page, srv.url)
        expect(page.locator("#tasks tbody tr")).to_have_count(50)
        assert no_sideways_scroll(page), "home"
        done = next(t for t in tasks if t.output)
        failed = next(t for t in tasks if t.error)
        for path in (f"/task/{done.id}", f"/task/{failed.id}", f"/compare?id={tasks[0].id}&id={tasks[4].id}", "/nope"):
            page.goto(srv.url + path)
            page.wait_for_load_state("load")
            assert no_sideways_scroll(page), path
        page.goto(srv.url + f"/task/{done.id}")
        page.click("#tab-json")
        assert no_sideways_scroll(page), "JSON tab"
    finally:
        ctx.close()
        srv.stop()


def test_list_filters_counts_pages_and_search_live_in_the_url(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "list.db"
    tasks = seed_tasks(db, 130)
    srv = start_server(db, emulator)
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    try:
        sign_in(page, srv.url)
        expect(page.locator("#total")).to_have_text("130 in all")
        expect(page.locator('.chip[data-status="completed"] .count')).to_have_text("65")
        expect(page.locator('.chip[data-status="failed"] .count')).to_have_text("33")
        first_page = page.locator("#tasks tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert first_page == [t.id for t in reversed(tasks)][:50]
        # Every task is reachable: page on until the last.
        seen = list(first_page)
        while page.locator("#next-page").is_visible():
            page.click("#next-page")
            page.wait_for_function("() => location.search.includes('cursor=')")
            expect(page.locator("#tasks tbody tr").first).to_be_visible()
            seen += page.locator("#tasks tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert sorted(seen) == sorted(t.id for t in tasks) and len(seen) == 130
        page.go_back()  # the back button returns to the previous page of the list
        page.wait_for_load_state("load")
        assert page.locator("#tasks tbody tr").first.get_attribute("data-id") == seen[50]

        page.goto(srv.url)
        page.click('.chip[data-status="failed"]')
        page.wait_for_url(re.compile(r".*status=failed.*"))
        expect(page.locator("#tasks tbody tr")).to_have_count(33)
        assert set(page.locator("#tasks tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)")) == {
            "failed"
        }
        page.fill("#q", "Task 00007:")
        page.click("#filters button[type=submit]")
        page.wait_for_url(re.compile(r".*q=Task.*"))
        assert parse_qs(urlparse(page.url).query)["q"] == ["Task 00007:"]
        expect(page.locator("#tasks tbody tr")).to_have_count(0)  # task 7 is completed, not failed
        expect(page.locator("#empty")).to_have_text("No task matches these filters.")
        page.goto(srv.url + "/?q=Task+00007%3A")
        expect(page.locator("#tasks tbody tr")).to_have_count(1)
        page.select_option("#order", "oldest")
        page.wait_for_url(re.compile(r".*order=oldest.*"))
        page.goto(srv.url + "/?order=oldest")
        expect(page.locator("#tasks tbody tr").first).to_have_attribute("data-id", tasks[0].id)
        page.select_option("#filter-processor", "pro")
        page.wait_for_url(re.compile(r".*processor=pro.*"))
        processors = page.locator("#tasks tbody tr td:nth-child(4)").all_inner_texts()
        assert processors and set(processors) == {"pro"}
        # The page's data as JSON, for scripts: the same list.
        twin = api(srv, "GET", "/index.json?order=oldest&processor=pro").json()
        assert [t["id"] for t in twin["tasks"]] == page.locator("#tasks tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.id)"
        )
    finally:
        ctx.close()
        srv.stop()


def test_select_export_compare_and_delete_several_tasks(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "bulk.db"
    tasks = seed_tasks(db, 8)
    srv = start_server(db, emulator)
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = ctx.new_page()
    try:
        sign_in(page, srv.url)
        completed = [t for t in tasks if t.output][:2]
        for t in completed:
            page.check(f'#tasks input.pick[data-id="{t.id}"]')
        expect(page.locator("#bulk-count")).to_have_text("2 selected")
        page.select_option("#bulk-format", "csv")
        with page.expect_download() as download:
            page.click("#bulk-export")
        text = Path(download.value.path()).read_text()
        header = text.splitlines()[0].split(",")
        assert "output.ceo" in header and "basis" in header
        assert all(t.id in text for t in completed) and tasks[1].id not in text
        page.select_option("#bulk-format", "jsonl")
        with page.expect_download() as download:
            page.click("#bulk-export")
        lines = [json.loads(x) for x in Path(download.value.path()).read_text().splitlines()]
        assert [x["id"] for x in lines] == [t.id for t in completed]
        assert lines[0]["output"]["ceo"] == completed[0].output["content"]["ceo"]  # type: ignore[index]

        page.click("#bulk-compare")
        page.wait_for_url("**/compare?**")
        expect(page.locator("#compare tbody tr")).to_have_count(3)  # ceo, founded, notes
        ceo = page.locator("#compare tbody tr").first
        expect(ceo.locator("th")).to_have_text("ceo")
        expect(ceo.locator("td")).to_have_count(2)
        expect(ceo.locator("td").first).to_contain_text("Person")
        expect(ceo.locator("td .badge").first).to_have_text("high")
        expect(ceo.locator("td .citations a").first).to_have_attribute("href", re.compile("^https://example.com/"))
        shot(page, "manager-compare-desktop")

        # Back from the compare page: the ticked boxes are the selection.
        page.go_back()
        page.wait_for_load_state("load")
        expect(page.locator("#bulk-count")).to_have_text("2 selected")
        expect(page.locator("#bulk-compare")).to_be_enabled()

        page.goto(srv.url)
        page.check("#select-all")
        expect(page.locator("#bulk-count")).to_have_text("8 selected")
        page.once("dialog", lambda d: d.accept())
        page.click("#bulk-delete")
        expect(page.locator("#bulk-note")).to_have_text("Deleted 8 of 8.")
        expect(page.locator("#bulk-note")).to_be_visible()
        expect(page.locator("#tasks tbody tr")).to_have_count(0)
        assert api(srv, "GET", "/api/tasks").json()["tasks"] == []
    finally:
        ctx.close()
        srv.stop()


def test_counts_follow_changes_on_a_filtered_later_page_and_export_takes_a_whole_page(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "counts.db"
    seed_tasks(db, 120)
    srv = start_server(db, emulator)
    ctx = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = ctx.new_page()
    try:
        sign_in(page, srv.url)
        page.goto(srv.url + "/?status=failed")
        expect(page.locator("#total")).to_have_text("120 in all")
        created = api(srv, "POST", "/api/tasks", json={"processor": "lite", "input": "a run on no page here"})
        task_id = created.json()["task"]["id"]
        expect(page.locator('.chip[data-status="completed"] .count')).to_have_text("61", timeout=60_000)
        expect(page.locator("#total")).to_have_text("121 in all")
        assert page.locator(f'#tasks tr[data-id="{task_id}"]').count() == 0  # not failed: not on this view
        page.goto(srv.url + "/?cursor=" + (api(srv, "GET", "/index.json").json()["next_cursor"] or ""))
        page.check("#select-all")
        expect(page.locator("#bulk-count")).to_have_text("50 selected")
        with page.expect_download() as download:
            page.click("#bulk-export")
        assert len(Path(download.value.path()).read_text().splitlines()) == 51  # header and 50 rows
    finally:
        ctx.close()
        srv.stop()


def test_task_page_badge_follows_the_run_and_the_list_shows_progress(
    server: BackgroundServer, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    seen: list[str] = []
    page.expose_function("statusSeen", lambda s: seen.append(s))
    page.select_option("#processor", "lite")
    page.fill("#input", "Slow enough to watch")
    page.click("#more-options summary")
    page.fill("#metadata", '{"emulator": "duration=800"}')  # 8 s at the test emulator's time scale
    page.click("#run-task")
    page.wait_for_url("**/task/tsk_*")
    page.evaluate(
        """() => new MutationObserver(() => window.statusSeen(document.getElementById('status').textContent))
             .observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true})"""
    )
    expect(page.locator("#status")).to_have_text("running", timeout=30_000)
    expect(page.locator("#duration-label")).to_have_text("Elapsed")
    expect(page.locator("#status-help")).to_contain_text("close this page")
    shot(page, "manager-running-desktop")
    home = context.new_page()
    home.goto(server.url)
    row = home.locator("#tasks tbody tr").first
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator(".row-progress progress")).to_be_visible()
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    expect(row.locator(".badge")).to_have_text("completed", timeout=30_000)  # the list follows too
    # After the run started, the badge never went back to queued.
    assert "queued" not in seen[seen.index("running") :] if "running" in seen else True
    expect(page.locator("#duration-label")).to_have_text("Duration")
    home.close()


def test_missing_task_404_page_and_sign_in_returns_to_the_link(
    server: BackgroundServer, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    task_url = submit(page, "Where does sign-in lead back to?")
    page.goto(server.url + "/task/tsk_nope")
    expect(page.locator("#not-found h1")).to_have_text("Not found")
    expect(page.locator("#not-found")).to_contain_text("tsk_nope")
    response = page.goto(server.url + "/no/such/page")
    assert response is not None and response.status == 404
    expect(page.locator("#not-found")).to_be_visible()
    # Signed out, the task link asks for the key and then opens the task.
    page.click("#theme-toggle")
    page.goto(server.url)
    page.click("#forget-key")
    expect(page.locator("#key-form")).to_be_visible()
    page.goto(task_url)
    expect(page.locator("#next-note")).to_be_visible()
    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_url(task_url)
    # A link elsewhere is never followed after sign-in, however it is disguised.
    for bad in (
        "//evil.example/x",
        "/%09/evil.example/x",
        "/%0A/evil.example",
        "/%09%5Cevil.example",
        "/\\evil.example",
    ):
        page.click("a.brand")
        page.click("#forget-key")
        expect(page.locator("#key-form")).to_be_visible()
        page.goto(server.url + "/?next=" + bad)
        page.fill("#api-key", KEY)
        page.click("#key-form button[type=submit]")
        page.wait_for_url(server.url + "/")


def test_back_shows_the_form_as_it_will_be_sent(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    page.select_option("#processor", "ultra")
    page.check('input[name="schema_mode"][value="json"]')
    page.goto(server.url + "/no/such/page")
    page.go_back()
    page.wait_for_load_state("load")
    price = page.locator("#processor").evaluate("s => Number(s.selectedOptions[0].dataset.price).toFixed(3)")
    expect(page.locator("#cost")).to_have_text(f"${price}")
    mode = page.locator('input[name="schema_mode"]:checked').get_attribute("value")
    assert page.locator("#schema").is_visible() == (mode != "auto")


def test_warnings_before_submit_and_on_the_task_page(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    page.select_option("#processor", "lite")
    page.fill("#input", "Parallel Web Systems")
    page.check('input[name="schema_mode"][value="json"]')
    page.fill("#schema", SCHEMA_3)
    expect(page.locator("#check-warnings li")).to_contain_text(["processor lite handles about"])
    page.click("#run-task")
    page.wait_for_url("**/task/tsk_*")
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#warnings li").first).to_contain_text("lite")


def test_failed_and_rejected_tasks_say_what_happened_and_offer_actions(
    server: BackgroundServer, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    submit(page, "This one breaks [emulator:fail]")
    expect(page.locator("#status")).to_have_text("failed", timeout=60_000)
    expect(page.locator("#problem")).to_be_visible()
    expect(page.locator("#status-help")).to_contain_text("Resubmit")
    for action in ("#resubmit", "#edit-rerun", "#delete"):
        expect(page.locator(action)).to_be_visible()
    expect(page.locator("#result-card")).to_be_hidden()
    expect(page.locator("#follow-card")).to_be_hidden()
    shot(page, "manager-failed-desktop")
    page.click("#resubmit")
    page.wait_for_url("**/task/tsk_*")
    expect(page.locator("#status")).to_have_text("failed", timeout=60_000)
    page.once("dialog", lambda d: d.accept())
    page.click("#delete")
    page.wait_for_url(server.url + "/")

    # A key without credit: Parallel refuses the create (402), nothing is billed, no cost is shown.
    other = context.browser.new_context(viewport=DESKTOP)  # type: ignore[union-attr]
    try:
        poor = other.new_page()
        sign_in(poor, server.url, "emu-nocredit-1234")
        submit(poor, "Who pays for this?")
        expect(poor.locator("#status")).to_have_text("rejected", timeout=30_000)
        expect(poor.locator("#cost")).to_have_text("none: no run was created")
        expect(poor.locator("#problem")).to_contain_text("402")
        expect(poor.locator("#edit-rerun")).to_be_visible()
    finally:
        other.close()


def test_key_errors_speak_to_people(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    page.goto(server.url)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_have_text("Enter your Parallel API key.")
    page.fill("#api-key", "emu-invalid-0000")
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-error")).to_contain_text("Parallel refused this key")
    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-mask")).to_have_text("…4321")
    expect(page.locator("#key-error")).to_have_text("")
    assert "x-api-key" not in page.locator("body").inner_text()


def test_tabs_mark_the_selected_one_and_every_text_meets_wcag_aa(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    db = tmp_path / "a11y.db"
    tasks = seed_tasks(db, 6)
    srv = start_server(db, emulator)
    try:
        for scheme in ("light", "dark"):
            ctx = browser.new_context(viewport=DESKTOP, color_scheme=scheme)
            page = ctx.new_page()
            sign_in(page, srv.url)
            page.check(f'#tasks input.pick[data-id="{tasks[0].id}"]')  # the bulk bar too
            assert low_contrast(page) == [], (scheme, "home")
            page.goto(srv.url + f"/task/{tasks[0].id}")
            expect(page.locator("#tab-table")).to_have_attribute("aria-selected", "true")
            assert low_contrast(page) == [], (scheme, "task")
            page.click("#tab-json")
            expect(page.locator("#tab-json")).to_have_attribute("aria-selected", "true")
            expect(page.locator("#tab-table")).to_have_attribute("aria-selected", "false")
            page.click("#req-python")
            expect(page.locator("#req-python")).to_have_attribute("aria-selected", "true")
            expect(page.locator("#req-json")).to_have_attribute("aria-selected", "false")
            assert low_contrast(page) == [], (scheme, "task json")
            page.goto(srv.url + f"/task/{tasks[1].id}")  # failed
            assert low_contrast(page) == [], (scheme, "failed")
            ctx.close()
    finally:
        srv.stop()


def test_task_page_details_times_copy_and_live_age(server: BackgroundServer, browser: Browser) -> None:
    ctx = browser.new_context(viewport=DESKTOP, timezone_id="Asia/Tokyo")
    ctx.grant_permissions(["clipboard-read", "clipboard-write"])
    page = ctx.new_page()
    try:
        sign_in(page, server.url)
        submit(page, "What is the tallest building in Tokyo?")
        expect(page.locator("#question")).to_have_text("What is the tallest building in Tokyo?")
        assert "tallest building" in page.title()
        expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
        created = page.locator("#created")
        expect(created).to_have_attribute("title", re.compile(r"Z \(UTC\)$"))
        iso = created.get_attribute("datetime") or ""
        assert "+09:00" not in iso and created.inner_text() != iso  # shown in the reader's zone
        expect(page.locator("#duration")).not_to_have_text("—")
        page.click("#copy-run")
        expect(page.locator("#copy-note")).to_have_text("Copied")
        assert page.evaluate("navigator.clipboard.readText()") == page.locator("#run-id").inner_text()
        # The reasoning list keeps its newest message in view.
        timeline = page.locator("#timeline")
        assert timeline.evaluate("l => l.children.length") > 0
        # Ages move on while the list is open (the clock is driven, not waited for).
        home = ctx.new_page()
        home.clock.install()
        home.goto(server.url)
        age = home.locator("#tasks tbody td.age").first
        before = age.inner_text()
        home.clock.fast_forward("05:00")
        expect(age).not_to_have_text(before)
        home.close()
    finally:
        ctx.close()


def test_api_twins_assets_and_one_fetch_at_the_end(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if r.url.endswith(".json") else None)
    url = submit(page, "One fetch at the end, please")
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    expect(page.locator("#no-result")).to_be_hidden()
    assert sum(1 for u in fetched if "/task/" in u) == 1, fetched
    task_id = url.rsplit("/", 1)[1]
    summary = api(server, "GET", f"/api/tasks/{task_id}").json()["task"]
    assert summary["urls"]["self"] == f"/api/tasks/{task_id}" and summary["status"] == "completed"
    home = api(server, "GET", "/index.json").json()
    assert home["tasks"][0]["id"] == task_id and home["counts"] == {"completed": 1}
    css = page.locator('link[rel="stylesheet"]').get_attribute("href") or ""
    assert re.fullmatch(r"/static/app\.css\?v=[0-9a-f]{12}", css)
    asset = httpx.get(server.url + css, headers={"accept-encoding": "gzip"})
    assert asset.headers["content-encoding"] == "gzip"
    assert "immutable" in asset.headers["cache-control"]
    again = httpx.get(server.url + css, headers={"if-none-match": asset.headers["etag"]})
    assert again.status_code == 304
    icon = httpx.get(server.url + "/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")


def test_form_checks_as_you_type_with_the_servers_rules(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    page.fill("#input", "Anything")
    page.check('input[name="schema_mode"][value="json"]')
    page.fill("#schema", SCHEMA_3.replace('"integer"', '"strin"'))
    expect(page.locator("#check-problems")).to_contain_text("unknown type 'strin'")
    page.fill("#schema", SCHEMA_3)
    expect(page.locator("#check-problems li")).to_have_count(0)
    page.click("#more-options summary")
    page.fill("#include", "not a domain!!")
    expect(page.locator("#check-problems")).to_contain_text("is not a domain")
    page.fill("#include", "sec.gov")
    expect(page.locator("#check-problems li")).to_have_count(0)
    page.fill("#input", "x" * 25_001)
    expect(page.locator("#input-count")).to_have_class("error small")
    expect(page.locator("#check-problems")).to_contain_text("limit")
    page.click("#run-task")
    expect(page.locator("#task-error")).to_contain_text("Fix the problems")
    assert page.url.rstrip("/") == server.url  # nothing was sent
    # The same rules for scripts: an unknown top-level field.
    check = api(server, "POST", "/api/tasks/check", json={"processor": "lite", "input": "x", "inptu": 1}).json()
    assert not check["ok"] and check["problems"][0]["loc"] == ["inptu"]


def test_track_a_run_created_elsewhere(
    server: BackgroundServer, context: BrowserContext, emulator: BackgroundEmulator
) -> None:
    created = httpx.post(
        emulator.url + "/v1/tasks/runs",
        headers={"x-api-key": KEY},
        json={"processor": "lite", "input": "Made elsewhere"},
    ).json()
    page = context.new_page()
    sign_in(page, server.url)
    page.click("#track-card summary")
    page.fill("#track-run", created["run_id"])
    page.click("#track-form button[type=submit]")
    page.wait_for_url("**/task/tsk_*")
    expect(page.locator("#run-id")).to_have_text(created["run_id"])
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    page.goto(server.url)
    page.click("#track-card summary")
    page.fill("#track-run", "trun_doesnotexist")
    page.click("#track-form button[type=submit]")
    expect(page.locator("#track-error")).not_to_be_empty()


def test_edit_and_rerun_and_follow_ups_link_both_ways(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    parent_url = submit(page, "Parallel Web Systems", processor="lite", schema=SCHEMA_3)
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    page.click("#edit-rerun")
    expect(page.locator("#form-title")).to_have_text("Edit & rerun")
    expect(page.locator("#processor")).to_have_value("lite")
    expect(page.locator("#input")).to_have_value("Parallel Web Systems")
    assert json.loads(page.locator("#schema").input_value()) == json.loads(SCHEMA_3)
    page.select_option("#processor", "base")
    page.click("#run-task")
    page.wait_for_url("**/task/tsk_*")
    rerun = api(server, "GET", urlparse(page.url).path + ".json").json()
    assert rerun["processor"] == "base"
    assert rerun["request"]["task_spec"]["output_schema"]["json_schema"] == json.loads(SCHEMA_3)

    # A follow-up with another processor, from the parent's page; each links to the other.
    page.goto(parent_url)
    page.fill("#follow-input", "And who founded it?")
    page.select_option("#follow-processor", "core")
    page.click("#follow-up button[type=submit]")
    page.wait_for_url("**/task/tsk_*")
    expect(page.locator("#parent")).to_have_attribute("href", urlparse(parent_url).path)
    child_path = urlparse(page.url).path
    assert api(server, "GET", child_path + ".json").json()["processor"] == "core"
    page.goto(parent_url)
    expect(page.locator("#follow-ups a")).to_have_attribute("href", child_path)
    # … and one with another output schema, through the full form.
    page.click("#follow-card a[href*='follow=1']")
    expect(page.locator("#form-title")).to_have_text("Follow-up")
    page.fill("#input", "Their revenue?")
    page.check('input[name="schema_mode"][value="text"]')
    page.fill("#schema", "One line")
    page.click("#run-task")
    page.wait_for_url("**/task/tsk_*")
    sent = api(server, "GET", urlparse(page.url).path + ".json").json()
    assert sent["follow_up_of"] == urlparse(parent_url).path.rsplit("/", 1)[1]
    assert sent["request"]["task_spec"]["output_schema"] == {"type": "text", "description": "One line"}


def test_every_run_option_is_reachable_from_the_form(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    page.fill("#input", "Every option")
    expect(page.locator("#webhook")).to_be_hidden()  # folded: the simple case stays simple
    page.click("#more-options summary")
    page.fill("#include", "sec.gov, .edu")
    page.fill("#exclude", "example.com")
    page.fill("#after-date", "2024-01-31")
    page.fill("#location", "GB")
    page.fill("#metadata", '{"team": "research"}')
    page.uncheck("#enable-events")
    page.fill("#webhook", "https://hooks.example.com/parallel")
    page.fill("#mcp", '[{"type": "url", "name": "docs", "url": "https://mcp.example.com/sse"}]')
    page.fill("#previous-interaction", "trun_0123456789abcdef")
    page.click("#run-task")
    page.wait_for_url("**/task/tsk_*")
    sent = api(server, "GET", urlparse(page.url).path + ".json").json()["request"]
    assert sent["source_policy"] == {
        "include_domains": ["sec.gov", ".edu"],
        "exclude_domains": ["example.com"],
        "after_date": "2024-01-31",
    }
    assert sent["advanced_settings"] == {"location": "gb"}
    assert sent["enable_events"] is False
    assert sent["webhook"] == {"url": "https://hooks.example.com/parallel", "event_types": ["task_run.status"]}
    assert sent["mcp_servers"][0]["url"] == "https://mcp.example.com/sse"
    assert sent["previous_interaction_id"] == "trun_0123456789abcdef"


def test_reports_render_with_a_real_markdown_library(server: BackgroundServer, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, server.url)
    page.check('input[name="schema_mode"][value="text"]')
    submit(page, "A report on Parallel", processor="lite")
    expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
    report = page.locator("#result-table .report")
    expect(report.locator("h3").first).to_be_visible()
    expect(report.locator("table")).to_have_count(1)
    expect(report.locator("ul li").first).to_be_visible()
    for href in report.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        assert href.startswith(("https://", "http://", "#"))


def test_screenshots_of_every_page_on_desktop_and_phone_in_light_and_dark(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    """Writes test-artifacts/ui-<page>-<desktop|phone>-<light|dark>.png; each page must also fit the phone."""
    db = tmp_path / "shots.db"
    tasks = seed_tasks(db, 1000)
    srv = start_server(db, emulator)
    done = [t for t in tasks if t.output][-2:]
    failed = next(t for t in reversed(tasks) if t.error)
    try:
        setup = browser.new_context(viewport=DESKTOP)
        page = setup.new_page()
        sign_in(page, srv.url)
        page.select_option("#processor", "lite")
        page.fill("#input", "A run that is still going")
        page.click("#more-options summary")
        page.fill("#metadata", '{"emulator": "duration=360000"}')  # an hour at this time scale
        page.click("#run-task")
        page.wait_for_url("**/task/tsk_*")
        running = urlparse(page.url).path
        expect(page.locator("#status")).to_have_text("running", timeout=30_000)
        cookies = setup.cookies()
        setup.close()
        pages = {
            "home": "/",
            "list-1000": "/?status=completed",
            "running": running,
            "completed-table": f"/task/{done[0].id}",
            "completed-json": f"/task/{done[0].id}",
            "failed": f"/task/{failed.id}",
            "compare": f"/compare?id={done[0].id}&id={done[1].id}",
        }
        for size_name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            for scheme in ("light", "dark"):
                ctx = browser.new_context(viewport=viewport, color_scheme=scheme)
                ctx.add_cookies(cookies)  # type: ignore[arg-type]
                page = ctx.new_page()
                for name, path in pages.items():
                    page.goto(srv.url + path)
                    if name == "completed-json":
                        page.click("#tab-json")
                    if name == "running":
                        expect(page.locator("#timeline li").first).to_be_visible(timeout=30_000)
                    shot(page, f"ui-{name}-{size_name}-{scheme}")
                    assert no_sideways_scroll(page), (name, size_name)
                ctx.close()
        assert (Path(__file__).parents[2] / "test-artifacts" / "ui-compare-phone-dark.png").stat().st_size > 0
    finally:
        srv.stop()


def test_demo_runs_survive_a_restart_of_taskdeck_and_its_emulator(tmp_path: Path, browser: Browser) -> None:
    """Close the laptop and come back, in demo mode: the demo emulator keeps its runs on disk."""
    base = Settings(db_path=tmp_path / "taskdeck.db", secret_key=SECRET, heartbeat_interval=1, lease_ttl=3)
    settings = demo_settings(base, None)
    assert settings.db_path.name == "demo.db"  # never real mode's database

    def start() -> tuple[BackgroundEmulator, BackgroundServer]:
        emu = start_demo_emulator(settings, time_scale=0.01)
        app = create_app(settings.with_overrides(parallel_base_url=emu.url), demo=True)
        return emu, BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)).start()

    emu, srv = start()
    ctx = browser.new_context(viewport=DESKTOP)
    page = ctx.new_page()
    try:
        sign_in(page, srv.url)
        page.fill("#input", "Still running when the laptop closes")
        page.click("#more-options summary")
        page.fill("#metadata", '{"emulator": "duration=1500"}')  # 15 s at this time scale
        page.click("#run-task")
        page.wait_for_url("**/task/tsk_*")
        path = urlparse(page.url).path
        expect(page.locator("#status")).to_have_text("running", timeout=30_000)
        page.goto("about:blank")
        srv.stop()
        emu.stop()
        emu, srv = start()
        page.goto(srv.url + path)  # the session is server-side: the same cookie still works
        expect(page.locator("#status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#problem")).to_be_hidden()
        expect(page.locator("#no-result")).to_be_hidden()
    finally:
        ctx.close()
        srv.stop()
        emu.stop()
