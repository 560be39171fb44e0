#!/usr/bin/env bash
# Records the execution profile the release build is optimised with (scripts/release.sh):
# builds poynt-proxy instrumented (-Cprofile-generate, in a target directory of its own), runs
# the load benchmark once on it (benches/load/run.sh, capped mode: saturation only) with every
# poynt-proxy variant — HTTP/1.1 and HTTP/2 upstream, callers' JWTs, traces exported — each
# with its access log on and off, the emulator minting the tokens, and merges what every
# process wrote into benches/pgo/poynt-proxy.profdata.
#
#   benches/pgo/train.sh   # from the repository root, as root (run.sh makes cgroups)
#
# Record it again when the request path changes: a function changed since the profile was
# recorded is compiled as if it had none, and the release build warns of each such function.
# Needs llvm-profdata of the compiler's own LLVM: rustup's llvm-tools component, added here
# when absent.
set -euo pipefail
say() { echo "pgo: $*" >&2; }
die() { say "$*"; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
out=$root/target/pgo
raw=$out/raw
cd "$root"

host=$(rustc -vV | sed -n 's/^host: //p')
profdata=$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata
if [[ ! -x $profdata ]]; then
    say "adding rustup's llvm-tools (llvm-profdata)"
    rustup component add llvm-tools
fi
[[ -x $profdata ]] || die "expected llvm-profdata at $profdata; found none"

say "building poynt-proxy instrumented (into $out/build)"
rm -rf "$raw"
RUSTFLAGS="-Cprofile-generate=$raw" CARGO_TARGET_DIR=$out/build cargo build --release --locked --quiet

say "running the load on it"
POYNT_PROXY=$out/build/release/poynt-proxy \
    KINDS="poynt-proxy poynt-proxy-h2 poynt-proxy-jwt poynt-proxy-traced nginx" ROUNDS=1 DURATION=5 \
    benches/load/run.sh --cpu-quota 1 >/dev/null

# Every process of the binary adds its counts to one file (the runtime's %m pattern).
shopt -s nullglob
files=("$raw"/*.profraw)
((${#files[@]} >= 1)) || die "expected the processes' profile in $raw; found none"
"$profdata" merge --sparse -o benches/pgo/poynt-proxy.profdata "${files[@]}"
say "recorded benches/pgo/poynt-proxy.profdata"
