"""``taskdeck enrich`` against Parallel's own CLI (``parallel-cli enrich run``), side by side.

Both tools enrich the same generated CSV of N companies (``--rows``, default 1,000 and 10,000) with one
output column (``ceo``) on the ``lite`` processor, one after the other (never at once), against the same
emulator process started for that N (``--time-scale 0.01``: lite runs last a few seconds; a create limit
of 1,000,000 a minute, so the emulator's budget never binds). ``--fail-pct`` of the rows (2 % by default)
carry ``[emulator:fail]`` in their company cell, which makes their runs fail.

Every tool and scenario gets a fresh API key, so the emulator's per-key counters
(``GET /_emulator/stats`` → ``keys[sha256(key)[:12]]``: every request it served for the key, by route,
and the runs created) belong to exactly one command. Per tool and N:

- **wall time**: from starting the command to its exit (its output file written);
- **peak RSS**: the larger of the process tree's summed RSS, polled every 50 ms with psutil, and the
  kernel's ``ru_maxrss`` of the command's largest process, reported by a ~10 MB wrapper process that starts
  the command (``getrusage(RUSAGE_CHILDREN)``; see ``WRAPPER``);
- **upstream requests per row** (all requests the emulator served for the key / N) and **runs created**;
- from the output file: **rows kept** (completed and failed rows present, over N; each row is recognised
  by its unique company name), **rows in input order** (the rows present keep the input's order),
  **aligned** (output row i is input row i, so the result joins back by position), **basis kept**
  (confidence, citations or reasoning columns present; ours runs with ``--basis``), and the **exit code**;
- **interrupted, then rerun**: the command is started again under a new key, sent one SIGINT (to its
  process group, as Ctrl-C does) as soon as the emulator has created N/2 runs for the key, then the exact
  same command is run again to its end; the **extra runs** are the key's runs created beyond N.

Ours: ``python -m taskdeck enrich in.csv -o out.csv --processor lite --output "ceo: …" --basis --json
--db <fresh SQLite file> --base-url <emulator>`` with ``PARALLEL_API_KEY`` and ``TASKDECK_SECRET_KEY``
(and no other ``TASKDECK_*`` variable: ``TASKDECK_URL`` would send the batch to a server). Its own
request budget is left at the product default (2,000 requests a minute per key).

The peer: ``parallel-cli enrich run --source-type csv …`` from ``parallel-web-tools==0.9.4``, installed on
first use into ``bench/.peer-venv`` (``--peer-cli`` uses another copy). It is kept off the internet:
``PARALLEL_API_URL``/``PARALLEL_BASE_URL`` name the emulator and the key comes from ``PARALLEL_API_KEY``
(so no stored login or device flow is consulted), ``HOME`` is an empty directory holding only
``.parallel-cli/config.json`` with ``auto_update_check: false`` (its updater only runs in the frozen
standalone build anyway), the account/platform URLs point at a closed local port, every proxy variable
points at that closed port with ``NO_PROXY`` for 127.0.0.1 only (any other host fails at once instead of
leaving the machine), and it runs in an empty directory (it loads ``.env.local`` from its cwd).

What the peer does (0.9.4, from its source and seen at 100 rows): it creates a task group, adds the rows
100 per ``add_runs`` request (ours: 1,000), polls the group every 2 s, then reads every run once from the
group's runs stream; failed rows are left out of the output without a word and it exits 0; its output has
only the ``--source-columns`` plus ``batch_id`` and ``insertion_timestamp``, no basis. On SIGINT click prints
``Aborted!`` and it exits 1; the same command again makes a new group and pays for every row again.

Bars shown: requests per row ≤ the peer's; rows kept 100 %; extra runs after an interrupted rerun 0; our
peak RSS at the largest N within 1.5× of ours at the smallest.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.common import start_emulator, table, write_result
from taskdeck.emulator.metrics import key_label

PEER_PACKAGE = "parallel-web-tools"
PEER_VERSION = "0.9.4"
PEER_VENV = Path(__file__).parent / ".peer-venv"
FAIL_MARKER = "[emulator:fail]"
CLOSED = "http://127.0.0.1:9"  # nothing listens on the discard port: a request there fails at once
OUTPUT_NAME, OUTPUT_DESCRIPTION = "ceo", "name of the CEO"
BASIS_WORDS = ("confidence", "citation", "reasoning", "basis")
TOOLS = ("ours", "peer")


# -- the peer's installation ----------------------------------------------------------------------------------------
def ensure_peer(venv: Path = PEER_VENV) -> Path:
    """``bench/.peer-venv/bin/parallel-cli``, creating the venv and installing the pinned version when missing."""
    cli, python = venv / "bin" / "parallel-cli", venv / "bin" / "python"
    if cli.exists() and _installed_version(python) == PEER_VERSION:
        return cli
    if not python.exists():
        print(f"creating {venv} for the peer ({PEER_PACKAGE}=={PEER_VERSION})", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            f"{PEER_PACKAGE}=={PEER_VERSION}",
        ],
        check=True,
    )
    if not cli.exists():
        raise RuntimeError(f"{PEER_PACKAGE} installed but {cli} is missing")
    return cli


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run(
        [str(python), "-c", f"import importlib.metadata as m; print(m.version({PEER_PACKAGE!r}))"],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def _peer_version(cli: Path) -> str:
    return _installed_version(cli.parent / "python") or "unknown"


# -- input and commands ------------------------------------------------------------------------------------------
def make_csv(path: Path, rows: int, fail_pct: float) -> tuple[list[str], set[int]]:
    """N companies with unique names; about ``fail_pct`` % of them (spread evenly) ask the emulator to fail."""
    every = max(1, round(100 / fail_pct)) if fail_pct > 0 else 0
    names: list[str] = []
    fails: set[int] = set()
    for i in range(rows):
        name = f"Company {i:06d} Holdings"
        if every and i % every == every // 2:
            name += f" {FAIL_MARKER}"
            fails.add(i)
        names.append(name)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["company"])
        writer.writerows([n] for n in names)
    return names, fails


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    cwd: Path


def _base_env() -> dict[str, str]:
    """This process's environment without anything that would steer either tool elsewhere."""
    drop = ("PARALLEL_", "TASKDECK_", "_PARALLEL_")
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k.lower() not in proxies}


def ours_command(src: Path, out: Path, db: Path, emulator: str, key: str, processor: str, work: Path) -> Command:
    argv = [
        *(sys.executable, "-m", "taskdeck", "enrich", str(src), "-o", str(out)),
        *("--processor", processor, "--output", f"{OUTPUT_NAME}: {OUTPUT_DESCRIPTION}", "--basis", "--json"),
        *("--db", str(db), "--base-url", emulator),
    ]
    env = {**_base_env(), "PARALLEL_API_KEY": key, "TASKDECK_SECRET_KEY": "bench-enrich-secret"}
    return Command(argv, env, work)


def peer_command(cli: Path, src: Path, out: Path, emulator: str, key: str, processor: str, work: Path) -> Command:
    home = work / "home"
    (home / ".parallel-cli").mkdir(parents=True, exist_ok=True)
    (home / ".parallel-cli" / "config.json").write_text(json.dumps({"auto_update_check": False}))
    source_columns = [{"name": "company", "description": "The company's name"}]
    enriched_columns = [{"name": OUTPUT_NAME, "description": OUTPUT_DESCRIPTION, "type": "str"}]
    argv = [
        *(str(cli), "enrich", "run", "--source-type", "csv", "--source", str(src), "--target", str(out)),
        *("--source-columns", json.dumps(source_columns), "--enriched-columns", json.dumps(enriched_columns)),
        *("--processor", processor),
    ]
    env = {
        **_base_env(),
        "HOME": str(home),
        "PARALLEL_API_KEY": key,
        "PARALLEL_API_URL": emulator,
        "PARALLEL_BASE_URL": emulator,
        "PARALLEL_PLATFORM_URL": CLOSED,
        "PARALLEL_SERVICE_API_URL": CLOSED,
        **{name: CLOSED for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")},
        **{name: "127.0.0.1,localhost" for name in ("NO_PROXY", "no_proxy")},
    }
    return Command(argv, env, work)


# -- running one command ---------------------------------------------------------------------------------------------
# A small wrapper runs each command and reports its exit code, wall time and the kernel's peak RSS of its largest
# process (``RUSAGE_CHILDREN``). Measured from the bench process itself, ``ru_maxrss`` would be at least the
# bench's own size: Linux carries the RSS of the forking process into the child's high-water mark across exec.
# The wrapper is ~10 MB, so its floor is below either tool. SIGINT goes to the whole process group, as Ctrl-C
# does; the wrapper ignores it by a no-op handler (not SIG_IGN, which the tool would inherit).
WRAPPER = """
import json, os, resource, signal, sys, time
signal.signal(signal.SIGINT, lambda *_: None)
started = time.monotonic()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status = os.waitpid(pid, 0)
wall = time.monotonic() - started
code = os.waitstatus_to_exitcode(status)
report = {"exit_code": code if code >= 0 else 128 - code, "wall_seconds": wall,
          "max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}
with open(sys.argv[1], "w") as f:
    json.dump(report, f)
"""


@dataclass
class Execution:
    exit_code: int
    wall_seconds: float  # from starting the command to its exit
    peak_rss_tree_mb: float  # summed RSS of the command's process tree, polled every 50 ms
    max_rss_mb: float  # the kernel's peak RSS of the command's largest process
    sigint_sent_at_runs: int | None = None  # runs the emulator had created for the key when SIGINT went out
    seconds_to_exit_after_sigint: float | None = None

    @property
    def peak_rss_mb(self) -> float:
        return max(self.peak_rss_tree_mb, self.max_rss_mb)


def _tree_rss(wrapper: int) -> int:
    """Summed RSS of the wrapper's descendants (the command and anything it started)."""
    try:
        procs = psutil.Process(wrapper).children(recursive=True)
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _key_stats(client: httpx.Client, key: str) -> dict[str, Any]:
    keys: dict[str, Any] = client.get("/_emulator/stats", params={"runs": "false"}).json()["keys"]
    found: dict[str, Any] = keys.get(key_label(key), {})
    return found


def execute(
    cmd: Command,
    log: Path,
    *,
    timeout: float,
    emulator: httpx.Client | None = None,
    key: str = "",
    interrupt_at_runs: int | None = None,
) -> Execution:
    """Run ``cmd`` to its end; with ``interrupt_at_runs``, SIGINT its process group once the key has that many runs."""
    report = log.with_name(f"report-{uuid.uuid4().hex[:8]}.json")
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", WRAPPER, str(report), *cmd.argv],
            env=cmd.env,
            cwd=cmd.cwd,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    peak, sent_at, sent_time = 0, None, 0.0
    try:
        while proc.poll() is None:
            peak = max(peak, _tree_rss(proc.pid))
            if interrupt_at_runs is not None and sent_at is None and emulator is not None:
                runs = int(_key_stats(emulator, key).get("runs", 0))
                if runs >= interrupt_at_runs:
                    os.killpg(proc.pid, signal.SIGINT)
                    sent_at, sent_time = runs, time.monotonic()
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{cmd.argv[:4]} did not finish in {timeout:g} s (log: {log})")
            time.sleep(0.05)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"the measuring wrapper failed ({proc.returncode}); see {log}")
    found = json.loads(report.read_text())
    return Execution(
        exit_code=int(found["exit_code"]),
        wall_seconds=round(float(found["wall_seconds"]), 2),
        peak_rss_tree_mb=round(peak / 2**20, 1),
        max_rss_mb=round(int(found["max_rss_kb"]) / 1024, 1),  # KiB on Linux
        sigint_sent_at_runs=sent_at,
        seconds_to_exit_after_sigint=round(ended - sent_time, 2) if sent_at is not None else None,
    )


# -- reading the output ----------------------------------------------------------------------------------------------
def analyse(out: Path, names: list[str], fails: set[int]) -> dict[str, Any]:
    """What of the input survived into ``out``: rows (completed / failed), their order, basis columns."""
    if not out.exists():
        return {"written": False, "rows_out": 0, "kept": 0, "kept_completed": 0, "kept_failed": 0, "filled": 0,
                "in_order": False, "aligned": False, "basis": False, "columns": []}  # fmt: skip
    with out.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = list(reader)
    where = {name: i for i, name in enumerate(names)}
    positions = [where[r["company"]] for r in rows if r.get("company") in where]
    kept = set(positions)
    return {
        "written": True,
        "rows_out": len(rows),
        "kept": len(kept),
        "kept_completed": len(kept - fails),
        "kept_failed": len(kept & fails),
        "filled": sum(1 for r in rows if (r.get(OUTPUT_NAME) or "").strip()),
        "in_order": bool(positions) and positions == sorted(kept),
        "aligned": positions == list(range(len(names))),
        "basis": any(word in c.lower() for c in columns for word in BASIS_WORDS),
        "columns": columns,
    }


# -- one size ------------------------------------------------------------------------------------------------------
def measure(n: int, args: argparse.Namespace, peer_cli: Path, tmp: Path) -> dict[str, Any]:
    """Both tools at N rows: a plain run each, then an interrupted run and its rerun each."""
    work = tmp / f"n{n}"
    work.mkdir()
    src = work / "companies.csv"
    names, fails = make_csv(src, n, args.fail_pct)
    emu = start_emulator(
        "--time-scale", str(args.time_scale), "--rate-limit", str(args.rate_limit), log=work / "emulator.log"
    )
    result: dict[str, Any] = {"rows": n, "failing_rows": len(fails), "emulator": emu.url}
    try:
        with httpx.Client(base_url=emu.url, timeout=60) as client:
            for scenario in ("plain", "interrupted"):
                for tool in TOOLS:
                    result.setdefault(tool, {})[scenario] = _scenario(
                        tool, scenario, n, names, fails, src, work, emu.url, client, peer_cli, args
                    )
    finally:
        emu.stop()
    return result


def _scenario(
    tool: str,
    scenario: str,
    n: int,
    names: list[str],
    fails: set[int],
    src: Path,
    work: Path,
    emulator: str,
    client: httpx.Client,
    peer_cli: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    key = f"bench-enrich-{tool}-{scenario}-{n}-{uuid.uuid4().hex[:8]}"
    where = work / f"{tool}-{scenario}"
    where.mkdir()
    out, log = where / "out.csv", where / "command.log"
    if tool == "ours":
        cmd = ours_command(src, out, where / "taskdeck.db", emulator, key, args.processor, where)
    else:
        cmd = peer_command(peer_cli, src, out, emulator, key, args.processor, where)
    found: dict[str, Any] = {"key_label": key_label(key), "log": str(log)}
    if scenario == "plain":
        found["run"] = asdict(execute(cmd, log, timeout=args.timeout))
    else:
        first = execute(cmd, log, timeout=args.timeout, emulator=client, key=key, interrupt_at_runs=max(1, n // 2))
        found["interrupted"] = asdict(first)
        found["runs_after_interrupt"] = int(_key_stats(client, key).get("runs", 0))
        found["run"] = asdict(execute(cmd, log, timeout=args.timeout))
    stats = _key_stats(client, key)
    found["upstream"] = {k: stats.get(k) for k in ("requests", "creates", "runs", "by_route", "by_status")}
    found["output"] = analyse(out, names, fails)
    if scenario == "interrupted":
        found["extra_runs"] = int(stats.get("runs", 0)) - n
    return found


# -- the table -----------------------------------------------------------------------------------------------------
def _ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}" if peer else "—"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _line(ours: Any, peer: Any, ratio: str = "") -> str:
    return f"{ours!s:>20}  {peer!s:>20}  {ratio:>9}"


def rows_for(size: dict[str, Any]) -> list[tuple[str, Any]]:
    n = int(size["rows"])
    o, p = size["ours"], size["peer"]
    orun, prun = Execution(**o["plain"]["run"]), Execution(**p["plain"]["run"])
    oi, pi = o["interrupted"], p["interrupted"]

    def kept(a: dict[str, Any]) -> str:
        return f"{a['kept'] / n:.1%} ({a['kept_failed']}/{size['failing_rows']} failed)"

    def per_row(scenario: dict[str, Any]) -> float:
        return float(scenario["upstream"]["requests"]) / n

    def both(scenario: str, *path: str) -> tuple[Any, Any]:
        found = []
        for tool in (o, p):
            value = tool[scenario]
            for part in path:
                value = value[part]
            found.append(value)
        return found[0], found[1]

    def yes(scenario: str, what: str) -> tuple[str, str]:
        a, b = both(scenario, "output", what)
        return _yes(a), _yes(b)

    lines: list[tuple[str, tuple[Any, Any], str]] = [
        ("wall time, s", (orun.wall_seconds, prun.wall_seconds), _ratio(orun.wall_seconds, prun.wall_seconds)),
        ("peak RSS, MB", (orun.peak_rss_mb, prun.peak_rss_mb), _ratio(orun.peak_rss_mb, prun.peak_rss_mb)),
        ("upstream requests", both("plain", "upstream", "requests"), ""),
        (
            "requests per row",
            (f"{per_row(o['plain']):.4f}", f"{per_row(p['plain']):.4f}"),
            _ratio(per_row(o["plain"]), per_row(p["plain"])),
        ),
        ("runs created", both("plain", "upstream", "runs"), ""),
        ("rows kept", (kept(o["plain"]["output"]), kept(p["plain"]["output"])), ""),
        (f"rows with a {OUTPUT_NAME}", both("plain", "output", "filled"), ""),
        ("rows in input order", yes("plain", "in_order"), ""),
        ("aligned 1:1 with input", yes("plain", "aligned"), ""),
        ("basis kept", yes("plain", "basis"), ""),
        ("exit code", (orun.exit_code, prun.exit_code), ""),
        ("SIGINT sent at runs", both("interrupted", "interrupted", "sigint_sent_at_runs"), ""),
        ("exit code after SIGINT", both("interrupted", "interrupted", "exit_code"), ""),
        ("s from SIGINT to exit", both("interrupted", "interrupted", "seconds_to_exit_after_sigint"), ""),
        ("rerun: wall time, s", both("interrupted", "run", "wall_seconds"), ""),
        ("rerun: exit code", both("interrupted", "run", "exit_code"), ""),
        ("rerun: rows kept", (kept(oi["output"]), kept(pi["output"])), ""),
        ("both runs: requests per row", (f"{per_row(oi):.4f}", f"{per_row(pi):.4f}"), _ratio(per_row(oi), per_row(pi))),
        ("both runs: extra runs beyond N", both("interrupted", "extra_runs"), ""),
    ]
    return [(f"{label} @{n:,}", _line(a, b, ratio)) for label, (a, b), ratio in lines]


def bars(sizes: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for size in sizes:
        n, o, p = size["rows"], size["ours"], size["peer"]
        oreq, preq = o["plain"]["upstream"]["requests"], p["plain"]["upstream"]["requests"]
        ok = o["plain"]["output"]["kept"]
        extra = o["interrupted"]["extra_runs"]
        out += [
            (f"requests/row ≤ peer's @{n:,}", f"{_pass(oreq <= preq)}  ({oreq / n:.4f} vs {preq / n:.4f})"),
            (f"rows kept = 100 % @{n:,}", f"{_pass(ok == n)}  ({ok:,} of {n:,})"),
            (f"rerun extra runs = 0 @{n:,}", f"{_pass(extra == 0)}  ({extra})"),
        ]
    if len(sizes) >= 2:
        small, big = sizes[0], sizes[-1]
        a = Execution(**small["ours"]["plain"]["run"]).peak_rss_mb
        b = Execution(**big["ours"]["plain"]["run"]).peak_rss_mb
        label = f"our RSS @{big['rows']:,} ≤ 1.5× @{small['rows']:,}"
        out.append((label, f"{_pass(b <= 1.5 * a)}  ({b} vs {a} MB = {b / a:.2f}×)"))
    else:
        out.append(("our RSS, largest N ≤ 1.5× smallest", "n/a (needs two sizes)"))
    return out


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench enrich", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1000,10000", help="comma-separated table sizes (default 1000,10000)")
    parser.add_argument("--fail-pct", type=float, default=2.0, help="percent of rows whose run fails (default 2)")
    parser.add_argument("--processor", default="lite")
    parser.add_argument("--time-scale", type=float, default=0.01, help="emulator time scale (default 0.01)")
    parser.add_argument("--rate-limit", type=int, default=1_000_000, help="emulator run-creating POSTs/key/min")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one command may take")
    parser.add_argument("--peer-cli", type=Path, default=None, help=f"a parallel-cli (default: {PEER_VENV}, installed)")
    args = parser.parse_args(argv)
    sizes_wanted = sorted({int(s.replace("_", "")) for s in args.rows.split(",") if s.strip()})
    peer_cli = args.peer_cli or ensure_peer()
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-enrich-"))
    sizes = [measure(n, args, peer_cli, tmp) for n in sizes_wanted]
    header = ("", _line("ours (taskdeck)", f"peer ({_peer_version(peer_cli)})", "ours/peer"))
    rows = [header, *[r for size in sizes for r in rows_for(size)]]
    print(
        table(
            f"enrich: taskdeck enrich vs parallel-cli enrich run ({args.processor}, {args.fail_pct:g} % failing)", rows
        )
    )
    print()
    print(table("bars", bars(sizes)))
    result = {
        "processor": args.processor,
        "fail_pct": args.fail_pct,
        "time_scale": args.time_scale,
        "peer": {"package": PEER_PACKAGE, "version": _peer_version(peer_cli), "cli": str(peer_cli)},
        "work_dir": str(tmp),
        "sizes": sizes,
        "bars": dict(bars(sizes)),
    }
    print(f"wrote {write_result('enrich', result)}")
    return result
