"""The CLI's surface: help, and `submit` storing a task for a worker (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from taskdeck.cli import app
from taskdeck.store import SqliteStore


def test_help_lists_the_commands_and_the_default() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for command in ("serve", "worker", "submit", "emulator"):
        assert command in result.output
    assert "With no command" in result.output


def test_submit_stores_a_pending_task_and_prints_json(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    env = {"TASKDECK_SECRET_KEY": "cli-secret", "PARALLEL_API_KEY": "cli-key-1"}
    result = CliRunner().invoke(
        app,
        ["submit", "--input", "Who founded Parallel?", "--processor", "lite", "--output", "auto", "--db", str(db)],
        env=env,
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["status"] == "pending" and printed["processor"] == "lite"
    store = SqliteStore(db)
    task = store.get_task(printed["id"])
    assert task is not None and task.request["task_spec"] == {"output_schema": {"type": "auto"}}
    store.close()


def test_submit_refuses_bad_input_naming_the_field(tmp_path: Path) -> None:
    env = {"TASKDECK_SECRET_KEY": "cli-secret", "PARALLEL_API_KEY": "cli-key-1"}
    result = CliRunner().invoke(
        app, ["submit", "--input", "x", "--processor", "gigantic", "--db", str(tmp_path / "t.db")], env=env
    )
    assert result.exit_code == 2 and "processor" in result.output
    no_key = CliRunner().invoke(
        app, ["submit", "--input", "x", "--db", str(tmp_path / "t.db")], env={"PARALLEL_API_KEY": ""}
    )
    assert no_key.exit_code == 2 and "API key" in no_key.output


def test_submit_takes_strict_json_or_plain_text(tmp_path: Path) -> None:
    env = {"TASKDECK_SECRET_KEY": "cli-secret", "PARALLEL_API_KEY": "cli-key-1"}
    db = str(tmp_path / "t.db")
    not_strict = CliRunner().invoke(
        app, ["submit", "--input", '{"n": NaN}', "--processor", "lite", "--db", db], env=env
    )
    assert not_strict.exit_code == 2 and "NaN" in not_strict.output
    text = CliRunner().invoke(app, ["submit", "--input", "{not json} but a question", "--db", db], env=env)
    assert text.exit_code == 0, text.output
    store = SqliteStore(tmp_path / "t.db")
    task = store.get_task(json.loads(text.output)["id"])
    assert task is not None and task.input == "{not json} but a question"
    store.close()
