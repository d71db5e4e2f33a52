"""Emulator settings from the environment and the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from taskdeck.cli import app
from taskdeck.emulator.settings import EmulatorSettings


def test_from_env() -> None:
    s = EmulatorSettings.from_env(
        {"TASKDECK_EMULATOR_TIME_SCALE": "0.5", "TASKDECK_EMULATOR_API_KEYS": "a, b", "TASKDECK_EMULATOR_PORT": "9"}
    )
    assert s.time_scale == 0.5 and s.api_keys == ("a", "b") and s.port == 9


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="TASKDECK_EMULATOR_PORT"):
        EmulatorSettings.from_env({"TASKDECK_EMULATOR_PORT": "eighty"})


@pytest.mark.parametrize(
    ("changes", "needle"),
    [({"time_scale": 0}, "time_scale"), ({"rate_limit_per_minute": 0}, "rate_limit"), ({"faults": "fail"}, "fail")],
)
def test_validate(changes: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        EmulatorSettings().with_overrides(**changes).validate()


def test_describe_lists_every_setting() -> None:
    names = [row[0] for row in EmulatorSettings.describe()]
    assert "TASKDECK_EMULATOR_TIME_SCALE" in names and "TASKDECK_EMULATOR_FAULTS" in names


def test_cli_help_explains_options() -> None:
    result = CliRunner().invoke(app, ["emulator", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for option in ("--time-scale", "--stream-lifetime", "--seed", "--api-key", "--rate-limit", "--faults"):
        assert option in result.output


def test_cli_rejects_bad_settings_with_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["emulator", "--time-scale", "0"])
    assert result.exit_code == 2
    assert "time_scale must be greater than 0" in result.output
