"""The engine process's collector settings (engine/heap.py) and where they are applied."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from taskdeck import cli
from taskdeck.engine import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_sets_the_thresholds_and_freezes_what_lives_now(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    heap.tune()
    assert gc.get_threshold() == heap.THRESHOLDS
    assert gc.get_freeze_count() > 0
    # Young collections are rarer than CPython's default by far (the point of the setting).
    assert heap.THRESHOLDS[0] >= 10 * 700


def test_the_worker_command_tunes_the_collector_before_running(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []

    async def fake_run_worker(settings: object) -> None:
        seen.append(gc.get_threshold())

    gc.set_threshold(700, 10, 10)
    monkeypatch.setattr(cli, "_run_worker", fake_run_worker)
    result = CliRunner().invoke(cli.app, ["worker", "--db", "unused.db"])
    assert result.exit_code == 0, result.output
    assert seen == [heap.THRESHOLDS]


def test_the_serve_command_tunes_the_collector_before_serving(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, int, int]] = []
    import taskdeck.web.app as web_app

    monkeypatch.setattr(web_app, "create_app", lambda *a, **k: object())
    monkeypatch.setattr(web_app, "serve_app", lambda *a, **k: seen.append(gc.get_threshold()))
    gc.set_threshold(700, 10, 10)
    result = CliRunner().invoke(cli.app, ["serve", "--db", "unused.db"])
    assert result.exit_code == 0, result.output
    assert seen == [heap.THRESHOLDS]
