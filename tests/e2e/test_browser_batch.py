"""The live batch grid (/batch/{id}) in a real browser, against a real Taskdeck and emulator: rows fill in
while they run, failed rows stay visible, filters, search, sort, the basis panel, hostile upstream text,
10,000-row virtualisation (2,000 here), retry of failed rows, and a phone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser_helpers import KEY, low_contrast, shot, start_server
from playwright.sync_api import Browser, BrowserContext, Dialog, Page, expect

from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.run import FAIL_MARKER
from taskdeck.emulator.server import BackgroundServer

OUTPUTS = [
    {"name": "ceo", "type": "string", "description": "name of the CEO"},
    {"name": "founded", "type": "integer", "description": "year founded"},
]
COMPANIES = ["Acme", f"Initech {FAIL_MARKER}", "Globex", "Umbrella", f"Hooli {FAIL_MARKER}", "Stark"]
CSV = "company,city\n" + "".join(f"{c},City {i}\n" for i, c in enumerate(COMPANIES))
FAILED_ROWS = ["2", "5"]  # row numbers as the grid shows them (1-based)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, emulator: BackgroundEmulator) -> Iterator[BackgroundServer]:
    server = start_server(tmp_path_factory.mktemp("batch") / "batch.db", emulator)
    yield server
    server.stop()


@pytest.fixture
def api(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as client:
        yield client


def create_batch(api: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    """Check, then create with the cost the check answered; the new batch's summary."""
    check = api.post("/api/batches/check", json=body)
    assert check.status_code == 200, check.text
    resp = api.post("/api/batches", json={**body, "confirm_cost_usd": check.json()["cost_usd"]})
    assert resp.status_code == 201, resp.text
    batch: dict[str, Any] = resp.json()["batch"]
    return batch


def creates(emulator: BackgroundEmulator) -> int:
    """Runs the emulator created, for every key."""
    stats = httpx.get(f"{emulator.url}/_emulator/stats").json()
    return sum(int(k["runs"]) for k in stats["keys"].values())


def signed_in(browser: Browser, server: BackgroundServer, **options: Any) -> tuple[BrowserContext, Page]:
    context = browser.new_context(**options)
    page = context.new_page()
    page.goto(server.url)
    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    expect(page.locator("#key-mask")).to_have_text("…" + KEY[-4:])
    return context, page


class Watch:
    """What a page must never do: throw, break the CSP, open a dialog."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"error: {exc}"))
        page.on("console", lambda m: self.problems.append(m.text) if "Content Security Policy" in m.text else None)
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()


def grid_numbers(page: Page) -> list[str]:
    return page.locator("#grid-win .gc.num").all_inner_texts()


def test_the_grid_fills_in_live_keeps_failed_rows_filters_sorts_shows_basis_and_retries(
    server: BackgroundServer, api: httpx.Client, browser: Browser, emulator: BackgroundEmulator
) -> None:
    context, page = signed_in(browser, server, viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    try:
        spec = {"processor": "lite", "outputs": OUTPUTS, "metadata": {"emulator": "duration=600"}}
        batch = create_batch(api, {"name": "companies.csv", "content": CSV, "spec": spec})
        page.goto(server.url + batch["urls"]["page"])
        page.evaluate("window.__same_page = true")  # gone if anything reloads the page
        expect(page.locator("#batch-name")).to_have_text("companies.csv")
        # Opened while the rows run: rows without their outputs yet, every row in input order.
        expect(page.locator("#grid-win .gc.pend").first).to_be_visible()
        expect(page.locator("#grid-win .gc.num")).to_have_count(len(COMPANIES))
        assert grid_numbers(page) == [str(i + 1) for i in range(len(COMPANIES))]
        assert page.locator("#grid-win .gc.in").all_inner_texts()[::2] == COMPANIES

        # Live: the outputs of the rows that succeed appear, the failed rows show their error, no reload.
        ok = len(COMPANIES) - len(FAILED_ROWS)
        expect(page.locator("#grid-win button.out:not(.err)")).to_have_count(ok * len(OUTPUTS), timeout=60_000)
        expect(page.locator("#grid-win button.out.err")).to_have_count(len(FAILED_ROWS))
        expect(page.locator("#batch-status")).to_have_text("completed")
        assert page.evaluate("window.__same_page") is True
        assert grid_numbers(page) == [str(i + 1) for i in range(len(COMPANIES))]
        failed = page.locator("#grid-win .grow.g-failed")
        assert failed.locator(".gc.num").all_inner_texts() == FAILED_ROWS
        for error in failed.locator("button.out.err").all():
            expect(error).to_be_visible()
            expect(error).to_contain_text("asked to fail")  # the row's error itself, not an empty red cell
        expect(page.locator("#n-failed")).to_have_text(str(len(FAILED_ROWS)))
        expect(page.locator("#percent")).to_have_text("100%")
        expect(page.locator("#export-csv")).to_have_attribute("href", batch["urls"]["export_csv"])
        expect(page.locator("#export-jsonl")).to_have_attribute("href", batch["urls"]["export_jsonl"])
        assert not low_contrast(page)

        # Filter, search, sort: client-side, over the rows loaded.
        page.click(".chip[data-filter=failed]")
        expect(page.locator("#grid-win .gc.num")).to_have_text(FAILED_ROWS)
        page.click(".chip[data-filter=completed]")
        expect(page.locator("#grid-win .gc.num")).to_have_count(ok)
        page.click(".chip[data-filter=all]")
        page.fill("#grid-search", "globex")
        expect(page.locator("#grid-win .gc.num")).to_have_text(["3"])
        page.fill("#grid-search", "")
        expect(page.locator("#grid-win .gc.num")).to_have_count(len(COMPANIES))
        page.click("#grid-head button[data-sort='in:company']")
        expect(page.locator("#grid-win .gc.num")).to_have_text(["1", "3", "5", "2", "6", "4"])  # A, G, H, I, S, U
        page.click("#grid-head button[data-sort='in:company']")
        expect(page.locator("#grid-win .gc.num")).to_have_text(["4", "6", "2", "5", "3", "1"])
        expect(page.locator("#grid-head [aria-sort=descending]")).to_have_count(1)
        page.click("#grid-head button[data-sort='status']")  # what needs attention first
        expect(page.locator("#grid-win .gc.num").first).to_have_text(FAILED_ROWS[0])
        page.click("#grid-head button[data-sort='#']")
        expect(page.locator("#grid-win .gc.num").first).to_have_text("1")

        # A cell's basis: value, confidence, reasoning, citations (title as link text, the URL shown).
        page.locator("#grid-win .grow").first.locator("button.out[data-field=ceo]").click()
        panel = page.locator("#panel")
        expect(panel).to_be_visible()
        expect(page.locator("#panel-title")).to_have_text("Row 1 · ceo")
        expect(panel.locator(".preason")).not_to_be_empty()
        expect(panel.locator(".pconf .cfbadge")).to_have_text(re.compile(r"^(high|medium|low)$"))
        citation = panel.locator(".pcites li").first
        expect(citation.locator("a.ctitle")).to_have_attribute("href", citation.locator(".curl").inner_text())
        expect(citation.locator("a.ctitle")).to_have_attribute("rel", "noopener noreferrer")
        expect(panel.locator("#panel-task")).to_have_attribute("href", re.compile(r"^/task/tsk_\w+$"))
        page.keyboard.press("Escape")
        expect(panel).to_be_hidden()
        expect(page.locator("#grid-win .grow").first.locator("button.out[data-field=ceo]")).to_be_focused()
        page.keyboard.press("Enter")  # cells are buttons: the keyboard opens them too
        expect(page.locator("#panel-title")).to_be_focused()
        page.click("#panel-close")
        expect(panel).to_be_hidden()

        # Retry the failed rows: the cost is confirmed first, they run again and (still asking to fail) fail again.
        before = creates(emulator)
        expect(page.locator("#retry")).to_have_text(f"Retry failed rows ({len(FAILED_ROWS)})")
        page.click("#retry")
        expect(page.locator("#retry-text")).to_contain_text("2 × $0.005 = $0.010")
        page.click("#retry-cancel")  # changing one's mind costs nothing
        expect(page.locator("#retry-dialog")).to_be_hidden()
        expect(page.locator("#grid-win .grow.g-failed")).to_have_count(len(FAILED_ROWS))
        page.click("#retry")
        page.click("#retry-confirm")
        expect(page.locator("#grid-win .grow.g-failed")).to_have_count(0)
        expect(page.locator("#batch-status")).to_have_text("running")
        second = page.locator("#grid-win .grow").nth(1).locator(".gc.st")
        expect(second).to_have_text("in progress", timeout=30_000)  # added again upstream
        expect(page.locator("#retry")).to_be_hidden()
        expect(page.locator("#batch-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#grid-win .grow.g-failed .gc.num")).to_have_text(FAILED_ROWS)
        for legend in ("#n-running", "#n-queued", "#n-waiting"):
            expect(page.locator(legend)).to_have_text("0")
        assert creates(emulator) - before == len(FAILED_ROWS)
        assert page.evaluate("window.__same_page") is True
        page.locator("#grid-win .grow").nth(2).locator("button.out[data-field=ceo]").click()
        expect(panel.locator(".pcites li").first).to_be_visible()
        shot(page, "batch-grid-1280")
    finally:
        context.close()
    assert not watch.problems, watch.problems


def test_hostile_outputs_and_citations_stay_text_and_link_nothing(
    server: BackgroundServer, api: httpx.Client, browser: Browser
) -> None:
    context, page = signed_in(browser, server)
    watch = Watch(page)
    try:
        spec = {"processor": "lite", "outputs": OUTPUTS[:1], "metadata": {"emulator": "xss;duration=20"}}
        rows = [{"company": "<img src=x onerror=window.__pwned=1>"}, {"company": "Evil Corp"}]
        batch = create_batch(api, {"name": "<script>window.__pwned=1</script>.csv", "rows": rows, "spec": spec})
        page.goto(server.url + batch["urls"]["page"])
        expect(page.locator("#batch-status")).to_have_text("completed", timeout=60_000)
        cells = page.locator("#grid-win button.out")
        expect(cells).to_have_count(2)
        expect(cells.first).to_contain_text("<script>")  # shown as text
        expect(page.locator("#grid-win .gc.in").first).to_have_text(rows[0]["company"])
        for i in range(2):
            cells.nth(i).click()
            panel = page.locator("#panel")
            expect(panel.locator(".pcites li").first).to_be_visible()
            expect(panel.locator(".preason")).to_contain_text("<script>")
            expect(panel.locator(".pcites")).to_contain_text("javascript:")  # the address, as text, not a link
            expect(panel.locator(".pcites li").first.locator("a")).to_have_count(0)
            hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
            assert not [h for h in hrefs if not h.startswith(("/", "http://", "https://"))], hrefs
            assert page.locator('a[href^="javascript:" i]').count() == 0
            page.click("#panel-close")
        assert page.evaluate("window.__pwned === undefined && window.__xss === undefined")
        assert page.locator("#grid img, #panel img, #grid script, #panel script").count() == 0
    finally:
        context.close()
    assert not watch.problems, watch.problems


def test_two_thousand_rows_are_virtualised_and_the_last_is_reachable(
    server: BackgroundServer, api: httpx.Client, browser: Browser
) -> None:
    context, page = signed_in(browser, server, viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    try:
        n = 2000
        rows = [{"company": f"Company {i:04d}", "country": ["FR", "US", "JP"][i % 3]} for i in range(n)]
        spec = {"processor": "lite", "outputs": OUTPUTS[:1], "metadata": {"emulator": "duration=5"}}
        batch = create_batch(api, {"name": "big.json", "rows": rows, "spec": spec})
        page.goto(server.url + batch["urls"]["page"])
        expect(page.locator("#grid-count")).to_have_text("2,000 rows")
        in_dom = page.locator("#grid-win .grow").count()
        assert 0 < in_dom < 100, in_dom
        assert page.locator("#grid-win .gc.num").first.inner_text() == "1"
        page.locator("#grid-scroll").evaluate("el => { el.scrollTop = el.scrollHeight; }")
        last = page.locator("#grid-win .grow[data-index='1999']")
        expect(last).to_be_visible()
        expect(last.locator(".gc.num")).to_have_text("2000")
        expect(last.locator(".gc.in").first).to_have_text("Company 1999")
        assert page.locator("#grid-win .grow").count() < 100
        # The batch ends (every row created before the next test counts creates); the grid follows.
        expect(page.locator("#batch-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#n-done")).to_have_text("2,000")
        expect(last.locator("button.out")).to_have_count(1)
        # Sorting and filtering work over all 2,000 rows, still virtualised.
        page.click("#grid-head button[data-sort='#']")
        expect(page.locator("#grid-win .gc.num").first).to_have_text("2000")
        page.fill("#grid-search", "company 0042")
        expect(page.locator("#grid-win .gc.num")).to_have_text(["43"])
    finally:
        context.close()
    assert not watch.problems, watch.problems


def test_on_a_phone_the_grid_scrolls_inside_and_the_details_are_a_sheet(
    server: BackgroundServer, api: httpx.Client, browser: Browser
) -> None:
    context, page = signed_in(
        browser, server, viewport={"width": 390, "height": 844}, is_mobile=True, color_scheme="dark"
    )
    watch = Watch(page)
    try:
        spec = {"processor": "lite", "outputs": OUTPUTS, "metadata": {"emulator": "duration=20"}}
        batch = create_batch(api, {"name": "phone.csv", "content": CSV, "spec": spec})
        page.goto(server.url + batch["urls"]["page"])
        expect(page.locator("#batch-status")).to_have_text("completed", timeout=60_000)
        expect(page.locator("#grid-win button.out.err")).to_have_count(len(FAILED_ROWS))
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")  # no page-wide scroll
        grid = page.locator("#grid-scroll")
        assert grid.evaluate("el => el.scrollWidth > el.clientWidth")  # the grid scrolls sideways, inside
        grid.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
        page.locator("#grid-win .grow").first.locator("button.out[data-field=founded]").click()
        panel = page.locator("#panel")
        expect(panel).to_be_visible()
        box = panel.bounding_box()
        assert box is not None and box["width"] >= 389 and box["x"] <= 1  # a full-width sheet
        expect(panel.locator(".pvalue")).not_to_be_empty()
        assert not low_contrast(page)
        page.click("#panel-close")
        expect(panel).to_be_hidden()
    finally:
        context.close()
    assert not watch.problems, watch.problems
