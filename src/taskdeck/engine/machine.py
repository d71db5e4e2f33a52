"""The machine a process runs on, and proof that a sibling on the same machine is dead.

A process's lease holder name carries a *node*: a digest of the kernel's boot id and the process's
pid namespace. Two processes with the same node see the same pids, so one can prove the other's
death by its pid alone (gone, or a zombie): its streams closed with it, and its runs may be followed
again at once rather than after their leases expire (a ``systemctl restart`` or a crash under a
supervisor then costs a second, not the lease TTL). Different containers or machines never share a
node, and where the proof is impossible (no ``/proc``) there is no node: leases expire as before.
A pid reused by an unrelated process only makes the dead one look alive, which is the safe mistake.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
from functools import cache
from pathlib import Path

__all__ = ["holder_name", "node_of", "pid_gone", "this_node"]


@cache
def this_node() -> str | None:
    """This kernel boot and pid namespace as 12 hex digits; None where they cannot be known."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot}|{pid_ns}".encode()).hexdigest()[:12]


def holder_name() -> str:
    """A new lease holder name: ``host:pid:node:token`` (``-`` for the node where none is known)."""
    return f"{socket.gethostname()}:{os.getpid()}:{this_node() or '-'}:{secrets.token_hex(4)}"


def node_of(holder: str) -> str | None:
    """The node of a holder name made by :func:`holder_name`; None for any other shape."""
    parts = holder.split(":")
    if len(parts) != 4 or parts[2] == "-":
        return None
    return parts[2]


def pid_gone(pid: int) -> bool:
    """Whether no live process has this pid here (none at all, or only a zombie awaiting its parent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists (another user's)
    try:
        # "pid (name) S ..." — the name may hold spaces and parentheses: the state follows the last ")".
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")
