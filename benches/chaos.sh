#!/usr/bin/env bash
# The chaos run (not part of CI): three release replicas on one redis-server and the
# emulator for DURATION (default 10m) under RATE (300) requests a second over MERCHANTS
# (200) merchants, while Redis is killed, stopped, paused and restarted (empty) at random
# every 20-60 s and /token fails now and then. Prints the answers callers got by cause,
# refresh-token reuse, merchants whose refresh token the store lost, lock waits and RSS, and
# keeps it in target/chaos/report.md (docs/BENCHMARKS.md has the latest). SEED repeats a
# run's sequence of events.
#
#   benches/chaos.sh                  # from the repository root
#   DURATION=60s benches/chaos.sh     # a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || {
    echo "chaos: needs redis-server on PATH" >&2
    exit 1
}
mkdir -p target/chaos
seed=(${SEED:+--seed "$SEED"})
cargo bench --locked --bench chaos -- \
    --duration "${DURATION:-10m}" --merchants "${MERCHANTS:-200}" --rate "${RATE:-300}" \
    "${seed[@]}" |
    tee target/chaos/report.md
