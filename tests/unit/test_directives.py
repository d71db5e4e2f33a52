"""The directive language: parsing, targets, counts, probabilities."""

from __future__ import annotations

import random

import pytest

from taskdeck.emulator.directives import DirectiveError, parse_directives


def test_parse_full_clause() -> None:
    d = parse_directives("events:drop=300*2%0.5; fail; duration=90")
    drop = d.clauses[0]
    assert (drop.target, drop.name, drop.value, drop.remaining, drop.probability) == ("events", "drop", 300, 2, 0.5)
    assert d.flag("fail") and d.value("duration") == 90 and not d.flag("xss")


def test_default_targets() -> None:
    d = parse_directives("drop=1;error=503;ratelimit=2;crlf")
    assert [c.target for c in d.clauses] == ["events", "any", "any", "events"]


def test_counts_are_consumed_per_matching_request() -> None:
    d = parse_directives("error=503*2")
    rng = random.Random(0)
    assert [("error" in d.take("get", rng)) for _ in range(3)] == [True, True, False]


def test_target_filters() -> None:
    d = parse_directives("create:error=503;events:hang=1")
    rng = random.Random(0)
    assert d.take("get", rng) == {}
    assert d.take("create", rng) == {"error": 503}
    assert d.take("events", rng) == {"hang": 1}


def test_run_only_directives_never_fire_as_faults() -> None:
    d = parse_directives("fail;xss;duration=5")
    assert d.take("events", random.Random(0)) == {}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("explode", "unknown directive"),
        ("drop", "needs a value"),
        ("drop=abc", "takes a number"),
        ("fail=1", "takes no value"),
        ("error=404", "5xx"),
        ("moon:drop=1", "target"),
        ("drop=1*x", "whole number"),
        ("drop=1%2", "from 0 to 1"),
        ("hang=-1", "negative"),
    ],
)
def test_errors_name_the_clause(text: str, needle: str) -> None:
    with pytest.raises(DirectiveError, match=needle) as info:
        parse_directives(text)
    assert text.split("*")[0].split("%")[0] in str(info.value)


def test_run_only_refused_where_not_allowed() -> None:
    with pytest.raises(DirectiveError, match="shapes a run"):
        parse_directives("fail", allow_run_only=False)


def test_empty_is_falsy() -> None:
    assert not parse_directives("") and not parse_directives(None) and not parse_directives(" ; ")


def test_one_connect_fault_per_request_and_the_others_keep_their_counts() -> None:
    d = parse_directives("error=503*1;ratelimit=1*1")
    rng = random.Random(0)
    assert d.take("create", rng) == {"error": 503}
    assert d.take("create", rng) == {"ratelimit": 1}
    assert d.take("create", rng) == {}


def test_vanish_and_nooutput_are_run_level_directives() -> None:
    d = parse_directives("vanish=30;nooutput")
    assert d.value("vanish") == 30 and d.flag("nooutput")
    assert d.take("events", random.Random(0)) == {} and d.take("get", random.Random(0)) == {}
    for text in ("vanish=1", "nooutput"):
        with pytest.raises(DirectiveError, match="shapes a run"):
            parse_directives(text, allow_run_only=False)
    with pytest.raises(DirectiveError, match="needs a value"):
        parse_directives("vanish")
    with pytest.raises(DirectiveError, match="takes no value"):
        parse_directives("nooutput=1")
