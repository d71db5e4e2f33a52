"""The boundaries ARCHITECTURE.md promises: who may reach what (read from the source, so they stay true)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import taskdeck

SRC = Path(taskdeck.__file__).parent
# The one place the web layer is composed from the engine's parts (sessions keep their own table).
COMPOSITION = SRC / "web" / "app.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_web_layer_reads_through_the_catalog_not_the_engines_store() -> None:
    reach = re.compile(r"(?<![\w.])engine\.(store|db|vault|upstream|writer|feed)\b")
    offenders = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in sorted((SRC / "web").glob("*.py"))
        if path != COMPOSITION
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if reach.search(line)
    ]
    assert offenders == []


def test_the_cli_does_not_reach_into_a_running_engine() -> None:
    assert re.search(r"(?<![\w.])engine\.(store|db|vault|upstream|writer|feed)\b", (SRC / "cli.py").read_text()) is None


def test_a_follower_gets_ports_not_the_engine() -> None:
    imports = _imports(SRC / "engine" / "follower.py") | _imports(SRC / "engine" / "submitter.py")
    assert "taskdeck.engine.engine" not in imports
    assert "taskdeck.store.sqlite" not in imports and "taskdeck.store.postgres" not in imports


def test_the_upstream_client_does_not_import_the_engine() -> None:
    for path in (SRC / "upstream").glob("*.py"):
        assert not any(m.startswith("taskdeck.engine") for m in _imports(path)), path.name


def test_stores_are_opened_from_the_url_in_one_place() -> None:
    constructed = [
        f"{path.relative_to(SRC)}"
        for path in SRC.rglob("*.py")
        if re.search(r"\b(SqliteStore|PostgresStore)\(", path.read_text()) and path.parent.name != "store"
    ]
    assert constructed == []
