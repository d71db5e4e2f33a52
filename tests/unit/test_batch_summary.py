"""A batch's header: rows waiting, queued and running (Parallel's group counts), done and failed; cost."""

from __future__ import annotations

from typing import Any

import pytest

from taskdeck.engine.batches import group_run_counts
from taskdeck.models import Batch, BatchStatus
from taskdeck.web.batchviews import batch_summary


def batch(upstream: dict[str, int] | None, status: BatchStatus = BatchStatus.RUNNING) -> Batch:
    return Batch(
        id="bat_" + "0" * 24,
        owner="o",
        name="t.csv",
        status=status,
        spec={"processor": "lite"},
        columns=["company"],
        resume_key="k",
        row_count=100,
        created_at=1000.0,
        upstream_counts=upstream,
    )


# 10 rows not yet added, 60 added and not ended, 25 completed, 5 failed.
COUNTS = {"pending": 10, "queued": 60, "completed": 25, "failed": 5}


def test_the_groups_counts_tell_queued_rows_from_running_ones() -> None:
    summary = batch_summary(batch({"queued": 45, "running": 15, "completed": 25, "failed": 5}), COUNTS, 0.45, 1060.0)
    assert (summary["waiting"], summary["in_progress"], summary["running"], summary["queued"]) == (10, 60, 15, 45)
    assert (summary["done"], summary["failed"], summary["percent"]) == (25, 5, 30.0)


def test_before_parallel_reported_counts_every_added_row_counts_as_running() -> None:
    summary = batch_summary(batch(None), COUNTS, 0.45, 1060.0)
    assert (summary["running"], summary["queued"], summary["upstream_counts"]) == (60, 0, None)


def test_stale_counts_never_show_more_running_than_rows_in_progress() -> None:
    # Reported before the last 50 runs ended here: the running count is capped by what is in progress.
    summary = batch_summary(batch({"running": 90}), COUNTS, 0.45, 1060.0)
    assert (summary["running"], summary["queued"]) == (60, 0)


def test_cost_so_far_is_what_was_created_and_the_total_is_rows_times_price() -> None:
    summary = batch_summary(batch(None), COUNTS, 0.45, 1060.0)
    assert summary["cost_usd"] == 0.45
    assert summary["cost_usd_all_rows"] == pytest.approx(100 * summary["usd_per_row"])


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({"task_run_status_counts": {"queued": 2, "running": 3}}, {"queued": 2, "running": 3}),
        ({"task_run_status_counts": {"running": True, "queued": -1, "completed": "7", "failed": 1}}, {"failed": 1}),
        ({"task_run_status_counts": None}, None),
        ({"num_task_runs": 3}, None),
        ("not a status", None),
        (None, None),
    ],
)
def test_group_counts_from_upstream_keep_only_plain_counts(status: Any, expected: dict[str, int] | None) -> None:
    assert group_run_counts(status) == expected


def test_enrich_and_watch_show_the_same_progress_line_and_json() -> None:
    import io
    import json

    import taskdeck.cli  # noqa: F401  (the commands' modules load through the CLI)
    from taskdeck.batchcommands import show_progress

    summary = batch_summary(batch({"queued": 45, "running": 15}), COUNTS, 0.45, 1060.0)
    out = io.StringIO()
    show_progress(summary, as_json=True, stream=out)
    line = json.loads(out.getvalue())
    assert (line["running"], line["queued"], line["waiting"], line["row_count"]) == (15, 45, 10, 100)
    out = io.StringIO()
    show_progress(summary, as_json=False, stream=out)
    assert "rows 30/100: 25 done, 5 failed, 15 running, 55 queued" in out.getvalue()
    assert out.getvalue().endswith("\n")  # not a terminal: one line per poll, no carriage return
