#!/usr/bin/env bash
# The soak run (not part of CI): the release proxy and emulator for MINUTES (default 30)
# under steady traffic for MERCHANTS (200) merchants at RATE (400) requests a second, with
# 5-second tokens and a 10-second /token fault injected every two minutes. Prints a table of
# errors outside the fault windows, /token calls per merchant, refresh-token reuse and the
# RSS trend, and keeps it in target/soak/report.md (docs/BENCHMARKS.md has the latest).
#
#   benches/soak.sh                  # from the repository root
#   MINUTES=5 benches/soak.sh        # a shorter run
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/soak
cargo bench --locked --bench soak -- \
    --minutes "${MINUTES:-30}" --merchants "${MERCHANTS:-200}" --rate "${RATE:-400}" |
    tee target/soak/report.md
