"""The group's bisection index answers exactly as the per-run loops it replaced.

``Group.status``, ``events_between`` and ``next_end_ns`` used to walk every run per call;
they now bisect sorted transition instants (group.py, ``_Timeline``). The old loops are
kept here, verbatim, as the reference: on random groups (random durations, failures,
zero-length and skip-running runs, ties, runs added in batches at different times,
wall clocks that disagree with the monotonic one) both must give the same JSON, byte
for byte (key order of ``task_run_status_counts`` included), at every transition
instant, one float step either side of it, and before and after everything.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskdeck.emulator.directives import Directives, parse_directives
from taskdeck.emulator.group import (
    RUN_STATE,
    WALL_OFFSET_NS,
    Group,
    GroupEventKey,
    threshold,
)
from taskdeck.emulator.run import Run, plan_run, rfc3339
from taskdeck.processors import Processor, get_processor
from taskdeck.taskspec import compact_json


def _processor(name: str) -> Processor:
    found = get_processor(name)
    assert found is not None
    return found


LITE = _processor("lite")


# -- the reference: the O(n) implementations as they were ---------------------------------
def ref_status(group: Group, now: float) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    modified = rfc3339(group.created_wall)
    for run in group.runs:
        wire = run.wire(now - run.created_mono)
        counts[wire["status"]] += 1
        modified = max(modified, wire["modified_at"])
    active = counts["queued"] + counts["running"] + counts["cancelling"]
    return {
        "num_task_runs": len(group.runs),
        "task_run_status_counts": dict(counts),
        "is_active": active > 0,
        "status_message": None,
        "modified_at": modified,
    }


def ref_end_key(group: Group, index: int) -> GroupEventKey:
    run = group.runs[index]
    return (int((run.created_mono + run.ends_at) * 1e9) + WALL_OFFSET_NS, index, RUN_STATE)


def ref_events_between(group: Group, after: GroupEventKey | None, until_ns: int) -> list[tuple[GroupEventKey, int]]:
    found = []
    for i in range(len(group.runs)):
        k = ref_end_key(group, i)
        if k[0] <= until_ns and (after is None or k > after):
            found.append((k, i))
    found.sort()
    return found


def ref_next_end_ns(group: Group, after_ns: int) -> int | None:
    ends = [k[0] for k in (ref_end_key(group, i) for i in range(len(group.runs))) if k[0] > after_ns]
    return min(ends) if ends else None


# -- random groups ---------------------------------------------------------------------------
def make_run(
    index: int,
    created_mono: float,
    created_wall: datetime,
    running_at: float,
    ends_at: float,
    fails: bool,
    group_id: str,
) -> Run:
    """A run with a hand-picked plan (no events: the group only looks at the clock)."""
    return Run(
        run_id=f"trun_{index:06d}",
        owner="o",
        processor=LITE,
        request={"input": f"q{index}", "metadata": {"n": index}},
        created_wall=created_wall,
        created_mono=created_mono,
        running_at=running_at,
        ends_at=ends_at,
        fails=fails,
        events_enabled=False,
        messages=[],
        stats=[],
        warnings=[],
        directives=Directives(),
        seed_parts=(index,),
        taskgroup_id=group_id,
    )


def random_plan(rng: random.Random, shared: list[float]) -> tuple[float, float]:
    """(running_at, ends_at) as run.py plans them, plus the corner cases it can produce."""
    kind = rng.random()
    if kind < 0.1:
        ends = 0.0  # duration=0: terminal at once, never running
    elif kind < 0.25 and shared:
        ends = rng.choice(shared)  # ties between runs
    elif kind < 0.35:
        ends = rng.uniform(1e-7, 1e-3)  # shorter than the float step of some instants
    else:
        ends = rng.uniform(0.01, 30.0)
        shared.append(ends)
    pick = rng.random()
    if pick < 0.15:
        running = ends  # goes straight from queued to terminal
    elif pick < 0.25:
        running = 0.0
    else:
        running = min(rng.uniform(0.5, 3.0) * 0.1, ends * 0.1)  # plan_run's rule
    return running, ends


def random_group(rng: random.Random, *, batches: int, per_batch: int) -> tuple[Group, list[list[Run]]]:
    """A group and the batches of runs to append to it, each batch added later than the last."""
    mono0 = rng.uniform(1e3, 1e7)  # monotonic clocks count from boot: small and large magnitudes
    wall0 = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.uniform(0, 1e7))
    # Some groups name a wall time later than their runs' (a stepped clock): their own creation then wins.
    group_wall = wall0 + timedelta(seconds=rng.choice([0.0, 0.0, rng.uniform(0, 200)]))
    group = Group("tgrp_x", "o", None, created_wall=group_wall, created_mono=mono0)
    shared: list[float] = []
    out: list[list[Run]] = []
    index = 0
    added_at = 0.0
    for _ in range(batches):
        added_at += rng.choice([0.0, rng.uniform(0, 5), rng.uniform(0, 60)])
        batch = []
        for _ in range(per_batch):
            at = added_at + rng.choice([0.0, rng.uniform(0, 1)])
            # Wall and monotonic creation times agree to within rounding, except some runs (as if
            # restored after a restart, or the wall clock stepped) whose wall time is off by seconds.
            skew = rng.choice([0.0, 0.0, 0.0, rng.uniform(-3, 3), rng.uniform(-1e-6, 1e-6)])
            running, ends = random_plan(rng, shared)
            batch.append(
                make_run(
                    index,
                    mono0 + at,
                    wall0 + timedelta(seconds=at + skew),
                    running,
                    ends,
                    rng.random() < 0.3,
                    group.taskgroup_id,
                )
            )
            index += 1
        out.append(batch)
    return group, out


def instants(group: Group, rng: random.Random) -> list[float]:
    """Every transition instant of the group's runs, one float step either side, and a few more."""
    points = {group.created_mono - 1e6, group.created_mono, group.created_mono + 1e6}
    for run in group.runs:
        for offset in (0.0, run.running_at, run.ends_at):
            t = run.created_mono + offset
            points.update({t, math.nextafter(t, -math.inf), math.nextafter(t, math.inf)})
            exact = threshold(run.created_mono, offset)
            points.update({exact, math.nextafter(exact, -math.inf)})
    points = {p for p in points if math.isfinite(p)}  # a clock reading is always a finite number
    last = max(points)
    points.update(rng.uniform(group.created_mono - 10, last + 10) for _ in range(50))
    return sorted(points)


def assert_same_status(group: Group, now: float) -> None:
    expected = compact_json(ref_status(group, now))
    got = group.status(now)
    assert compact_json(got) == expected, now
    # cached_status semantics: status() leaves an equal copy behind, not the same object.
    assert group._cached is not None and group._cached[0] == now
    assert compact_json(group._cached[1]) == expected and group._cached[1] is not got


def assert_same_events(group: Group, rng: random.Random) -> None:
    keys = sorted(ref_end_key(group, i) for i in range(len(group.runs)))
    times = sorted({k[0] for k in keys} | {0, 2**70})
    untils = [t + d for t in times for d in (-1, 0, 1)]
    afters: list[GroupEventKey | None] = [None, (0, 0, 0), (2**70, 0, 0)]
    for k in rng.sample(keys, min(len(keys), 12)):
        afters += [k, (k[0], k[1], k[2] + 1), (k[0], k[1] + 1, 0), (k[0] - 1, 1 << 40, 1), (k[0], 1 << 40, 1)]
    for after in afters:
        if after is not None:
            assert group.has_events_after(after) == any(k > after for k in keys)
        for until in [*rng.sample(untils, min(len(untils), 12)), untils[0], untils[-1]]:
            assert group.events_between(after, until) == ref_events_between(group, after, until)
    for t in untils:
        assert group.next_end_ns(t) == ref_next_end_ns(group, t)


@pytest.mark.parametrize("seed", range(12))
def test_bisection_matches_the_per_run_loops(seed: int) -> None:
    rng = random.Random(seed)
    group, batches = random_group(rng, batches=rng.randint(1, 6), per_batch=rng.randint(1, 40))
    assert_same_status(group, group.created_mono)  # no run yet
    assert group.events_between(None, 2**70) == [] and group.next_end_ns(0) is None
    for batch in batches:
        group.runs.extend(batch)
        points = instants(group, rng)
        # Bounded, so the O(n) reference keeps the test quick; the ends (before and after everything) always in.
        for now in [points[0], points[-1], *rng.sample(points, min(len(points), 300))]:
            assert_same_status(group, now)
        assert_same_events(group, rng)


def test_queries_between_single_appends() -> None:
    """Runs appended one at a time with a question after each (as ``POST …/runs`` with one input does)."""
    rng = random.Random(99)
    group, batches = random_group(rng, batches=1, per_batch=150)
    for run in batches[0]:
        group.runs.append(run)
        for now in rng.sample(instants(group, rng), 12):
            assert_same_status(group, now)
        assert group.events_between(None, 2**70) == ref_events_between(group, None, 2**70)


def test_planned_runs_with_directives() -> None:
    """Runs planned by plan_run itself (fail, duration=0, default durations) at real clock readings."""
    rng = random.Random(7)
    group = Group("tgrp_p", "o", None, created_wall=datetime.now(UTC))
    directives = ["", "fail", "duration=0", "duration=0;fail", "duration=5", "duration=0.0001"]
    for i in range(60):
        group.runs.append(
            plan_run(
                run_id=f"trun_{i}",
                owner="o",
                processor=LITE,
                request={"input": f"x{i}", "metadata": None},
                warnings=[],
                directives=parse_directives(rng.choice(directives)),
                seed=i,
                time_scale=rng.choice([0.001, 0.1, 1.0]),
                taskgroup_id=group.taskgroup_id,
            )
        )
    for now in instants(group, rng):
        assert_same_status(group, now)
    assert_same_events(group, rng)


def test_runs_that_never_end() -> None:
    """``duration=inf`` and ``duration=nan`` pass the directive parser: such runs stay running.

    The status agrees with the reference; their completions are left out of the event log,
    where the old loop raised (``int(inf)``) and took the whole group stream down.
    """
    rng = random.Random(3)
    group, batches = random_group(rng, batches=1, per_batch=20)
    group.runs.extend(batches[0])
    wall = group.created_wall
    endless = [
        make_run(20, group.created_mono + 1, wall, 0.2, math.inf, False, "tgrp_x"),
        make_run(21, group.created_mono + 2, wall, 0.3, math.nan, True, "tgrp_x"),
    ]
    group.runs.extend(endless)
    for now in instants(group, rng):
        assert_same_status(group, now)
    finite = [i for i in range(len(group.runs)) if i not in (20, 21)]
    expected = sorted((ref_end_key(group, i), i) for i in finite)
    assert group.events_between(None, 2**70) == expected
    assert group.status(group.created_mono + 1e9)["task_run_status_counts"]["running"] == 2
    assert group.status(group.created_mono + 1e9)["is_active"] is True


def test_threshold_is_the_least_instant() -> None:
    """``now >= threshold(c, o)`` exactly when ``now - c >= o``, down to the last float step."""
    rng = random.Random(5)
    cases = [(0.0, 0.0), (1e15, 1e-12), (123456.789, 0.1), (1e7, 3.3e-9), (5.0, 5e-324)]
    cases += [(rng.uniform(0, 1e8), rng.choice([0.0, rng.uniform(0, 1e-6), rng.uniform(0, 1e4)])) for _ in range(2000)]
    for created, offset in cases:
        t = threshold(created, offset)
        assert t - created >= offset, (created, offset)
        assert not math.nextafter(t, -math.inf) - created >= offset, (created, offset)
        assert threshold(created, offset, steps=0) == t  # the bisection fallback agrees
    assert threshold(1.0, math.inf) == math.inf and threshold(1.0, math.nan) == math.inf


def test_a_big_group_is_cheap() -> None:
    """10,000 runs: a status costs microseconds, not a walk over the runs."""
    rng = random.Random(11)
    group, batches = random_group(rng, batches=10, per_batch=1000)
    for batch in batches:
        group.runs.extend(batch)
    group.status(group.created_mono)  # takes the runs in
    probe = rng.sample(instants(group, rng), 200)
    for now in probe[:20]:
        assert_same_status(group, now)
    start = time.perf_counter()
    for now in probe:
        group.status(now)
    per_call = (time.perf_counter() - start) / len(probe)
    assert per_call < 2e-3, per_call  # the per-run loop took ~40 ms here
