"""``python -m bench [NAME [options]]``: run one benchmark, or all of them with their defaults."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bench import emulator_streams, engine_ingest, engine_runs, enrich_compare, pg_driver, scale_out, ui, web

BENCHMARKS: dict[str, Callable[[list[str] | None], Any]] = {
    "emulator-streams": emulator_streams.run,
    "engine-ingest": engine_ingest.run,
    "engine-runs": engine_runs.run,
    "pg-driver": pg_driver.run,
    "web": web.run,
    "ui": ui.run,
    "scale-out": scale_out.run,
    "enrich": enrich_compare.run,
}


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        print("benchmarks:", ", ".join(BENCHMARKS))
        return 0
    if argv and argv[0] in BENCHMARKS:
        BENCHMARKS[argv[0]](argv[1:])
        return 0
    if argv:
        print(f"unknown benchmark {argv[0]!r}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for bench in BENCHMARKS.values():
        bench([])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
