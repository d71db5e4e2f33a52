"""The processor table matches the contract §7."""

from __future__ import annotations

from taskdeck.processors import PROCESSORS, get_processor, processor_names


def test_eighteen_processors() -> None:
    assert len(processor_names()) == 18
    assert {p.tier for p in PROCESSORS.values()} == {
        "lite", "base", "core", "core2x", "pro", "ultra", "ultra2x", "ultra4x", "ultra8x",
    }  # fmt: skip


def test_prices_and_ranges() -> None:
    ultra8x = get_processor("ultra8x")
    assert ultra8x is not None and ultra8x.max_seconds == 7200 and ultra8x.usd_per_run == 2.4
    fast = get_processor("ultra8x-fast")
    assert fast is not None and fast.max_seconds == 3600 and fast.usd_per_1000_runs == 2400
    lite = get_processor("lite")
    assert lite is not None and lite.latency_label == "10 s–1 min" and not lite.events_by_default
    pro = get_processor("pro")
    assert pro is not None and pro.events_by_default and pro.latency_label == "2 min–10 min"
    assert get_processor("mega") is None
