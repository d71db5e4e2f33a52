"""The README's promises stay true: its configuration table and its two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taskdeck.config import Settings
from taskdeck.emulator.settings import EmulatorSettings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("table", [Settings, EmulatorSettings])
def test_readme_lists_every_setting_with_its_default(table: type[Settings] | type[EmulatorSettings]) -> None:
    readme = (ROOT / "README.md").read_text()
    for env, default, _ in table.describe():
        row = re.search(rf"^\| `{env}` \| (.+?) \|", readme, re.M)
        assert row, f"README's configuration table misses {env}"
        assert (f"`{default}`" if default else "(empty)") == row.group(1)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make demo" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()
