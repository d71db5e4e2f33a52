#!/usr/bin/env bash
# The whole test suite, ROUNDS times in a row (default 3), while two busy processes keep both cores
# loaded: proves that no test depends on timing luck. Usage: tests/under_load.sh [rounds] [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
burners=()
for _ in 1 2; do
  python3 -c 'while True: pass' &
  burners+=("$!")
done
trap 'kill "${burners[@]}" 2>/dev/null || true' EXIT
for round in $(seq 1 "$rounds"); do
  echo "== round $round of $rounds, both cores busy =="
  .venv/bin/pytest -q -p no:cacheprovider "$@"
done
echo "== $rounds rounds passed under load =="
