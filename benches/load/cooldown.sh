#!/usr/bin/env bash
# Does one merchant's cool-down cost the others latency? Issue #24: "after one Poynt 429
# with Retry-After: 5 for merchant A, the emulator sees 0 requests for A until 5 s have
# passed, while merchant B's requests all succeed and B's p99 moves less than 10 %". On one
# machine, all on loopback: the emulator as Poynt and one poynt-proxy (release) in front.
#
# A sub-millisecond p99 moves by far more than 10 % from one run to the next on a shared VM,
# so one invocation runs ROUNDS rounds and decides on the median of the ratios taken within
# rounds, as benches/load/run.sh does. Each round measures B's p99 (oha: RATE req/s evenly
# spaced, each request timed from when it was due) in two windows of WINDOW seconds, in
# alternating order: A served by Poynt, and A cooling down, the window starting right after
# A met exactly one Poynt 429 with Retry-After: 5 (the emulator's api_throttle) and ending
# inside those 5 s. A's callers send at A_RATE in both windows: the same load, so what moves
# B is the cool-down, not more CPU work (A_RATE=max hammers A with wrk instead, which
# measures the proxy's CPU shared with A). After the cooled window the script polls A until
# Poynt serves it again, so the next "served" window is served, and so checks per round that
# no A request reached Poynt before 5 s had passed and that the first one after did. Any B
# answer other than 2xx stops the run. A warm-up round comes first and is not counted; a
# round during which the host took more than STEAL_MAX % of the CPUs runs again (ATTEMPTS
# tries at most, the calmest kept). Writes target/load/cooldown.md and, one row a round,
# target/load/cooldown.tsv.
#
#   benches/load/cooldown.sh        (from the repository root; see docs/BENCHMARKS.md)
#
# Knobs (environment): ROUNDS (9), WINDOW seconds (4; 1 to 4, inside the cool-down), RATE
# B's req/s (1000), A_RATE A's req/s (500; `max`: wrk at saturation, A_CONNECTIONS
# connections, 32), LOADGEN_MAX (80: the load generator's CPUs busier than this % in a
# window make the run not decidable), STEAL_MAX (3) and ATTEMPTS (3), BASE_PORT (18600; ports
# +1..+3), PROXY_CPUS (default the first CPU) and LOADGEN_CPUS (the rest: the emulator, oha
# and wrk), OHA (an oha binary; by default the one benches/load/run.sh builds into
# target/load/tools), KEEP=1 keeps the work directory.
set -euo pipefail

say() { echo "cooldown: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

# Poynt's Retry-After for A: the issue's figure.
RETRY_AFTER=5
ROUNDS=${ROUNDS:-9}
WINDOW=${WINDOW:-4}
RATE=${RATE:-1000}
A_RATE=${A_RATE:-500}
A_CONNECTIONS=${A_CONNECTIONS:-32}
LOADGEN_MAX=${LOADGEN_MAX:-80}
STEAL_MAX=${STEAL_MAX:-3}
ATTEMPTS=${ATTEMPTS:-3}
BASE_PORT=${BASE_PORT:-18600}
whole() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 expects a whole number of at least 1; found '$2'"; }
whole ROUNDS "$ROUNDS"
whole RATE "$RATE"
whole ATTEMPTS "$ATTEMPTS"
[[ $A_RATE == max ]] || whole A_RATE "$A_RATE"
if ! [[ $WINDOW =~ ^[1-9]$ ]] || ((WINDOW >= RETRY_AFTER)); then
    die "WINDOW expects whole seconds from 1 to $((RETRY_AFTER - 1)) (inside A's ${RETRY_AFTER} s cool-down); found '$WINDOW'"
fi
# p99 is the 1 % tail: fewer than 20 requests beyond it and one scheduling hiccup moves it.
if ((RATE * WINDOW < 2000)); then
    say "warning: RATE × WINDOW = $((RATE * WINDOW)) requests a window leave fewer than 20 beyond B's p99"
fi
CPUS=$(nproc)
((CPUS >= 2)) || die "needs at least 2 CPUs (found $CPUS): the proxy and the load must not share one"
PROXY_CPUS=${PROXY_CPUS:-0}
LOADGEN_CPUS=${LOADGEN_CPUS:-1-$((CPUS - 1))}
LOADGEN_CPU_NUMBERS=$(cpu_numbers "$LOADGEN_CPUS")
LOADGEN_THREADS=$(cpu_count "$LOADGEN_CPUS")
MEASURED_CPU_NUMBERS="$(cpu_numbers "$PROXY_CPUS")$LOADGEN_CPU_NUMBERS"
MEASURED_CPUS=$(($(cpu_count "$PROXY_CPUS") + LOADGEN_THREADS))
HZ=$(getconf CLK_TCK)

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/target/load
OHA=${OHA:-$OUT/tools/bin/oha}
for tool in wrk curl jq taskset; do
    command -v "$tool" >/dev/null || die "expected $tool on PATH; found none (apt-get install $tool)"
done
[[ -x $OHA ]] || die "expected oha at $OHA; found none (benches/load/run.sh builds it, or set OHA)"

EMULATOR_PORT=$((BASE_PORT + 1))
LISTEN_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
A=6b1f0c2e-3d4a-4b5c-8d6e-7f8091a2b3c4
B=7c2a1d3f-4e5b-4c6d-9e7f-8091a2b3c4d5
APP_ID=urn:aid:4f1c2a3b-cooldown-bench
EMULATOR=http://127.0.0.1:$EMULATOR_PORT
PROXY=http://127.0.0.1:$LISTEN_PORT

mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/poynt-cooldown.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ ${KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building poynt-proxy (release)"
"$ROOT/scripts/release.sh" --quiet
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/poynt-proxy

taskset -c "$LOADGEN_CPUS" env RUST_LOG=warn "$BIN" emulator --listen "127.0.0.1:$EMULATOR_PORT" \
    --app-id "$APP_ID" --app-private-key-out "$WORK/app-key.pem" --merchant "$A" --merchant "$B" \
    >"$WORK/emulator.out" 2>&1 &
PIDS+=($!)
wait_ready "$EMULATOR/_emulator/stats"

# limits: left at their defaults; cooldown_max (60 s) is above Poynt's Retry-After.
cat >"$WORK/proxy.yaml" <<EOF
listen: "127.0.0.1:$LISTEN_PORT"
admin_listen: "127.0.0.1:$ADMIN_PORT"
poynt:
  api_url: "$EMULATOR"
  application_id: "$APP_ID"
  private_key_file: "$WORK/app-key.pem"
store:
  backend: memory
log:
  level: warn
  access: off
EOF
taskset -c "$PROXY_CPUS" "$BIN" run --config "$WORK/proxy.yaml" >"$WORK/proxy.out" 2>&1 &
PIDS+=($!)
wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz"

fault() { curl -sf -X POST -H 'content-type: application/json' -d "$1" "$EMULATOR/_emulator/fault" >/dev/null; }
a_calls() { curl -sf "$EMULATOR/_emulator/stats" | jq --arg m "$A" '.api_calls_by_merchant[$m] // 0'; }
status_of() { curl -s -o /dev/null -w '%{http_code}' -H "X-Poynt-Merchant-Id: $1" "$PROXY/businesses/$1/orders"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
since_throttled() { awk -v ms=$(($(now_ms) - THROTTLED_AT)) 'BEGIN {printf "%.2f", ms / 1000}'; }

# Starts A's callers for one window in the background: at A_RATE (oha), or at saturation.
send_a() {
    if [[ $A_RATE == max ]]; then
        taskset -c "$LOADGEN_CPUS" wrk -t1 -c "$A_CONNECTIONS" -d "${WINDOW}s" \
            -H "X-Poynt-Merchant-Id: $A" "$PROXY/businesses/$A/orders" >"$WORK/a.out" 2>&1 &
    else
        taskset -c "$LOADGEN_CPUS" "$OHA" -z "${WINDOW}s" -w -c 10 -q "$A_RATE" --no-tui \
            --output-format json -H "X-Poynt-Merchant-Id: $A" "$PROXY/businesses/$A/orders" >"$WORK/a.out" 2>&1 &
    fi
    SENDER=$!
    PIDS+=("$SENDER")
}
await_a() { wait "$SENDER" || die "A's load generator failed: $(cat "$WORK/a.out")"; }
a_requests() { # what send_a sent (call await_a first)
    if [[ $A_RATE == max ]]; then
        awk '$2 == "requests" && $3 == "in" {print $1}' "$WORK/a.out"
    else
        jq '[.statusCodeDistribution[]] | add' "$WORK/a.out"
    fi
}
# ticks of the listed CPUs over ns nanoseconds -> the share of those CPUs, %
share() { awk -v t="$1" -v ns="$2" -v cpus="$3" -v hz="$HZ" 'BEGIN {printf "%.0f", t / hz / (ns / 1e9) / cpus * 100}'; }

# One window: B at RATE (oha, 16 connections: each connection's first request pays for its
# connect, and those must stay well inside the 1 % tail) while A's callers send. Sets
# W_P99 (B's p99, ms), W_B and W_A (requests sent), W_BUSY (% the load generator's CPUs
# were busy) and W_STEAL (% of the measured CPUs the host took). Stops the run on any B
# answer other than 2xx, a failed B request or fewer requests than the rate asks for.
window() {
    local json start ns busy steal
    busy=$(cpu_stat "$LOADGEN_CPU_NUMBERS" busy)
    steal=$(cpu_stat "$MEASURED_CPU_NUMBERS" steal)
    start=$(date +%s%N)
    send_a
    json=$(taskset -c "$LOADGEN_CPUS" "$OHA" -z "${WINDOW}s" -w -c 16 -q "$RATE" --latency-correction \
        --no-tui --output-format json -H "X-Poynt-Merchant-Id: $B" "$PROXY/businesses/$B/orders")
    await_a
    ns=$(($(date +%s%N) - start))
    W_BUSY=$(share $(($(cpu_stat "$LOADGEN_CPU_NUMBERS" busy) - busy)) "$ns" "$LOADGEN_THREADS")
    W_STEAL=$(share $(($(cpu_stat "$MEASURED_CPU_NUMBERS" steal) - steal)) "$ns" "$MEASURED_CPUS")
    jq -e '(.statusCodeDistribution | keys | all(startswith("2"))) and ((.errorDistribution // {}) == {})' \
        <<<"$json" >/dev/null ||
        die "expected every B request answered 2xx; found statuses $(jq -c .statusCodeDistribution <<<"$json") and errors $(jq -c .errorDistribution <<<"$json")"
    W_B=$(jq '[.statusCodeDistribution[]] | add // 0' <<<"$json")
    ((W_B >= RATE * WINDOW * 9 / 10)) ||
        die "expected at least $((RATE * WINDOW * 9 / 10)) B requests in ${WINDOW}s at $RATE req/s; found $W_B (the load generator could not keep the rate)"
    W_P99=$(jq '.latencyPercentiles.p99 * 1000' <<<"$json")
    W_A=$(a_requests)
}

# A's cool-down: Poynt throttles A, one A request through the proxy meets Poynt's 429 (the
# proxy's marker says so; the only A call Poynt sees), the fault is cleared. THROTTLED_AT
# is taken before that request, so the cool-down ends at least RETRY_AFTER seconds after it.
throttle_a() {
    local before status
    before=$(a_calls)
    fault "{\"api_throttle\": {\"$A\": $RETRY_AFTER}}"
    THROTTLED_AT=$(now_ms)
    status=$(curl -s -o /dev/null -D "$WORK/a-429.head" -w '%{http_code}' -H "X-Poynt-Merchant-Id: $A" \
        "$PROXY/businesses/$A/orders")
    fault '{}'
    A_BEFORE=$(a_calls)
    [[ $status == 429 ]] || die "expected A's request to meet the emulator's 429; found $status"
    tr -d '\r' <"$WORK/a-429.head" | grep -qix 'poynt-proxy-limit-source: poynt' ||
        die "expected A's 429 marked as Poynt's (poynt-proxy-limit-source: poynt); found $(tr -d '\r' <"$WORK/a-429.head" | tr '\n' ' ')"
    ((A_BEFORE - before == 1)) || die "expected Poynt to see one A request for the 429; found $((A_BEFORE - before))"
}

# After the cooled window: polls A (200 tries, 50 ms apart) until Poynt serves it again.
# Sets SERVED_AFTER (seconds from THROTTLED_AT to that answer: 5 or more when the cool-down
# held) and REACHED (A requests Poynt saw before that one: 0 when it held), and adds them to
# the run's totals.
await_a_served() {
    local status _
    for _ in $(seq 1 200); do
        status=$(status_of "$A")
        if [[ $status == 200 ]]; then
            SERVED_AFTER=$(since_throttled)
            REACHED=$(($(a_calls) - A_BEFORE - 1))
            REACHED_TOTAL=$((REACHED_TOTAL + REACHED))
            COOLDOWNS=$((COOLDOWNS + 1))
            SERVED_AFTERS+=("$SERVED_AFTER")
            return 0
        fi
        [[ $status == 429 ]] || die "expected A answered 429 (cooling down) or 200 (served again); found $status"
        sleep 0.05
    done
    die "expected A served again after its ${RETRY_AFTER} s cool-down; still refused $(since_throttled) s after the 429"
}
REACHED_TOTAL=0 COOLDOWNS=0 SERVED_AFTERS=()

# round "served cooled" | "cooled served": both windows in that order. Sets ROW (the tsv
# columns after round and first) and ROUND_STEAL (the larger window's share stolen).
round() {
    local kind served cooled end
    for kind in $1; do
        if [[ $kind == served ]]; then
            window
            served=("$W_P99" "$W_B" "$W_A" "$W_BUSY" "$W_STEAL")
        else
            throttle_a
            window
            end=$(since_throttled)
            awk -v e="$end" -v r="$RETRY_AFTER" 'BEGIN {exit !(e < r)}' ||
                die "expected the cooled window to end inside A's ${RETRY_AFTER} s cool-down; it ended $end s after the 429 (lower WINDOW)"
            cooled=("$W_P99" "$W_B" "$W_A" "$W_BUSY" "$W_STEAL")
            await_a_served
        fi
    done
    ROUND_STEAL=$((served[4] > cooled[4] ? served[4] : cooled[4]))
    ROW=$(printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s' "${served[0]}" "${cooled[0]}" \
        "$(awk -v c="${cooled[0]}" -v s="${served[0]}" 'BEGIN {printf "%.4f", c / s}')" "${served[1]}" "${cooled[1]}" \
        "${served[2]}" "${cooled[2]}" "$REACHED" "$end" "$SERVED_AFTER" "${served[3]}" "${cooled[3]}" "$ROUND_STEAL")
}

say "warming up (tokens for A and B, connections, one round not counted)"
[[ $(status_of "$A") == 200 && $(status_of "$B") == 200 ]] || die "expected A and B served before the run"
round "served cooled"

RESULTS=$OUT/cooldown.tsv
printf 'round\tfirst\tserved_p99_ms\tcooled_p99_ms\tratio\tserved_b_requests\tcooled_b_requests\tserved_a_requests\tcooled_a_requests\ta_reached_poynt\tcooled_window_end_s\ta_served_again_s\tserved_loadgen_busy_pct\tcooled_loadgen_busy_pct\tsteal_pct\tattempts\n' >"$RESULTS"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$ROUNDS"); do
    # Odd rounds measure A served first, even rounds A cooling down first: drift during a
    # round (the machine warming, another tenant) falls on each side equally often.
    if ((r % 2)); then order="served cooled"; else order="cooled served"; fi
    best_row='' best_steal=101
    for attempt in $(seq 1 "$ATTEMPTS"); do
        round "$order"
        if ((ROUND_STEAL < best_steal)); then best_row=$ROW best_steal=$ROUND_STEAL; fi
        ((ROUND_STEAL > STEAL_MAX)) || break
        say "round $r: the host took $ROUND_STEAL % of the CPUs (over $STEAL_MAX %), try $attempt of $ATTEMPTS"
    done
    printf '%s\t%s\t%s\t%s\n' "$r" "${order%% *}" "$best_row" "$attempt" >>"$RESULTS"
    say "round $r ($order): B's p99 $(cut -f1,2 <<<"$best_row" | sed 's/\t/ → /') ms, ratio $(cut -f3 <<<"$best_row")"
done

column() { awk -F'\t' -v c="$1" 'NR > 1 {print $c}' "$RESULTS"; }
RATIO_MEDIAN=$(column 5 | median)
SERVED_MEDIAN=$(column 3 | median)
COOLED_MEDIAN=$(column 4 | median)
RATIO_MIN=$(column 5 | sort -g | head -1)
RATIO_MAX=$(column 5 | sort -g | tail -1)
SERVED_AFTER_MIN=$(printf '%s\n' "${SERVED_AFTERS[@]}" | sort -g | head -1)
SERVED_AFTER_MAX=$(printf '%s\n' "${SERVED_AFTERS[@]}" | sort -g | tail -1)
BUSY_MAX=$({ column 13; column 14; } | sort -g | tail -1)
STEAL_OVER=$(awk -F'\t' -v max="$STEAL_MAX" 'NR > 1 && $15 > max {printf "%s%s (%s %%)", n++ ? ", " : "", $1, $15}' "$RESULTS")
below() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }

{
    echo "# B's p99 while A cools down"
    echo
    echo "$("$BIN" --version), emulator as Poynt, on $CPUS CPUs ($(uname -r)); proxy on CPUs $PROXY_CPUS, emulator, oha and wrk on $LOADGEN_CPUS."
    echo "$ROUNDS rounds after a warm-up round, each two ${WINDOW} s windows in alternating order (odd rounds A served first)."
    echo "B: oha, $RATE req/s evenly spaced, 16 connections, latency corrected: $((RATE * WINDOW)) requests a window, $((RATE * WINDOW / 100)) beyond the p99."
    if [[ $A_RATE == max ]]; then
        echo "A: wrk at saturation, $A_CONNECTIONS connections, in both windows."
    else
        echo "A: oha, $A_RATE req/s, 10 connections, in both windows."
    fi
    echo "Cooled: one Poynt 429 with Retry-After: $RETRY_AFTER for A (the emulator's api_throttle, cleared at once), the window starting right after it."
    echo
    echo "| round | first | B p99 served (ms) | B p99 cooled (ms) | cooled ÷ served | B requests served / cooled | A requests served / cooled | A at Poynt in the cool-down | cooled window ended (s after the 429) | A served again (s after the 429) | load-generator CPUs busy % served / cooled | CPUs stolen % | tries |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' 'NR > 1 {printf "| %s | %s | %.3f | %.3f | %.3f | %s / %s | %s / %s | %s | %s | %s | %s / %s | %s | %s |\n",
        $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16}' "$RESULTS"
    echo
    echo "**B's p99 cooled ÷ served, median of the within-round ratios: $(printf '%.3f' "$RATIO_MEDIAN")** (the decision; issue #24 asks for under 1.10)."
    echo "Ratio of the median p99s: $(printf '%.3f' "$COOLED_MEDIAN") ÷ $(printf '%.3f' "$SERVED_MEDIAN") ms = $(awk -v c="$COOLED_MEDIAN" -v s="$SERVED_MEDIAN" 'BEGIN {printf "%.3f", c / s}'); spread of the within-round ratios: $(printf '%.3f' "$RATIO_MIN") to $(printf '%.3f' "$RATIO_MAX")."
    echo "A requests that reached Poynt during the $COOLDOWNS cool-downs (warm-up and retried rounds included): $REACHED_TOTAL (expected 0); the first A request after each was served $SERVED_AFTER_MIN to $SERVED_AFTER_MAX s after the 429 (expected $RETRY_AFTER or more; polled every 50 ms)."
    echo "B answers other than 2xx: 0 (any one stops the run)."
    DECIDABLE=1
    if below "$BUSY_MAX" "$LOADGEN_MAX" && [[ -z $STEAL_OVER ]]; then
        echo "Decidable: the load generator's CPUs stayed under $LOADGEN_MAX % busy in every window (at most $BUSY_MAX %), and the host took at most $STEAL_MAX % of the CPUs in every round."
    else
        DECIDABLE=0
        echo "**Not decidable**: the load generator's CPUs were up to $BUSY_MAX % busy (limit $LOADGEN_MAX %)${STEAL_OVER:+; the host took over $STEAL_MAX % of the CPUs in rounds $STEAL_OVER after $ATTEMPTS tries}. Run it on a quieter machine, or give the load generator more CPUs (LOADGEN_CPUS)."
    fi
    if below "$RATIO_MEDIAN" 1.10 && ((REACHED_TOTAL == 0)) && ! below "$SERVED_AFTER_MIN" "$RETRY_AFTER"; then
        verdict=holds
    else
        verdict="does not hold"
    fi
    ((DECIDABLE)) || verdict="$verdict (not decidable: see above)"
    echo "Issue #24's figure: **$verdict**."
    echo "Load average (1, 5, 15 min) when measuring started: $LOAD_AT_START; when it ended: $(cut -d' ' -f1-3 /proc/loadavg)."
} >"$OUT/cooldown.md"
cat "$OUT/cooldown.md"
say "raw figures in $RESULTS, report in $OUT/cooldown.md"
