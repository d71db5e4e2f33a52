"""UI benchmark: page weights and time to first paint in a real browser (Debian's chromium).

Builds a database with N ended tasks (default 1,000) and one task with M events (default 5,000),
serves it with ``taskdeck serve`` in its own process, signs in, and for each page records:

* its weight: every response it loads (document, scripts, styles, JSON), bytes on the wire
  (compressed where the server compresses) and decoded, first visit (cold cache) and again (warm);
* over R fresh navigations: first contentful paint (FCP, from the browser's paint timing) and,
  for the task page, the time until all M reasoning messages are in the DOM.

Baseline measured in the same run: the FCP of the smallest page the server renders (its 404 page),
so the ratio says what the data costs beyond serving any page at all.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, Request, sync_playwright

from bench.common import start_emulator, table, write_result
from bench.web import KEY, SECRET, _pct, _serve, _stop
from taskdeck.engine.intake import key_record
from taskdeck.models import Origin, Task, TaskStatus
from taskdeck.store import AppendEvent, InsertTask, SqliteStore
from taskdeck.vault import KeyVault

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _build(db: Path, tasks: int, events: int) -> str:
    vault = KeyVault(SECRET)
    owner = vault.owner(KEY)
    store = SqliteStore(db)
    store.apply([key_record(vault, KEY)])
    now = time.time()
    rows = [
        Task(
            id=f"tsk_{i:024x}",
            owner=owner,
            processor="core",
            request={"input": f"Company number {i}: find its CEO and revenue", "processor": "core"},
            status=TaskStatus.COMPLETED,
            created_at=now - tasks + i,
            run_id=f"trun_{i:032x}",
            output={"type": "json", "content": {"ceo": f"Person {i}", "revenue": i * 1000}, "basis": []},
            cost_usd=0.025,
            submitted_at=now - tasks + i,
            completed_at=now - tasks + i + 40,
        )
        for i in range(tasks)
    ]
    store.apply([InsertTask(t) for t in rows])
    big = rows[-1].id
    message = (
        '{"type":"task_run.progress_msg.search","message":"Searching for filings about company %d","timestamp":"%s"}'
    )
    store.apply(
        [
            AppendEvent(
                big,
                "task_run.progress_msg.search",
                Origin.UPSTREAM,
                message % (i, "2026-11-28T00:00:00Z"),
                now,
                None,
                f"k{i}",
            )
            for i in range(events)
        ]
    )
    store.close()
    return big


def _weigh(page: Page, url: str) -> dict[str, int]:
    requests: list[Request] = []

    def seen(request: Request) -> None:
        requests.append(request)

    page.on("request", seen)
    page.goto(url, wait_until="load")
    page.remove_listener("request", seen)
    wire = decoded = 0
    for req in requests:
        response = req.response()
        if response is None:
            continue
        sizes = req.sizes()
        wire += sizes["responseBodySize"] + sizes["responseHeadersSize"]
        decoded += len(response.body()) if response.status == 200 else 0
    return {"requests": len(requests), "wire_bytes": wire, "decoded_bytes": decoded}


def _fcp(page: Page, url: str, until: str | None = None) -> tuple[float, float | None]:
    page.goto(url)
    page.wait_for_function("() => performance.getEntriesByName('first-contentful-paint').length > 0")
    fcp = float(page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"))
    done = None
    if until is not None:
        page.wait_for_function(until, timeout=120_000)
        done = float(page.evaluate("performance.now()"))
    return fcp, done


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-ui-"))
    big = _build(tmp / "taskdeck.db", args.tasks, args.events)
    emu = start_emulator()
    proc, url = _serve(tmp / "taskdeck.db", emu.url, tmp / "serve.log")
    result: dict[str, Any] = {"tasks": args.tasks, "events_on_one_task": args.events, "repeat": args.repeat}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(url)
            page.fill("#api-key", KEY)
            page.click("#key-form button[type=submit]")
            page.wait_for_selector("#key-mask:not(:empty)")
            pages = {"home": "/", "task_5000_events": f"/task/{big}", "compare": f"/compare?id={big}&id=tsk_{0:024x}"}
            weights: dict[str, Any] = {}
            for name, path in pages.items():
                cold_context = browser.new_context(storage_state=context.storage_state())
                cold = _weigh(cold_context.new_page(), url + path)
                cold_context.close()
                warm = _weigh(page, url + path)
                weights[name] = {"cold": cold, "warm": warm}
            result["weights"] = weights
            all_there = f"() => document.querySelectorAll('#timeline li').length === {args.events}"
            task_fcp, task_done, base_fcp, home_fcp = [], [], [], []
            for _ in range(args.repeat):
                fcp, done = _fcp(page, url + f"/task/{big}", all_there)
                task_fcp.append(fcp)
                task_done.append(done or 0.0)
                base_fcp.append(_fcp(page, url + "/no-such-page")[0])
                home_fcp.append(_fcp(page, url + "/")[0])
            browser.close()
    finally:
        _stop(proc)
        emu.stop()
    result.update(
        task_fcp_p50_ms=round(statistics.median(task_fcp), 1),
        task_fcp_p95_ms=round(_pct(task_fcp, 0.95), 1),
        task_all_events_p95_ms=round(_pct(task_done, 0.95), 1),
        home_fcp_p95_ms=round(_pct(home_fcp, 0.95), 1),
        baseline_404_fcp_p95_ms=round(_pct(base_fcp, 0.95), 1),
    )
    result["task_fcp_ratio_to_baseline"] = round(
        result["task_fcp_p95_ms"] / max(result["baseline_404_fcp_p95_ms"], 0.1), 2
    )
    rows: list[tuple[str, Any]] = []
    for name, w in weights.items():
        rows.append(
            (
                f"{name} weight (cold / warm)",
                f"{w['cold']['wire_bytes']:,} B on the wire ({w['cold']['decoded_bytes']:,} B decoded, "
                f"{w['cold']['requests']} requests) / {w['warm']['wire_bytes']:,} B",
            )
        )
    rows += [
        (
            f"task page ({args.events:,} events) FCP p50 / p95",
            f"{result['task_fcp_p50_ms']} / {result['task_fcp_p95_ms']} ms",
        ),
        ("task page: all events in the DOM, p95", f"{result['task_all_events_p95_ms']} ms"),
        ("home FCP p95", f"{result['home_fcp_p95_ms']} ms"),
        ("baseline: 404 page FCP p95", f"{result['baseline_404_fcp_p95_ms']} ms"),
        ("task FCP p95 / baseline", result["task_fcp_ratio_to_baseline"]),
    ]
    print(table(f"UI: page weight and first paint ({args.repeat} navigations each)", rows))
    print(f"wrote {write_result('ui', result)}")
    return result
