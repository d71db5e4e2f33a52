"""Proof of a sibling's death on this machine: only what is certain counts (engine/machine.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from taskdeck.engine.machine import holder_name, node_of, pid_gone, this_node


def test_a_holder_name_carries_this_machines_node() -> None:
    holder = holder_name()
    assert holder.split(":")[1] == str(os.getpid())
    assert node_of(holder) == this_node() is not None  # Linux with /proc: the node is known
    assert holder_name() != holder  # a fresh token each time


def test_older_or_foreign_holder_names_have_no_node() -> None:
    assert node_of("host:123:abcd1234") is None  # the shape before nodes
    assert node_of("host:123:-:abcd1234") is None  # a process that could not know its node
    assert node_of("worker-a") is None


def test_only_a_pid_that_is_gone_or_a_zombie_counts_as_dead() -> None:
    assert not pid_gone(os.getpid())
    assert not pid_gone(1)  # alive (whoever it belongs to)
    assert not pid_gone(0)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, not yet reaped: a zombie
    assert pid_gone(child.pid)
    child.wait()  # reaped: no such process at all
    assert pid_gone(child.pid)


def test_local_takeover_can_be_turned_off(tmp_path: Path) -> None:
    from taskdeck.config import Settings
    from taskdeck.engine import Engine

    on = Engine(Settings(db_path=tmp_path / "a.db", secret_key="s"))
    off = Engine(Settings(db_path=tmp_path / "b.db", secret_key="s", local_takeover=False))
    assert on.node == this_node() and off.node is None
    on.store.close()
    off.store.close()
