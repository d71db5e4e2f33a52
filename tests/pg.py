"""A PostgreSQL for the tests: never skipped.

``TASKDECK_TEST_DATABASE_URL`` when set; else the server on 127.0.0.1:5432 (database ``test``) when one
answers; else a throwaway cluster started with ``initdb``/``pg_ctl`` in a temporary folder (``make test``
installs PostgreSQL with apt when it is missing). A run that can get none of them fails, saying why.

Each test gets its own schema (``search_path`` in the URL), dropped afterwards, so tests never see
each other's rows and can run in parallel on one database.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg

__all__ = ["database_url", "fresh_schema"]

LOCAL = "postgresql://postgres@127.0.0.1:5432/test"
_cluster_url: str | None = None


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise RuntimeError(
            f"PostgreSQL is needed by the tests and {name} was not found: install it (apt-get install postgresql) "
            "or set TASKDECK_TEST_DATABASE_URL to a database the tests may use"
        )
    return found


def _start_cluster() -> str:
    """A private cluster in a temporary folder, on a free port, stopped when the tests end."""
    folder = tempfile.mkdtemp(prefix="taskdeck-pg-")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # PostgreSQL refuses to run as root: then run it as an unprivileged user owning the folder.
    as_user: list[str] = []
    if os.geteuid() == 0:
        name = "postgres" if _user_exists("postgres") else "nobody"
        shutil.chown(folder, name)
        as_user = ["runuser", "-u", name, "--"]

    def run(*args: str) -> None:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr[-2000:]}")

    run(_bin("initdb"), "-D", folder, "-A", "trust", "-U", "postgres")
    run(_bin("pg_ctl"), "-D", folder, "-o", f"-p {port} -k {folder} -h 127.0.0.1", "-l", f"{folder}/log", "-w", "start")
    atexit.register(
        lambda: subprocess.run([*as_user, _bin("pg_ctl"), "-D", folder, "-m", "immediate", "stop"], check=False)
    )
    url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while not _answers(url):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the throwaway PostgreSQL in {folder} did not start: see {folder}/log")
        time.sleep(0.2)
    return url


def database_url() -> str:
    """The PostgreSQL the tests use (see the module's docstring)."""
    global _cluster_url
    given = os.environ.get("TASKDECK_TEST_DATABASE_URL")
    if given:
        if not _answers(given):
            raise RuntimeError(f"TASKDECK_TEST_DATABASE_URL is set but does not answer: {given}")
        return given
    if _answers(LOCAL):
        return LOCAL
    if _cluster_url is None:
        _cluster_url = _start_cluster()
    return _cluster_url


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose connections work in a new, empty schema; the schema is dropped afterwards."""
    base = database_url()
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}".encode())
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE".encode())
