"""Scale-out at size: many runs held across workers (``concurrency``), one worker's runs taken over (``takeover``).

Both are modes of ``python -m bench scale-out`` (flags and per-mode defaults in ``scale_out.run``) and share its
helpers: a fresh PostgreSQL schema, the recording emulator in its own process, ``_check_events``.

``concurrency``: R active runs (default 15,000) followed by W ``taskdeck worker`` processes (default 3) beside one
``taskdeck serve --no-engine`` process, on a fresh PostgreSQL schema (``--store sqlite``: the W workers and the web
process share one SQLite file). Measured: the time until the emulator holds a stream for every run (creates
included); per process, RSS at the end of the hold and CPU over it (user + system seconds / wall); events stored
per second over the hold (rows in ``events`` at its start and end); the feed lag seen through the web-only process
(SSE clients on ``/api/tasks/{id}/events`` of sampled runs, emission → receipt, the ``live`` mode's code); then,
once every run has ended, events lost or duplicated against what the emulator sent. The key's budget defaults
high: holding runs is measured here, not creating them.

``takeover``: W workers (default 3) each holding N runs (default 1,000). Once all are attached, the worker holding
the most is SIGKILLed and not restarted (``--restart``: a fresh one starts at once, so ``--workers 1`` works).
Measured: the time from the SIGKILL until every run still going has an open upstream stream again (survivors claim
the runs as their leases expire), the most streams ever open for one run (must be 1), lost and duplicated events.
Bar: the lease TTL + 5 s. With ``--budget-scope all`` every stream reopened is a request of the key's budget, so
at Parallel's 2,000 a minute reattaching 10,000 streams takes five minutes at least: expected, and reported with
the budget, its scope and the key's busiest minute.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.engine_runs import _stats, _wait
from bench.scale_out import (
    FINAL,
    KEY,
    _check_events,
    _connect,
    _count,
    _database,
    _enqueue,
    _env,
    _process,
    _recording_emulator,
    _rss_mb,
    _running,
    _stop_all,
    _up,
)
from bench.web import KEY as WEB_KEY
from bench.web import _follow_many, _free_port, _latency_summary
from taskdeck.store.open import open_store


def _cpu_seconds(procs: dict[str, psutil.Process]) -> dict[str, float]:
    return {name: sum(p.cpu_times()[:2]) for name, p in procs.items()}


def _postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every local ``postgres`` process by pid (the server is shared: other clients count too)."""
    out: dict[int, float] = {}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["name"] == "postgres" and times is not None:
            out[proc.pid] = times.user + times.system
    return out


def _held(url: str, workers: list[subprocess.Popen[bytes]]) -> dict[str, int]:
    """Runs still going by the worker whose lease they carry (``workerI``; ``other`` for a holder not listed)."""
    names = {w.pid: f"worker{i}" for i, w in enumerate(workers)}
    out: dict[str, int] = {}
    with _connect(url) as query:
        rows = query(
            "SELECT t.lease_owner, p.pid, COUNT(*) FROM tasks t LEFT JOIN processes p ON p.holder = t.lease_owner "
            f"WHERE t.status NOT IN ({FINAL}) GROUP BY t.lease_owner, p.pid"
        )
    for holder, pid, n in rows:
        name = "unleased" if holder is None else names.get(pid, "other")
        out[name] = out.get(name, 0) + int(n)
    return dict(sorted(out.items()))


def _open_streams(emu_url: str) -> int:
    """The emulator's open streams; a loaded emulator (one process on a shared machine) may answer late."""
    for attempt in range(3):
        try:
            return int(_stats(emu_url)["open_streams"])
        except httpx.TimeoutException:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _streams_at_least(emu_url: str, n: int) -> bool:
    return _open_streams(emu_url) >= n


def _workers(url: str, emu_url: str, env: dict[str, str], tmp: Path, n: int) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` workers and wait until each is registered, so shares are fair from the first task on."""
    workers = [_process(["worker", "--base-url", emu_url], env, tmp / f"worker{i}.log") for i in range(n)]
    _wait(lambda: _count(url, "SELECT COUNT(*) FROM processes WHERE kind = 'worker'") >= n, 60, 0.2)
    return workers


def _create_in_waves(
    args: argparse.Namespace, url: str, tmp: Path, emu_url: str, key: str, runs: int, processor: str, duration: float
) -> tuple[list[str], float]:
    """Enqueue ``runs`` tasks ``--wave`` at a time, each wave once every run so far has a stream; returns their ids
    and the seconds from the first wave to the last stream open.

    With a budget that never binds, the workers would send every create at once; on a shared 2-core machine the
    emulator then falls behind, creates time out (60 s) and wait out the 5 min settle before being sent again. The
    waves create runs at the pace the emulator answers: holding runs is measured here, not creating them."""
    ids: list[str] = []
    started = time.monotonic()
    ends = started + duration * args.time_scale  # when the first runs end: attaching later would measure nothing
    for first in range(0, runs, args.wave):
        ids += _enqueue(url, tmp, key, min(args.wave, runs - first), processor, duration, first=first)
        _wait(partial(_streams_at_least, emu_url, len(ids)), ends - time.monotonic(), 0.5)
    return ids, time.monotonic() - started


def _settle(emu_url: str, url: str, lease_ttl: float) -> None:
    """Let shares settle (a process over its share releases the surplus at a heartbeat, others claim it),
    then wait until every run still going has a stream again."""
    time.sleep(lease_ttl)
    _wait(lambda: _open_streams(emu_url) >= _running(url), 120, 0.5)


def _duration(args: argparse.Namespace, runs: int, reattach: int) -> float:
    """``--duration``, else emulated seconds that keep the first run going through the attach of all ``runs``
    (at 15 runs/s, or what the budget allows: a create plus, with scope 'all', a stream), the hold, the
    reattach of ``reattach`` streams (at the budget's pace with scope 'all'), and three minutes to spare."""
    if args.duration:
        return float(args.duration)
    per_second = args.budget / 60
    counted = args.budget_scope == "all"
    attach = runs / min(15.0, per_second / (2 if counted else 1))
    real: float = attach + args.hold + (reattach / per_second if counted else 0.0) + 180
    scale: float = args.time_scale
    return math.ceil(real / scale / 100) * 100.0


def _leases_lost(tmp: Path) -> int:
    """Leases the workers found taken from them (their log's warnings): each stopped a follower."""
    return sum(log.read_text(errors="replace").count("lost the lease of") for log in tmp.glob("worker*.log"))


def _key_stats(emu_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The emulator's full counters and those of the one key used."""
    stats: dict[str, Any] = httpx.get(f"{emu_url}/_emulator/stats", timeout=120).json()
    (key,) = stats["keys"].values()
    return stats, key


def concurrency(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-scale-concurrency-"))
    duration = _duration(args, args.runs, 0)
    procs: list[subprocess.Popen[bytes]] = []
    with (
        _database(args.store, args.database_url, tmp) as url,
        _recording_emulator(args.time_scale, tmp / "emulator.log") as emu,
    ):
        env = _env(
            url, lease_ttl=args.lease_ttl, budget=args.budget, scope=args.budget_scope, max_followers=args.max_followers
        )
        try:
            open_store(url).close()
            port = _free_port()
            web = f"http://127.0.0.1:{port}"
            procs.append(_process(["serve", "--no-engine", "--port", str(port)], env, tmp / "web.log"))
            _wait(lambda: _up(web), 60, step=0.1)
            workers = _workers(url, emu.url, env, tmp, args.workers)
            procs += workers
            # The web process's SSE clients sign in with the key the runs belong to.
            ids, attach = _create_in_waves(args, url, tmp, emu.url, WEB_KEY, args.runs, "pro", duration)
            _settle(emu.url, url, args.lease_ttl)
            held_by = _held(url, workers)
            named = {f"worker{i}": psutil.Process(w.pid) for i, w in enumerate(workers)}
            named |= {"web": psutil.Process(procs[0].pid), "emulator": emu.ps}
            sample = random.Random(0).sample(ids, min(args.followers, len(ids)))
            load = os.getloadavg()[0]
            cpu0, pg0 = _cpu_seconds(named), _postgres_cpu_seconds()
            t0 = time.monotonic()
            events0 = _count(url, "SELECT COUNT(*) FROM events")
            latencies = asyncio.run(_follow_many(web, sample, args.hold))
            held = time.monotonic() - t0
            events1 = _count(url, "SELECT COUNT(*) FROM events")
            cpu1, pg1 = _cpu_seconds(named), _postgres_cpu_seconds()
            rss = {name: _rss_mb(p) for name, p in named.items()}
            streams = _open_streams(emu.url)
            _wait(lambda: _running(url) == 0, duration * args.time_scale + 900, step=2.0)
            stats, key = _key_stats(emu.url)
            checks = _check_events(url, emu.url, dump=tmp)
        finally:
            _stop_all(procs, signal.SIGTERM)
    cpu = {name: round(100 * (cpu1[name] - cpu0[name]) / held, 1) for name in named}
    cpu["postgres (whole server)"] = round(100 * sum(v - pg0.get(pid, 0.0) for pid, v in pg1.items()) / held, 1)
    return {
        "store": args.store,
        "topology": f"{args.workers} worker processes + 1 web-only process",
        "runs": args.runs,
        "budget_per_minute": args.budget,
        "budget_scope": args.budget_scope,
        "run_seconds": f"{duration:g} emulated x time scale {args.time_scale:g} = {duration * args.time_scale:g}",
        "lease_ttl_seconds": args.lease_ttl,
        "seconds_to_attach_all": round(attach, 1),
        "created_in_waves_of": args.wave,
        "runs_held_by": held_by,
        "streams_held_at_end_of_hold": streams,
        "hold_seconds": round(held, 1),
        "rss_mb": rss,
        "cpu_percent_over_hold": cpu,
        "load_average_1m_at_hold": round(load, 2),
        "events_stored_per_second": round((events1 - events0) / held, 1),
        "feed_lag_sse_clients": len(sample),
        **{f"feed_lag_{k}": v for k, v in _latency_summary(latencies).items()},
        "max_open_streams_per_run": stats["max_open_streams_per_run"],
        "busiest_minute_requests": key["max_requests_per_minute"],
        "http_429": key["by_status"].get("429", 0),
        "leases_lost_in_worker_logs": _leases_lost(tmp),
        **checks,
    }


def takeover(args: argparse.Namespace) -> dict[str, Any]:
    if args.workers < 2 and not args.restart:
        raise SystemExit("takeover: with one worker nobody survives the kill; add --restart")
    total = args.runs_per_worker * args.workers
    tmp = Path(tempfile.mkdtemp(prefix="taskdeck-bench-scale-takeover-"))
    duration = _duration(args, total, args.runs_per_worker)
    workers: list[subprocess.Popen[bytes]] = []
    with (
        _database("postgres", args.database_url, tmp) as url,
        _recording_emulator(args.time_scale, tmp / "emulator.log") as emu,
    ):
        env = _env(
            url, lease_ttl=args.lease_ttl, budget=args.budget, scope=args.budget_scope, max_followers=args.max_followers
        )

        try:
            open_store(url).close()
            workers += _workers(url, emu.url, env, tmp, args.workers)
            _, attach = _create_in_waves(args, url, tmp, emu.url, KEY, total, "ultra", duration)
            ends = time.monotonic() - attach + duration * args.time_scale  # when the first runs end
            _settle(emu.url, url, args.lease_ttl)
            before = _held(url, workers)
            victim = max(range(len(workers)), key=lambda i: before.get(f"worker{i}", 0))
            victim_runs = before.get(f"worker{victim}", 0)
            rss_before = {f"worker{i}": _rss_mb(w) for i, w in enumerate(workers)}
            workers[victim].send_signal(signal.SIGKILL)
            workers[victim].wait()
            killed = time.monotonic()
            if args.restart:
                workers.append(_process(["worker", "--base-url", emu.url], env, tmp / f"worker{len(workers)}.log"))
            # The emulator counts the victim's streams closed (else the check below could pass before it did).
            _wait(lambda: _open_streams(emu.url) <= _running(url) - victim_runs, 60, 0.05)
            closed = time.monotonic() - killed
            floor = _open_streams(emu.url)
            first: list[float] = []

            def reattached() -> bool:
                now_open = _open_streams(emu.url)
                if not first and now_open > floor:
                    first.append(time.monotonic() - killed)
                return bool(now_open >= _running(url))

            _wait(reattached, max(60.0, ends - time.monotonic()), 0.1)
            reattach = time.monotonic() - killed
            alive = [(i, w) for i, w in enumerate(workers) if w.poll() is None]
            after = _held(url, workers)
            rss_after = {f"worker{i}": _rss_mb(w) for i, w in alive}
            _wait(lambda: _running(url) == 0, duration * args.time_scale + 900, step=2.0)
            stats, key = _key_stats(emu.url)
            checks = _check_events(url, emu.url, dump=tmp)
        finally:
            _stop_all(workers, signal.SIGTERM)
    return {
        "workers": args.workers,
        "runs_per_worker": args.runs_per_worker,
        "runs": total,
        "replacement_worker": args.restart,
        "budget_per_minute": args.budget,
        "budget_scope": args.budget_scope,
        "run_seconds": f"{duration:g} emulated x time scale {args.time_scale:g} = {duration * args.time_scale:g}",
        "lease_ttl_seconds": args.lease_ttl,
        "seconds_to_attach_all": round(attach, 1),
        "created_in_waves_of": args.wave,
        "runs_held_by_before_kill": before,
        "killed": f"worker{victim} ({victim_runs} runs)",
        "seconds_until_emulator_saw_streams_closed": round(closed, 2),
        "seconds_to_first_reattach": round(first[0], 2) if first else None,
        "seconds_to_reattach_all": round(reattach, 2),
        "bar_reattach_seconds": args.lease_ttl + 5,
        "within_bar": reattach <= args.lease_ttl + 5,
        "runs_held_by_after": after,
        "rss_mb_before_kill": rss_before,
        "rss_mb_after_takeover": rss_after,
        "max_open_streams_per_run": stats["max_open_streams_per_run"],
        "busiest_minute_requests": key["max_requests_per_minute"],
        "http_429": key["by_status"].get("429", 0),
        "leases_lost_in_worker_logs": _leases_lost(tmp),
        **checks,
    }
