#!/usr/bin/env bash
# The release build: what the container image ships (Dockerfile), CI builds (.ci/run) and the
# load benchmark measures (benches/load/run.sh). `cargo build --release --locked`, optimised
# with the execution profile recorded in benches/pgo (profile-guided optimisation: the
# compiler inlines and lays out the code as the recorded load ran it, ~20 % fewer
# instructions per request; docs/BENCHMARKS.md). benches/pgo/train.sh records it again.
# Arguments go to cargo (--quiet, say); RUSTFLAGS set by the caller are kept.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
profile=$root/benches/pgo/poynt-proxy.profdata
if [[ ! -f $profile ]]; then
    echo "release: expected the execution profile $profile; found none (benches/pgo/train.sh records it)" >&2
    exit 1
fi
cd "$root"
RUSTFLAGS="-Cprofile-use=$profile${RUSTFLAGS:+ $RUSTFLAGS}" exec cargo build --release --locked "$@"
