"""The /batches page in a real browser (Debian's chromium via Playwright), a real Taskdeck and its emulator:
a dropped table is read as bytes, previewed with its exact requests and total, run, listed live, and the
same table and spec again open the same batch and pay for nothing."""

from __future__ import annotations

import base64
import codecs
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_helpers import KEY, SECRET, low_contrast, no_sideways_scroll, start_server
from playwright.sync_api import Browser, BrowserContext, FilePayload, Page, ViewportSize, expect

from taskdeck.config import Settings
from taskdeck.emulator import BackgroundEmulator
from taskdeck.emulator.server import BackgroundServer
from taskdeck.web import create_app
from taskdeck.web.app import begin_shutdown

PHONE: ViewportSize = {"width": 390, "height": 844}
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
SHOTS = Path("/work/notes/shots")
# BOM, semicolons, a quoted newline, a duplicate header ("city" twice: the second becomes city_2).
NASTY = '\ufeffcompany;city;city\r\nAcme;"Paris\nNord";x\r\nGlobex;Lyon;y\r\nInitech;Nice;z\r\n'.encode()
# The same kind of table in UTF-16 with its BOM: read as text, it would arrive as garbage.
# The last row is hostile: it must show as text and run nothing.
HOSTILE = '"<img src=x onerror=""window.__xss=1"">",<b>bold</b>'
UTF16 = codecs.BOM_UTF16_LE + f"company,country\r\nÆther Labs,NO\r\nZürich AG,CH\r\n{HOSTILE}\r\n".encode("utf-16-le")


@pytest.fixture
def server(tmp_path: Path, emulator: BackgroundEmulator) -> Iterator[BackgroundServer]:
    srv = start_server(tmp_path / "batches.db", emulator)
    yield srv
    srv.stop()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=DESKTOP)
    yield ctx
    ctx.close()


def sign_in_at_batches(page: Page, url: str) -> None:
    """Open /batches signed out: the home page asks for the key, then comes back here."""
    page.goto(url + "/batches")
    page.fill("#api-key", KEY)
    page.click("#key-form button[type=submit]")
    page.wait_for_url("**/batches")
    expect(page.locator("#drop")).to_be_visible()


def pick_file(page: Page, name: str, content: bytes) -> None:
    payload: FilePayload = {"name": name, "mimeType": "text/csv", "buffer": content}
    page.set_input_files("#file", payload)


def drop_file(page: Page, name: str, content: bytes) -> None:
    """A real drop: dragenter, dragover and drop events carrying a DataTransfer with the file."""
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type: "text/csv" }));
            const zone = document.getElementById("drop");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
            }
        }""",
        [name, base64.b64encode(content).decode()],
    )


def fill_spec(
    page: Page,
    processor: str = "lite",
    columns: list[str] | None = None,
    metadata: str = '{"team": "e2e", "emulator": "duration=500"}',  # 5 s a row at this time scale
) -> None:
    """The spec the tests run: one output column, the chosen columns sent, some metadata."""
    page.select_option("#processor", processor)
    row = page.locator("#outputs .output-row").first
    row.locator('[data-field="name"]').fill("ceo")
    row.locator('[data-field="description"]').fill("Name of the current CEO")
    if columns is not None:
        for box in page.locator("#columns input").all():
            if (box.get_attribute("value") or "") not in columns:
                box.uncheck()
    page.fill("#metadata", metadata)


def upstream_runs(emulator: BackgroundEmulator) -> int:
    stats: dict[str, Any] = httpx.get(f"{emulator.url}/_emulator/stats", params={"runs": "false"}).json()
    return sum(int(k["runs"]) for k in stats["keys"].values())


def screenshot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"batches-{name}.png"), full_page=True)


def test_drop_a_nasty_csv_preview_run_it_and_the_same_again_pays_nothing(
    server: BackgroundServer, context: BrowserContext, emulator: BackgroundEmulator
) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sign_in_at_batches(page, server.url)
    expect(page.locator("#empty")).to_contain_text("A batch is a table")
    screenshot(page, "empty-1280")
    expect(page.locator("#spec-form")).to_be_hidden()

    pick_file(page, "companies.csv", NASTY)
    expect(page.locator("#file-info")).to_contain_text("3 rows × 3 columns (CSV)")
    expect(page.locator("#columns input")).to_have_count(3)
    expect(page.locator("#processor")).to_have_value("base")  # the default
    expect(page.locator('#outputs [data-field="name"]')).to_have_value("")  # a placeholder, not a value
    fill_spec(page, columns=["company", "city"])
    page.click("#preview-button")

    expect(page.locator("#pv-columns .column-chip")).to_have_text(["company", "city", "city_2"])
    expect(page.locator("#pv-rows")).to_have_text("3")
    # The renamed duplicate header and the byte-order mark, both said.
    expect(page.locator("#pv-warnings li", has_text="two columns were named 'city'")).to_contain_text("'city_2'")
    expect(page.locator("#pv-warnings li", has_text="byte-order mark")).to_have_count(1)
    expect(page.locator("#pv-samples details.sample")).to_have_count(3)
    first = page.locator("#pv-samples pre").first
    expect(first).to_contain_text('"company": "Acme"')
    expect(first).to_contain_text('"city": "Paris\\nNord"')  # the quoted newline, kept in the cell
    expect(first).not_to_contain_text("city_2")  # an unticked column is not sent
    expect(first).to_contain_text('"team": "e2e",')
    expect(page.locator("#pv-total")).to_have_text("$0.015")  # 3 rows x lite's $0.005
    expect(page.locator("#pv-resumes")).to_be_hidden()
    expect(page.locator("#run-button")).to_have_text("Run 3 rows for $0.015")

    # A change after the preview: the preview no longer says what would be sent, so no run button.
    page.select_option("#processor", "base")
    expect(page.locator("#run-button")).to_be_hidden()
    expect(page.locator("#stale-note")).to_be_visible()
    page.select_option("#processor", "lite")
    page.click("#preview-button")
    expect(page.locator("#run-button")).to_have_text("Run 3 rows for $0.015")

    before = upstream_runs(emulator)
    page.click("#run-button")
    page.wait_for_url(re.compile(r"/batch/bat_[0-9a-f]{24}$"))
    batch_path = "/batch/" + page.url.rsplit("/batch/", 1)[1]

    page.goto(server.url + "/batches")
    item = page.locator("#batches li.batch")
    expect(item).to_have_count(1)
    expect(item.locator("a.batch-name")).to_have_text("companies.csv")
    expect(item.locator("a.batch-name")).to_have_attribute("href", batch_path)
    expect(item.locator(".badge")).not_to_have_text("completed")  # its rows take 5 s
    expect(page.locator("#list-note")).to_contain_text("updated every few seconds")
    # Live: the list follows the batch to its end without a reload.
    expect(item.locator(".badge")).to_have_text("completed", timeout=60_000)
    expect(item).to_contain_text("3 done")
    expect(item).to_contain_text("$0.015 so far")
    assert upstream_runs(emulator) - before == 3

    # The same bytes (dropped this time) with the same spec: the earlier batch, nothing paid again.
    drop_file(page, "companies.csv", NASTY)
    expect(page.locator("#file-info")).to_contain_text("3 rows × 3 columns")
    fill_spec(page, columns=["company", "city"])
    page.click("#preview-button")
    expect(page.locator("#pv-resumes")).to_contain_text(
        "You ran this exact table and spec before: opening it again costs nothing"
    )
    expect(page.locator("#pv-resumes-link")).to_have_attribute("href", batch_path)
    page.click("#run-button")
    page.wait_for_url(f"**{batch_path}")
    assert upstream_runs(emulator) - before == 3
    page.goto(server.url + "/batches")
    expect(page.locator("#batches li.batch")).to_have_count(1)
    assert not errors, errors


def test_an_invalid_output_name_is_shown_next_to_it_and_nothing_is_lost(
    server: BackgroundServer, context: BrowserContext
) -> None:
    page = context.new_page()
    sign_in_at_batches(page, server.url)
    drop_file(page, "nordic.csv", UTF16)  # UTF-16 bytes survive the trip
    expect(page.locator("#file-info")).to_contain_text("3 rows × 2 columns")
    expect(page.locator("#columns label")).to_have_text(["company", "country"])

    page.fill("#metadata", "{not json")  # refused here, next to the field, before any request
    page.click("#preview-button")
    expect(page.locator("#err-metadata")).to_contain_text("is not valid JSON")
    page.fill("#metadata", '{"team": "e2e"}')

    page.click("#add-output")
    rows = page.locator("#outputs .output-row")
    expect(rows).to_have_count(2)
    rows.nth(0).locator('[data-field="name"]').fill("ceo")
    rows.nth(0).locator('[data-field="description"]').fill("Name of the current CEO")
    rows.nth(1).locator('[data-field="name"]').fill("2nd-founder")
    rows.nth(1).locator('[data-field="type"]').select_option("integer")
    rows.nth(1).locator('[data-field="description"]').fill("Year founded")
    page.check('input[name="input_mode"][value="template"]')
    page.click('#template-columns button[data-column="company"]')
    expect(page.locator("#template")).to_have_value("{company}")
    page.locator("#template").press("End")
    page.locator("#template").type(" in {country}: who runs it?")
    page.click("#preview-button")

    bad = rows.nth(1).locator('[data-field="name"]')
    expect(rows.nth(1).locator(".out-error")).to_contain_text("name: must be a simple identifier")
    expect(bad).to_have_attribute("aria-invalid", "true")
    expect(rows.nth(0).locator(".out-error")).to_be_empty()
    expect(page.locator("#form-error")).to_be_hidden()  # placed at its field, not at the top
    expect(page.locator("#preview")).to_be_hidden()
    # Nothing lost: every value is still there.
    expect(bad).to_have_value("2nd-founder")
    expect(rows.nth(1).locator('[data-field="type"]')).to_have_value("integer")
    expect(rows.nth(0).locator('[data-field="name"]')).to_have_value("ceo")
    expect(page.locator("#template")).to_have_value("{company} in {country}: who runs it?")
    expect(page.locator("#metadata")).to_have_value('{"team": "e2e"}')

    bad.fill("founded")
    page.click("#preview-button")
    expect(page.locator("#pv-samples pre").first).to_contain_text('"input": "Æther Labs in NO: who runs it?"')
    expect(page.locator("#pv-total")).to_have_text("$0.03")  # 3 rows x base's $0.01
    hostile = page.locator("#pv-samples details.sample").nth(2)
    expect(hostile.locator("summary")).to_contain_text('<img src=x onerror="window.__xss=1"> · <b>bold</b>')
    hostile.locator("summary").click()
    expect(hostile.locator("pre")).to_contain_text("<b>bold</b>: who runs it?")
    assert page.locator("#pv-samples img, #pv-samples b").count() == 0
    assert page.evaluate("window.__xss") is None


def test_list_and_preview_fit_a_phone_and_a_desktop_in_light_and_dark(
    server: BackgroundServer, browser: Browser
) -> None:
    """Screenshots (/work/notes/shots/batches-*.png) of the list and of the preview at 1280 and 390 px."""
    body: dict[str, Any] = {
        "spec": {
            "processor": "core",
            "outputs": [{"name": "ceo", "type": "string", "description": "Name of the current CEO"}],
            "columns": ["company"],
        }
    }
    tables = {
        "leads-q3-with-a-rather-long-file-name-from-the-sales-team.csv": (
            "company\n" + "".join(f"Company {i}\n" for i in range(40)),
            {"emulator": "duration=60000"},  # ten minutes at this time scale: still going
        ),
        "suppliers.csv": ("company\nAcme\nGlobex [emulator:fail]\nInitech\n", None),
    }
    with httpx.Client(base_url=server.url, headers={"x-api-key": KEY}, timeout=30) as api:
        for name, (content, metadata) in tables.items():
            spec = {**body["spec"], **({"metadata": metadata} if metadata else {})}
            check = api.post("/api/batches/check", json={"name": name, "content": content, "spec": spec}).json()
            made = api.post(
                "/api/batches",
                json={"name": name, "content": content, "spec": spec, "confirm_cost_usd": check["cost_usd"]},
            )
            assert made.status_code == 201, made.text
    for size, viewport in (("1280", DESKTOP), ("390", PHONE)):
        for scheme in ("light", "dark"):
            ctx = browser.new_context(viewport=viewport, color_scheme=scheme)
            page = ctx.new_page()
            sign_in_at_batches(page, server.url)
            items = page.locator("#batches li.batch")
            expect(items).to_have_count(2)
            expect(items.nth(0).locator(".badge")).to_contain_text("completed", timeout=60_000)  # suppliers.csv
            expect(items.nth(0)).to_contain_text("1 failed")
            expect(items.nth(1).locator(".badge")).to_have_text("running", timeout=30_000)
            assert no_sideways_scroll(page), (size, scheme, "list")
            assert low_contrast(page) == [], (size, scheme, "list")
            if scheme == "light":
                screenshot(page, f"list-{size}")
            pick_file(page, "companies.csv", NASTY)
            expect(page.locator("#file-info")).to_contain_text("3 rows")
            fill_spec(page, processor="core", columns=["company", "city"], metadata='{"project": "leads-q3"}')
            page.click("#add-output")
            page.locator('#outputs .output-row >> nth=1 >> [data-field="name"]').fill("founded")
            page.locator('#outputs .output-row >> nth=1 >> [data-field="type"]').select_option("integer")
            page.locator('#outputs .output-row >> nth=1 >> [data-field="description"]').fill("Year founded")
            page.click("#preview-button")
            expect(page.locator("#pv-total")).to_have_text("$0.075")
            assert no_sideways_scroll(page), (size, scheme, "preview")
            assert low_contrast(page) == [], (size, scheme, "preview")
            screenshot(page, f"preview-{size}-{scheme}")
            ctx.close()


def test_the_file_is_chosen_from_the_keyboard_and_one_over_the_upload_limit_is_never_sent(
    tmp_path: Path, browser: Browser, emulator: BackgroundEmulator
) -> None:
    # The upload limit the page is told is what the guard enforces: never below the body limit, so both are set.
    settings = Settings(
        db_path=tmp_path / "small.db",
        parallel_base_url=emulator.url,
        secret_key=SECRET,
        max_upload_bytes=200_000,
        max_body_bytes=100_000,
    )
    app = create_app(settings, demo=True)
    srv = BackgroundServer(app, before_shutdown=lambda: begin_shutdown(app)).start()
    ctx = browser.new_context(viewport=PHONE)
    try:
        page = ctx.new_page()
        # Playwright turns file-chooser interception on without waiting for it: keep it on from the start,
        # or a press may race it and open a real dialog, which blocks every later one.
        page.on("filechooser", lambda _: None)
        sign_in_at_batches(page, srv.url)
        checks: list[str] = []
        page.on("request", lambda req: checks.append(req.url) if "/api/batches" in req.url else None)
        big = b"company\n" + b"".join(b"Company number %06d\n" % i for i in range(10_000))  # 210 KB
        page.focus("#choose-file")
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files({"name": "big.csv", "mimeType": "text/csv", "buffer": big})
        expect(page.locator("#file-error")).to_contain_text("Split it into several batches")
        expect(page.locator("#spec-form")).to_be_hidden()
        assert checks == []  # refused here: never uploaded
        page.focus("#choose-file")
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Space")
        chooser.value.set_files({"name": "small.csv", "mimeType": "text/csv", "buffer": NASTY})
        expect(page.locator("#file-info")).to_contain_text("3 rows × 3 columns")
        expect(page.locator("#file-error")).to_be_empty()
        assert len(checks) == 1
    finally:
        ctx.close()
        srv.stop()
