"""Event streams that end when they should and lose nothing at their seams (issue 7, items 15, 16, 20)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from web_helpers import Web, sse

from helpers import wait_for
from taskdeck.engine.feed import Feed, Subscription
from taskdeck.engine.writer import note
from taskdeck.models import TaskStatus
from taskdeck.store.base import PatchTask

KEY = "stream-test-key"
LONG = {"input": "a long one", "processor": "lite", "metadata": {"emulator": "duration=1000000"}}


def has_run(web: Web, task_id: str) -> bool:
    task = web.engine.store.get_task(task_id)
    return task is not None and task.run_id is not None


@contextmanager
def hooked_subscribe(feed: Feed, before: Any = None, after: Any = None) -> Iterator[None]:
    """Run ``before()`` just before a subscription starts and ``after()`` just after (the server's own thread)."""
    original = feed.subscribe

    @contextmanager
    def subscribe(**kwargs: Any) -> Iterator[Subscription]:
        if before is not None:
            before()
        with original(**kwargs) as sub:
            if after is not None:
                after()
            yield sub

    feed.subscribe = subscribe  # type: ignore[method-assign]
    try:
        yield
    finally:
        feed.subscribe = original  # type: ignore[method-assign]


def test_a_task_that_ends_while_the_stream_opens_still_gets_its_end(web: Web) -> None:
    """The stream subscribes before it reads the task: an end committed in between is never missed."""
    with web.client(KEY) as client:
        task = client.post("/api/tasks", json=LONG).json()["task"]
        wait_for(lambda: has_run(web, task["id"]), 30, "the run")
        web.engine.followers[task["id"]].stop()  # nobody else touches the task now

        def end_it() -> None:
            # The task ends right before the subscription starts, and that change is published to nobody.
            web.engine.store.apply([PatchTask(task["id"], {"status": TaskStatus.COMPLETED.value})])

        with hooked_subscribe(web.engine.feed, before=end_it):
            started = time.monotonic()
            events = sse(client, task["urls"]["events"])
        assert events[-1][1] == "end"
        assert time.monotonic() - started < 10


def test_resume_with_last_event_id_on_a_live_run_has_no_gap_and_no_duplicate(web: Web) -> None:
    with web.client(KEY) as client:
        task = client.post("/api/tasks", json={**LONG, "processor": "pro"}).json()["task"]
        wait_for(lambda: len(web.engine.store.events(task["id"])) >= 8, 30, "a few events")
        stored = web.engine.store.events(task["id"])
        resume_after = stored[3].seq
        store = web.engine.store
        stored_task = store.get_task(task["id"])
        assert stored_task is not None

        def commit_one() -> None:
            # Committed (and published, as the writer does) after the subscription starts and before the
            # history is read: this event is both in the history and in the live queue, and is sent once.
            for event in store.apply([note(stored_task, "seam_check")]):
                web.engine.feed.publish_event(event, stored_task.owner)

        with hooked_subscribe(web.engine.feed, after=commit_one):
            got: list[tuple[str, str, str]] = []
            with client.stream("GET", task["urls"]["events"], headers={"last-event-id": str(resume_after)}) as resp:
                block: dict[str, str] = {}
                seam = 0
                for line in resp.iter_lines():
                    if not line:
                        if block:
                            got.append((block.get("id", ""), block.get("event", ""), block.get("data", "")))
                            seq = int(block.get("id") or 0)
                            if json.loads(block["data"]).get("type") == "taskdeck.seam_check" and not seam:
                                # Then live events past the seam: stopping the follower writes some.
                                seam = seq
                                web.engine.followers[task["id"]].stop()
                            elif seam and seq > seam:
                                break  # a live event after the seam arrived: anything duplicated came before it
                        block = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        block[name] = value
        ids = [int(i) for i, _, _ in got if i]
        assert ids == sorted(set(ids)), "a duplicate or out-of-order event at the seam"
        expected = [e.seq for e in store.events(task["id"]) if e.seq > resume_after and e.seq <= ids[-1]]
        assert ids == expected, "a gap: an event stored after Last-Event-ID was not sent"


def test_deleting_a_task_ends_its_stream_and_tells_the_list(web: Web) -> None:
    with web.client(KEY) as client:
        task = client.post("/api/tasks", json=LONG).json()["task"]
        wait_for(lambda: has_run(web, task["id"]), 30, "the run")
        listed: list[str] = []
        with client.stream("GET", "/api/tasks/stream") as listing:
            with client.stream("GET", task["urls"]["events"]) as resp:
                assert client.delete(f"/api/tasks/{task['id']}").status_code == 204
                kinds = [line for line in resp.iter_lines() if line.startswith("event:")]
            assert kinds[-1] == "event: end" and set(kinds[:-1]) <= {"event: status"}
            for line in listing.iter_lines():
                if line.startswith("event:"):
                    listed.append(line)
                    break
        assert listed == ["event: removed"]
        assert client.get(task["urls"]["events"]).status_code == 404


def test_a_stream_that_fell_behind_reads_what_it_missed_from_the_store_and_goes_on(web: Web) -> None:
    """Overflow (a burst the client's queue could not hold) is caught up from the store, in place."""
    with web.client(KEY) as client:
        task = client.post("/api/tasks", json=LONG).json()["task"]
        wait_for(lambda: has_run(web, task["id"]), 30, "the run")
        web.engine.followers[task["id"]].stop()  # nothing else is written for the task now
        store = web.engine.store
        stored_task = store.get_task(task["id"])
        assert stored_task is not None
        catalog = web.app.state.catalog
        subs: list[Subscription] = []
        original_events = catalog.events

        async def events_then_fall_behind(task_id: str, *, after_seq: int = 0) -> Any:
            history = await original_events(task_id, after_seq=after_seq)
            if not subs[0].overflowed and not getattr(subs[0], "fell", False):
                # Right after the history is read: an event is committed whose publication this
                # subscriber never gets (its queue was full), as a burst would do.
                store.apply([note(stored_task, "missed_while_behind")])
                subs[0].overflowed = True
                subs[0].fell = True  # type: ignore[attr-defined]
            return history

        original_subscribe = web.engine.feed.subscribe

        @contextmanager
        def subscribe(**kwargs: Any) -> Iterator[Subscription]:
            with original_subscribe(**kwargs) as sub:
                subs.append(sub)
                yield sub

        catalog.events = events_then_fall_behind
        web.engine.feed.subscribe = subscribe  # type: ignore[method-assign]
        try:
            got: list[tuple[str, str]] = []
            with client.stream("GET", task["urls"]["events"]) as resp:
                block: dict[str, str] = {}
                for line in resp.iter_lines():
                    if line:
                        if not line.startswith(":"):
                            name, _, value = line.partition(": ")
                            block[name] = value
                        continue
                    if block:
                        got.append((block.get("event", ""), block.get("data", "")))
                        if '"taskdeck.missed_while_behind"' in block.get("data", ""):
                            break
                    block = {}
        finally:
            del catalog.events
            web.engine.feed.subscribe = original_subscribe  # type: ignore[method-assign]
        missed = [d for _, d in got if '"taskdeck.missed_while_behind"' in d]
        assert len(missed) == 1, got
        assert "end" not in [kind for kind, _ in got], "the stream ended instead of catching up"


def test_a_task_list_stream_that_fell_behind_tells_the_page_to_read_its_rows_again(web: Web) -> None:

    original_subscribe = web.engine.feed.subscribe

    @contextmanager
    def subscribe(**kwargs: Any) -> Iterator[Subscription]:
        with original_subscribe(**kwargs) as sub:
            sub.overflowed = kwargs.get("owner") is not None  # as if a burst had filled its queue
            yield sub

    web.engine.feed.subscribe = subscribe  # type: ignore[method-assign]
    try:
        with web.client(KEY) as client, client.stream("GET", "/api/tasks/stream") as listing:
            first = next(line for line in listing.iter_lines() if line.startswith("event:"))
    finally:
        web.engine.feed.subscribe = original_subscribe  # type: ignore[method-assign]
    assert first == "event: resync"
