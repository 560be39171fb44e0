#!/usr/bin/env bash
# Side-by-side load run on one machine, all on loopback: poynt-proxy, nginx and HAProxy
# each forward to the same TLS upstream (nginx serving a fixed ~1 KB JSON) with a bearer
# header injected, and the direct call goes to the upstream with no proxy at all.
# poynt-proxy-h2 is a second poynt-proxy whose upstream port offers HTTP/2 (nginx and
# HAProxy forward over HTTP/1.1, as nginx's proxy cannot do otherwise). Every proxy runs
# twice, its access log on (to a file) and off, so each ratio compares like with like.
#
#   benches/load/run.sh --cpu-quota 0.3   # the headline: each proxy capped at 0.3 CPU
#   benches/load/run.sh                   # uncapped: throughput and latency on whole CPUs
#
# (from the repository root, as root; see docs/BENCHMARKS.md)
#
# --cpu-quota F puts each proxy in a cgroup of its own allowed F CPUs (cgroup v2 cpu.max or
# v1 cpu.cfs_quota_us, whichever holds the CPU controller; created here, removed on exit), so
# the proxy rather than the load generator is the bottleneck, as in a pod with a CPU limit.
# It measures saturation only (wrk): requests/s at the cap, the ratio to nginx with the same
# access-log setting, CPU per request, the share of periods in which the kernel throttled the
# proxy, and how busy the load generator's CPUs were: at LOADGEN_MAX % or more they, not the
# cap, may have set the rate, and the report says the measurement is not decidable.
#
# Without it, each round (contestants in rotating order) measures every contestant's
# requests/s at saturation (wrk), with the CPU time each proxy spent per request (user +
# system, its threads and child processes, from /proc), back to back; then every
# contestant's latency at a fixed rate (oha: requests started evenly spaced, each timed from
# when it was due, every request's time kept, percentiles computed here). Reports medians
# over the rounds, the ratios taken within each round, how busy the load generator's CPUs
# were while a proxy was saturated (near 100 %: they, not the proxy, set the rate), peak
# resident memory of each proxy, poynt-proxy's idle memory and the /token calls made while
# measuring. Writes target/load/report.md.
#
# Knobs (environment): ROUNDS (3), DURATION seconds per measurement (8), RATE req/s for
# the latency runs (2000), CONNECTIONS for saturation (64), BASE_PORT (18400),
# PROXY_CPUS (cpu list the proxies run on; default the first CPU), LOADGEN_CPUS (the rest;
# the load generators and the upstream run there), WORKERS (each proxy's threads or
# processes; default the quota rounded up when capped, else the number of PROXY_CPUS),
# KINDS (the proxies to run, space-separated; nginx is required, every ratio is to it; default
# "poynt-proxy poynt-proxy-h2 nginx haproxy"; also poynt-proxy-jwt: poynt-proxy with callers
# authenticated by a JWT bearer, the caller sending one; poynt-proxy-traced: poynt-proxy
# exporting traces at 1 % sampling to the emulator's OTLP sink), LOADGEN_MAX (80), STEAL_MAX
# (3: a measurement during which the host took more than this % of the CPUs is tried again)
# and ATTEMPTS (4 tries at most; a measurement the machine was paused in is tried again too),
# OHA (an oha binary to use; by default the pinned version is built once into
# target/load/tools with cargo install; not needed with --cpu-quota), POYNT_PROXY (a
# poynt-proxy binary to run instead of the release build scripts/release.sh makes here;
# benches/pgo/train.sh gives it its instrumented one), KEEP=1 keeps the work directory.
# Ports BASE_PORT+1..+3, +10..+25.
set -euo pipefail

say() { echo "load: $*" >&2; }
die() { say "$*"; exit 1; }
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "$0")/common.sh"

CPU_QUOTA=
while (($# > 0)); do
    case $1 in
    --cpu-quota) (($# >= 2)) || die "--cpu-quota expects a number of CPUs (0.3, say); found nothing"
        CPU_QUOTA=$2; shift 2 ;;
    --cpu-quota=*) CPU_QUOTA=${1#*=}; shift ;;
    *) die "expected no argument or --cpu-quota F; found '$1'" ;;
    esac
done
CFS_PERIOD_US=100000
if [[ -n $CPU_QUOTA ]]; then
    [[ $CPU_QUOTA =~ ^[0-9]*\.?[0-9]+$ ]] || die "--cpu-quota expects a number of CPUs (0.3, say); found '$CPU_QUOTA'"
    QUOTA_US=$(awk -v f="$CPU_QUOTA" -v p="$CFS_PERIOD_US" 'BEGIN {printf "%d", f * p}')
    # The kernel's smallest CFS quota is 1 ms per period.
    ((QUOTA_US >= 1000)) || die "--cpu-quota expects at least 0.01 CPU; found $CPU_QUOTA"
    [[ $(id -u) == 0 ]] || die "--cpu-quota creates cgroups and must run as root"
fi

ROUNDS=${ROUNDS:-3}
STEAL_MAX=${STEAL_MAX:-3}
ATTEMPTS=${ATTEMPTS:-4}
DURATION=${DURATION:-8}
RATE=${RATE:-2000}
CONNECTIONS=${CONNECTIONS:-64}
BASE_PORT=${BASE_PORT:-18400}
LOADGEN_MAX=${LOADGEN_MAX:-80}
CPUS=$(nproc)
if ((CPUS < 2)); then
    die "needs at least 2 CPUs (found $CPUS): the proxies and the load generator must not share one"
fi
PROXY_CPUS=${PROXY_CPUS:-0}
LOADGEN_CPUS=${LOADGEN_CPUS:-1-$((CPUS - 1))}

PROXY_THREADS=$(cpu_count "$PROXY_CPUS")
LOADGEN_THREADS=$(cpu_count "$LOADGEN_CPUS")
# Capped, every proxy gets as many workers as poynt-proxy's default would under that quota
# (rounded up); uncapped, one per CPU it runs on.
if [[ -n $CPU_QUOTA ]]; then
    WORKERS=${WORKERS:-$(((QUOTA_US + CFS_PERIOD_US - 1) / CFS_PERIOD_US))}
    if ((QUOTA_US > PROXY_THREADS * CFS_PERIOD_US)); then
        say "warning: a quota of $CPU_QUOTA CPUs is more than the $PROXY_THREADS CPU(s) the proxies run on (PROXY_CPUS=$PROXY_CPUS)"
    fi
else
    WORKERS=${WORKERS:-$PROXY_THREADS}
fi

UPSTREAM_PORT=$((BASE_PORT + 1))
EMULATOR_PORT=$((BASE_PORT + 2))
UPSTREAM_H2_PORT=$((BASE_PORT + 3))
NEXT_PORT=$((BASE_PORT + 10)) # then one port per proxy, and an admin port per poynt-proxy
MERCHANT=5a2c1e7e-1b8e-4d4e-9f7a-3c2b1a0f9e8d
APP_ID=urn:aid:4f1c2a3b-load-bench
PATH_Q="/businesses/$MERCHANT/orders?limit=10"

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/target/load
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/poynt-load.XXXXXX)
PIDS=()
CGROUPS=() # made here, removed on exit, innermost last
declare -A PID # name -> pid of what start() started

cleanup() {
    local pid dir i
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    # A cgroup can be removed once its last process is gone (reaped above); nginx's workers
    # leave with their master. Innermost first.
    for ((i = ${#CGROUPS[@]} - 1; i >= 0; i--)); do
        dir=${CGROUPS[i]}
        rmdir "$dir" 2>/dev/null || { sleep 0.5; rmdir "$dir"; } || say "could not remove the cgroup $dir"
    done
    if [[ ${KEEP:-0} == 1 ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -----------------------------------------------------------------------------
install_missing() {
    local missing=() tool package
    for pair in nginx:nginx-light haproxy:haproxy wrk:wrk openssl:openssl curl:curl taskset:util-linux; do
        tool=${pair%%:*} package=${pair#*:}
        command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then return 0; fi
    if [[ $(id -u) != 0 ]]; then
        die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    fi
    say "installing ${missing[*]}"
    # Packages must not start their system services (nginx on port 80, haproxy).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if ((made_policy)); then rm -f "$policy"; fi
}
install_missing
export PATH=$PATH:/usr/sbin

# The fixed-rate load generator, for the uncapped mode only. hey's -q paces each of its
# connections on its own ticker, all started together: 2,000 req/s over 50 connections
# arrive as a burst of 50 every 25 ms, and its percentiles measure how fast a proxy drains a
# burst. oha starts requests evenly spaced across the second and times each from when it
# was due (no coordinated omission). Not packaged by Debian: built from crates.io once (a
# few minutes).
OHA_VERSION=1.16.0
OHA=${OHA:-$OUT/tools/bin/oha}
if [[ -z $CPU_QUOTA && ! -x $OHA ]]; then
    say "building oha $OHA_VERSION (once, into $OUT/tools)"
    cargo install oha --version "$OHA_VERSION" --locked --quiet --root "$OUT/tools"
fi

if [[ -n ${POYNT_PROXY:-} ]]; then
    BIN=$POYNT_PROXY
    [[ -x $BIN ]] || die "POYNT_PROXY expects an executable poynt-proxy; found '$BIN'"
else
    say "building poynt-proxy (release)"
    "$ROOT/scripts/release.sh" --quiet
    BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/poynt-proxy
fi

# --- cgroups: one per proxy, each allowed QUOTA_US of CPU time per CFS_PERIOD_US -----------
# cgroup v2 where its hierarchy holds the CPU controller (at /sys/fs/cgroup, or beside v1
# ones at /sys/fs/cgroup/unified), else v1's cpu controller.
CGROUP_KIND='' CGROUP_PARENT=''
cgroup_prepare() {
    local base
    for base in /sys/fs/cgroup /sys/fs/cgroup/unified; do
        if [[ -f $base/cgroup.controllers ]] && grep -qw cpu "$base/cgroup.controllers"; then
            CGROUP_KIND=v2
            grep -qw cpu "$base/cgroup.subtree_control" || echo +cpu >"$base/cgroup.subtree_control"
            break
        fi
    done
    if [[ -z $CGROUP_KIND ]]; then
        for base in /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct; do
            if [[ -f $base/cpu.cfs_quota_us ]]; then CGROUP_KIND=v1 && break; fi
        done
    fi
    [[ -n $CGROUP_KIND ]] || die "found no cgroup CPU controller (v2 cgroup.controllers with cpu, or v1 cpu.cfs_quota_us under /sys/fs/cgroup)"
    CGROUP_PARENT=$base/poynt-load-$$
    mkdir "$CGROUP_PARENT"
    CGROUPS+=("$CGROUP_PARENT")
    if [[ $CGROUP_KIND == v2 ]]; then echo +cpu >"$CGROUP_PARENT/cgroup.subtree_control"; fi
}
declare -A CGROUP # proxy name -> its cgroup's directory
cgroup_for() { # name: a new cgroup with the quota for that proxy, in CGROUP[name]
    local dir=$CGROUP_PARENT/$1
    mkdir "$dir"
    CGROUPS+=("$dir")
    CGROUP[$1]=$dir
    if [[ $CGROUP_KIND == v2 ]]; then
        echo "$QUOTA_US $CFS_PERIOD_US" >"$dir/cpu.max"
    else
        echo "$CFS_PERIOD_US" >"$dir/cpu.cfs_period_us"
        echo "$QUOTA_US" >"$dir/cpu.cfs_quota_us"
    fi
}
throttled() { # cgroup directory -> "periods throttled-periods" so far (cpu.stat, v1 and v2)
    awk '$1 == "nr_periods" {p = $2} $1 == "nr_throttled" {t = $2} END {print p + 0, t + 0}' "$1/cpu.stat"
}
if [[ -n $CPU_QUOTA ]]; then cgroup_prepare; fi

# --- certificates: a CA and a leaf for localhost / 127.0.0.1 -----------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=poynt-load-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$WORK/upstream.key" -out "$WORK/upstream.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/upstream.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/leaf.ext" -out "$WORK/upstream.crt" 2>/dev/null

# --- configs from the templates next to this script --------------------------------------
BODY='{"businessId":"'$MERCHANT'","orders":['
for i in 0 1 2 3 4 5 6 7 8; do
    BODY+='{"id":"0b5e8e66-2c4f-4f6e-9d0a-2f1c6b1e4a7'$i'","amount":1250,"currency":"USD","status":"COMPLETED"},'
done
BODY+='{"id":"0b5e8e66-2c4f-4f6e-9d0a-2f1c6b1e4a79","amount":990,"currency":"USD","status":"OPENED"}]}'

render() { # template -> file, replacing @NAME@ with the shell variable NAME
    local text name
    text=$(<"$ROOT/benches/load/$1")
    for name in WORK DIR UPSTREAM_PORT UPSTREAM_H2_PORT EMULATOR_PORT LISTEN_PORT ADMIN_PORT WORKERS BODY \
        TOKEN APP_ID EMULATOR_URL LOG_LEVEL ACCESS ACCESS_LOG HAPROXY_LOG; do
        text=${text//@$name@/${!name:-}}
    done
    printf '%s\n' "$text" >"$WORK/$2"
}

# start name cpus command...: start in the background, stdout and stderr appended to
# $WORK/name.out (appended, so emptying it between measurements frees the space), and
# remember the pid.
start() {
    local name=$1 cpus=$2
    shift 2
    taskset -c "$cpus" "$@" >>"$WORK/$name.out" 2>&1 &
    PIDS+=($!)
    PID[$name]=$!
}

# start_proxy name command...: start a contestant on PROXY_CPUS; capped, inside a cgroup of
# its own: the shell joins it and then becomes the command, so every thread and child
# process the proxy makes is inside from its first instruction.
start_proxy() {
    local name=$1
    shift
    if [[ -n $CPU_QUOTA ]]; then
        cgroup_for "$name"
        # shellcheck disable=SC2016 # $$ and $@ are the inner shell's
        start "$name" "$PROXY_CPUS" sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "${CGROUP[$name]}" "$@"
    else
        start "$name" "$PROXY_CPUS" "$@"
    fi
}

# --- upstream and emulator -----------------------------------------------------------------
mkdir -p "$WORK/nginx-upstream"
render nginx-upstream.conf nginx-upstream.conf
start upstream "$LOADGEN_CPUS" nginx -p "$WORK/nginx-upstream" -c "$WORK/nginx-upstream.conf" -e "$WORK/nginx-upstream.err"
wait_ready "https://127.0.0.1:$UPSTREAM_PORT/" --cacert "$WORK/ca.crt"

start emulator "$LOADGEN_CPUS" env RUST_LOG=warn "$BIN" emulator --listen "127.0.0.1:$EMULATOR_PORT" \
    --app-id "$APP_ID" --app-private-key-out "$WORK/app-key.pem" --merchant "$MERCHANT"
EMULATOR_URL=http://127.0.0.1:$EMULATOR_PORT
wait_ready "$EMULATOR_URL/_emulator/stats"

# The static header nginx, HAProxy and the direct call send: a real token of the
# emulator's (same size as the one poynt-proxy injects), minted without a grant.
TOKEN=$(curl -sf -X POST "$EMULATOR_URL/_emulator/merchants/$MERCHANT/token" |
    sed -n 's/.*"accessToken":"\([^"]*\)".*/\1/p')
[[ -n $TOKEN ]] || die "the emulator minted no token"

# --- contestants -----------------------------------------------------------------------------
# A proxy's name is its kind and whether its access log is on: nginx.log, nginx.nolog. Its
# access log goes to a file: nginx's own, the others' stdout ($WORK/name.out).
read -ra KINDS <<<"${KINDS:-poynt-proxy poynt-proxy-h2 nginx haproxy}"
for kind in "${KINDS[@]}"; do
    case $kind in
    poynt-proxy | poynt-proxy-h2 | poynt-proxy-jwt | poynt-proxy-traced | nginx | haproxy) ;;
    *) die "KINDS expects names among poynt-proxy poynt-proxy-h2 poynt-proxy-jwt poynt-proxy-traced nginx haproxy; found '$kind'" ;;
    esac
done
[[ " ${KINDS[*]} " == *" nginx "* ]] || die "KINDS must name nginx (every ratio is to it); found '${KINDS[*]}'"
has_kind() { [[ " ${KINDS[*]} " == *" $1 "* ]]; }

# A caller's JWT for poynt-proxy-jwt: an RSA key of the caller's issuer, its JWKS, and a
# day-long RS256 token (verified once, then cached by the proxy until it expires).
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
if has_kind poynt-proxy-jwt; then
    openssl genrsa -out "$WORK/issuer.key" 2048 2>/dev/null
    hex=$(openssl rsa -in "$WORK/issuer.key" -noout -modulus | cut -d= -f2)
    # shellcheck disable=SC2059,SC2001 # the format is the modulus's bytes as \x escapes
    modulus=$(printf "$(sed 's/../\\x&/g' <<<"$hex")" | b64url)
    printf '{"keys":[{"kty":"RSA","kid":"load","alg":"RS256","use":"sig","n":"%s","e":"AQAB"}]}\n' "$modulus" >"$WORK/jwks.json"
    now=$(date +%s)
    claims=$(printf '{"iss":"https://issuer.load","aud":"poynt-proxy","sub":"load","iat":%d,"nbf":%d,"exp":%d}' \
        "$now" "$((now - 60))" "$((now + 86400))" | b64url)
    signed="$(printf '{"alg":"RS256","kid":"load","typ":"JWT"}' | b64url).$claims"
    CALLER_JWT="$signed.$(printf '%s' "$signed" | openssl dgst -sha256 -sign "$WORK/issuer.key" -binary | b64url)"
fi
LOGS=(log nolog)
PROXY_NAMES=()
for kind in "${KINDS[@]}"; do for logs in "${LOGS[@]}"; do PROXY_NAMES+=("$kind.$logs"); done; done
declare -A URL HEADER AUTH ACCESS_FILE # AUTH: a second header, the caller's credential
URL[direct]="https://127.0.0.1:$UPSTREAM_PORT$PATH_Q"
HEADER[direct]="Authorization: Bearer $TOKEN"
IDLE_RSS_KB=
# shellcheck disable=SC2034 # LOG_LEVEL, ACCESS, ACCESS_LOG and HAPROXY_LOG are read by render
for name in "${PROXY_NAMES[@]}"; do
    kind=${name%.*} logs=${name#*.}
    LISTEN_PORT=$NEXT_PORT ADMIN_PORT=$((NEXT_PORT + 1))
    NEXT_PORT=$((NEXT_PORT + 2))
    URL[$name]="http://127.0.0.1:$LISTEN_PORT$PATH_Q"
    HEADER[$name]="X-Poynt-Merchant-Id: $MERCHANT"
    DIR=$WORK/$name
    mkdir -p "$DIR"
    case $kind in
    poynt-proxy | poynt-proxy-h2 | poynt-proxy-jwt | poynt-proxy-traced)
        LOG_LEVEL=info ACCESS=off
        if [[ $logs == log ]]; then ACCESS=on ACCESS_FILE[$name]=$WORK/$name.out; fi
        # The HTTP/2 variant: the same template in front of the upstream's HTTP/2 port.
        [[ $kind == poynt-proxy-h2 ]] && upstream=$UPSTREAM_H2_PORT || upstream=$UPSTREAM_PORT
        UPSTREAM_PORT=$upstream render poynt-proxy.yaml "$name.yaml"
        if [[ $kind == poynt-proxy-jwt ]]; then
            AUTH[$name]="Authorization: Bearer $CALLER_JWT"
            printf 'callers:\n  authentication:\n    jwt:\n      issuer: "https://issuer.load"\n      audience: poynt-proxy\n      jwks_file: "%s"\n  policy:\n    load:\n      merchants: ["%s"]\n      allow: ["GET /businesses/*/orders"]\n' \
                "$WORK/jwks.json" "$MERCHANT" >>"$WORK/$name.yaml"
        fi
        # The emulator (on LOADGEN_CPUS) takes OTLP/HTTP at /v1/traces and discards it.
        if [[ $kind == poynt-proxy-traced ]]; then
            printf 'telemetry:\n  traces:\n    endpoint: "%s"\n    sample_ratio: 0.01\n' \
                "$EMULATOR_URL" >>"$WORK/$name.yaml"
        fi
        # RUST_LOG would take log.level's place.
        start_proxy "$name" env -u RUST_LOG "$BIN" run --config "$WORK/$name.yaml"
        wait_ready "http://127.0.0.1:$ADMIN_PORT/readyz"
        [[ -n $IDLE_RSS_KB ]] || IDLE_RSS_KB=$(awk '/^VmRSS:/ {print $2}' "/proc/${PID[$name]}/status")
        ;;
    nginx)
        ACCESS_LOG=off
        if [[ $logs == log ]]; then ACCESS_LOG="$DIR/access.log poynt" ACCESS_FILE[$name]=$DIR/access.log; fi
        render nginx-proxy.conf "$name.conf"
        start_proxy "$name" nginx -p "$DIR" -c "$WORK/$name.conf" -e "$DIR/error.log"
        ;;
    haproxy)
        HAPROXY_LOG=''
        if [[ $logs == log ]]; then HAPROXY_LOG="log stdout format raw local0" ACCESS_FILE[$name]=$WORK/$name.out; fi
        render haproxy.cfg "$name.cfg"
        start_proxy "$name" haproxy -db -f "$WORK/$name.cfg"
        ;;
    esac
done

if [[ -n $CPU_QUOTA ]]; then
    # The direct call is not capped and would measure the load generator alone.
    CONTESTANTS=("${PROXY_NAMES[@]}")
else
    CONTESTANTS=(direct "${PROXY_NAMES[@]}")
fi
headers() { # name -> the -H arguments its requests carry, one a line
    printf -- '-H\n%s\n' "${HEADER[$1]}"
    [[ -z ${AUTH[$1]:-} ]] || printf -- '-H\n%s\n' "${AUTH[$1]}"
}
for name in "${CONTESTANTS[@]}"; do
    mapfile -t args < <(headers "$name")
    wait_ready "${URL[$name]}" -k "${args[@]}"
    [[ $(curl -sk "${args[@]}" "${URL[$name]}") == "$BODY" ]] || die "$name does not return the upstream's body"
    if [[ -n ${AUTH[$name]:-} ]]; then
        status=$(curl -sk -o /dev/null -w '%{http_code}' -H "${HEADER[$name]}" "${URL[$name]}")
        [[ $status == 401 ]] || die "$name answered $status to a request without the caller's credential, expected 401"
    fi
done
for name in "${!ACCESS_FILE[@]}"; do
    grep -q "$MERCHANT" "${ACCESS_FILE[$name]}" || die "$name wrote no access-log line to ${ACCESS_FILE[$name]}"
done
# A line of request traffic: poynt-proxy's access target, or another proxy's line naming
# the merchant (poynt-proxy's other info lines, e.g. a grant, name it too).
traffic_lines() {
    { grep "$MERCHANT" "$1" | grep -v '"target":"poynt_proxy::' || true; } | cat - <(grep '"target":"poynt_proxy::access"' "$1" || true)
}
for name in "${PROXY_NAMES[@]}"; do
    if [[ -z ${ACCESS_FILE[$name]:-} && -s $WORK/$name.out && -n $(traffic_lines "$WORK/$name.out") ]]; then
        die "$name logged requests with its access log off"
    fi
done
# Access logs grow by ~250 bytes a request; emptied after each measurement (the writers
# append, so they carry on at the start of the file).
empty_access_logs() {
    local name
    for name in "${!ACCESS_FILE[@]}"; do : >"${ACCESS_FILE[$name]}"; done
}

token_calls() { curl -sf "$EMULATOR_URL/_emulator/stats" | sed -n 's/.*"token_calls_total":\([0-9]*\).*/\1/p'; }

cpu_ticks() { # pid -> user + system clock ticks of the process, its threads and its children
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}

LOADGEN_CPU_NUMBERS=$(cpu_numbers "$LOADGEN_CPUS")
MEASURED_CPU_NUMBERS="$(cpu_numbers "$PROXY_CPUS")$LOADGEN_CPU_NUMBERS"
MEASURED_CPUS=$((PROXY_THREADS + LOADGEN_THREADS))
HZ=$(getconf CLK_TCK)

# saturate name [seconds] -> "requests/s CPU-µs-per-request upstream-CPU-µs-per-request
# load-generator-CPUs-busy-% throttled-periods-%" (fails on any error or non-2xx answer).
# The upstream's share tells whether a proxy makes the upstream (which shares the load
# generator's CPUs) work harder per request; the busy figure whether those CPUs, not the
# proxy's, set the rate; the throttled share (capped only) whether the cap did.
# paused start-ns seconds: whether a measurement started at start-ns (date +%s%N) and meant
# to last seconds took far longer. wrk and oha end on their own clocks whatever the proxy
# does, so only a machine that stopped running (a VM paused by its host, for a snapshot,
# say) makes them late; every request in flight then looks like a proxy's stall (wrk:
# "timeout"). Such a measurement says nothing about the proxy and is made again.
paused() {
    local took_ms=$((($(date +%s%N) - $1) / 1000000))
    ((took_ms > $2 * 1500 + 3000)) || return 1
    say "a $2 s measurement took $took_ms ms: the machine was paused meanwhile; measuring again"
}

saturate() {
    local name=$1 out before=0 after=0 requests up_before up_after busy_before busy_after args
    mapfile -t args < <(headers "$name")
    local periods_before=0 throttled_before=0 periods_after=0 throttled_after=0
    [[ -n ${PID[$name]:-} ]] && before=$(cpu_ticks "${PID[$name]}")
    [[ -n ${CGROUP[$name]:-} ]] && read -r periods_before throttled_before < <(throttled "${CGROUP[$name]}")
    up_before=$(cpu_ticks "${PID[upstream]}")
    busy_before=$(cpu_stat "$LOADGEN_CPU_NUMBERS" busy)
    local started_ns
    started_ns=$(date +%s%N)
    out=$(taskset -c "$LOADGEN_CPUS" wrk -t"$LOADGEN_THREADS" -c"$CONNECTIONS" -d"${2:-$DURATION}s" \
        "${args[@]}" "${URL[$name]}")
    if paused "$started_ns" "${2:-$DURATION}"; then
        echo paused
        return
    fi
    [[ -n ${PID[$name]:-} ]] && after=$(cpu_ticks "${PID[$name]}")
    [[ -n ${CGROUP[$name]:-} ]] && read -r periods_after throttled_after < <(throttled "${CGROUP[$name]}")
    up_after=$(cpu_ticks "${PID[upstream]}")
    busy_after=$(cpu_stat "$LOADGEN_CPU_NUMBERS" busy)
    empty_access_logs
    if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
        say "$name answered errors under load:"
        echo "$out" >&2
        exit 1
    fi
    requests=$(awk '$2 == "requests" && $3 == "in" {print $1}' <<<"$out")
    awk -v rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" -v ticks=$((after - before)) \
        -v hz="$HZ" -v n="$requests" -v proxy="${PID[$name]:-}" -v up=$((up_after - up_before)) \
        -v busy=$((busy_after - busy_before)) -v cpus="$LOADGEN_THREADS" -v seconds="${2:-$DURATION}" \
        -v periods=$((periods_after - periods_before)) -v throttled=$((throttled_after - throttled_before)) \
        'BEGIN {printf "%s %s %.2f %.0f %s\n", rps, proxy == "" ? "-" : sprintf("%.2f", ticks / hz * 1e6 / n), up / hz * 1e6 / n,
            busy / hz / seconds / cpus * 100, (periods > 0 ? sprintf("%.0f", throttled / periods * 100) : "-")}'
}

fixed_rate() { # name -> "p50 p99 p99.9 count", milliseconds
    local name=$1 args
    local csv=$WORK/oha-$name.csv
    mapfile -t args < <(headers "$name")
    # --insecure for the direct call only matters there: the load generator does not know the
    # upstream's private CA (hey, which this replaced, did not verify either).
    local started_ns
    started_ns=$(date +%s%N)
    taskset -c "$LOADGEN_CPUS" "$OHA" -z "${DURATION}s" -w -c 50 -q "$RATE" --latency-correction --insecure \
        --no-tui --output-format csv "${args[@]}" "${URL[$name]}" >"$csv"
    empty_access_logs
    if paused "$started_ns" "$DURATION"; then
        echo paused
        return
    fi
    # Columns: request-start, DNS, DNS+dialup, response-delay, request-duration (s), bytes, status.
    # A request that failed has no row: fewer rows than requests due is a failure too.
    local due=$((RATE * DURATION * 9 / 10))
    if awk -F, -v due="$due" 'NR > 1 && $7 != 200 {bad++} END {exit bad > 0 || NR - 1 < due ? 0 : 1}' "$csv"; then
        die "$name answered $(($(wc -l <"$csv") - 1)) requests at the fixed rate (at least $due due), or some non-200"
    fi
    awk -F, 'NR > 1 {print $5 * 1000}' "$csv" | sort -g | awk '
        function rank(q,  i) { i = int(NR * q); if (i < NR * q) i++; if (i < 1) i = 1; return v[i] }
        {v[NR] = $1}
        END { if (NR == 0) exit 1; printf "%.3f %.3f %.3f %d\n", rank(0.5), rank(0.99), rank(0.999), NR }'
}

# calm measure name -> the measurement's output and the share (%) of the measured CPUs the
# host took while it ran, from the first of ATTEMPTS tries during which that share stayed at
# or under STEAL_MAX, else from the try with the least. On a shared VM the host's steal is
# the largest noise (a proxy measured while the host took a third of the CPUs loses a third
# of its rate); every contestant passes the same gate, judged by the host, not the result.
# A try during which the machine was paused (see paused) is no measurement and is not kept.
calm() {
    local measure=$1 name=$2 attempt out start steal_before steal_after pct best_out best_pct=101
    for attempt in $(seq 1 "$ATTEMPTS"); do
        steal_before=$(cpu_stat "$MEASURED_CPU_NUMBERS" steal)
        start=$(date +%s%N)
        out=$("$measure" "$name")
        steal_after=$(cpu_stat "$MEASURED_CPU_NUMBERS" steal)
        [[ $out == paused ]] && continue
        pct=$(awk -v ticks=$((steal_after - steal_before)) -v hz="$HZ" -v ns=$(($(date +%s%N) - start)) \
            -v cpus="$MEASURED_CPUS" 'BEGIN {printf "%.0f", ticks / hz / (ns / 1e9) / cpus * 100}')
        if ((pct < best_pct)); then best_out=$out best_pct=$pct; fi
        if ((pct <= STEAL_MAX)); then break; fi
        say "$name: the host took $pct % of the CPUs during the $measure run (over $STEAL_MAX %), try $attempt of $ATTEMPTS"
    done
    echo "$best_out $best_pct"
}

say "warming up"
for name in "${CONTESTANTS[@]}"; do saturate "$name" 2 >/dev/null; done

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
TOKEN_CALLS_BEFORE=$(token_calls)
RESULTS=$OUT/results.tsv
printf 'round\tcontestant\trps\tp50_ms\tp99_ms\tp999_ms\trequests\tcpu_us_per_request\tupstream_cpu_us_per_request\tloadgen_busy_pct\tsteal_pct\tlatency_steal_pct\tthrottled_pct\n' >"$RESULTS"
# Within a round the saturation runs come back to back, so the two proxies a ratio compares
# are measured seconds apart rather than a minute: the machine's speed drifts less between.
declare -A RPS CPU UPSTREAM_CPU LOADGEN_BUSY STEAL THROTTLED
for round in $(seq 1 "$ROUNDS"); do
    ORDER=()
    for i in "${!CONTESTANTS[@]}"; do ORDER+=("${CONTESTANTS[$(((i + round - 1) % ${#CONTESTANTS[@]}))]}"); done
    for name in "${ORDER[@]}"; do
        read -r "RPS[$name]" "CPU[$name]" "UPSTREAM_CPU[$name]" "LOADGEN_BUSY[$name]" "THROTTLED[$name]" "STEAL[$name]" \
            < <(calm saturate "$name")
        [[ -n ${STEAL[$name]} ]] || die "round $round: the saturation run of $name failed"
        say "round $round $name: ${RPS[$name]} req/s, CPU ${CPU[$name]} µs/request (upstream ${UPSTREAM_CPU[$name]}," \
            "load-generator CPUs ${LOADGEN_BUSY[$name]} % busy, throttled in ${THROTTLED[$name]} % of periods," \
            "${STEAL[$name]} % stolen by the host)"
    done
    for name in "${ORDER[@]}"; do
        p50=- p99=- p999=- count=- latency_steal=-
        if [[ -z $CPU_QUOTA ]]; then
            read -r p50 p99 p999 count latency_steal < <(calm fixed_rate "$name")
            [[ -n $latency_steal ]] || die "round $round: the fixed-rate run of $name failed"
            say "round $round $name: at $RATE req/s p50 $p50 ms, p99 $p99 ms, p99.9 $p999 ms ($latency_steal % stolen)"
        fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$name" "${RPS[$name]}" "$p50" "$p99" "$p999" \
            "$count" "${CPU[$name]}" "${UPSTREAM_CPU[$name]}" "${LOADGEN_BUSY[$name]}" "${STEAL[$name]}" "$latency_steal" \
            "${THROTTLED[$name]}" >>"$RESULTS"
    done
done
TOKEN_CALLS_DURING=$(($(token_calls) - TOKEN_CALLS_BEFORE))

peak_kb() { # pid and its children, summed
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}
declare -A PEAK
for name in "${PROXY_NAMES[@]}"; do PEAK[$name]=$(peak_kb "${PID[$name]}"); done

column_of() { awk -F'\t' -v n="$1" -v c="$2" 'NR > 1 && $2 == n {print $c}' "$RESULTS" | median; }
ratio() { awk -v a="$(column_of "$1" "$3")" -v b="$(column_of "$2" "$3")" 'BEGIN {printf "%.2f", a / b}'; }
peak_ratio() { awk -v a="${PEAK[$1]}" -v b="${PEAK[$2]}" 'BEGIN {printf "%.2f", a / b}'; }
# The same ratios taken within each round (measurements seconds apart) and then the median
# over the rounds: a shared machine's speed drifts during a run, and this cancels the drift
# that the ratio of two medians keeps.
paired() { # ours other column -> median over rounds of ours / other
    awk -F'\t' -v a="$1" -v b="$2" -v c="$3" '
        NR > 1 && $2 == a {x[$1] = $c}
        NR > 1 && $2 == b {y[$1] = $c}
        END {for (r in x) if ((r in y) && x[r] != "-" && y[r] > 0) printf "%.4f\n", x[r] / y[r]}' "$RESULTS" | median
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
logs_of() { [[ $1 == *.log ]] && echo on || echo off; }

REPORT=$OUT/report.md
{
    echo "Machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $CPUS CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); $(uname -sr)."
    if [[ -n $CPU_QUOTA ]]; then
        echo "Capped: each proxy in a cgroup of its own ($CGROUP_KIND) allowed $CPU_QUOTA CPU ($QUOTA_US µs every $CFS_PERIOD_US µs), $WORKERS worker thread/process each, on CPUs $PROXY_CPUS; wrk and the upstream on CPUs $LOADGEN_CPUS."
        echo "$ROUNDS rounds; saturation: wrk, $CONNECTIONS connections, ${DURATION}s. Access log on: poynt-proxy at its default level (info), nginx and HAProxy writing JSON lines of the same fields to a file; off: poynt-proxy with log.access off."
    else
        echo "Proxies on CPUs $PROXY_CPUS ($WORKERS worker thread/process each); wrk, oha and the upstream on CPUs $LOADGEN_CPUS."
        echo "$ROUNDS rounds; saturation: wrk, $CONNECTIONS connections, ${DURATION}s; latency: oha, $RATE req/s evenly spaced, 50 connections, ${DURATION}s."
    fi
    echo "A measurement during which the host took over $STEAL_MAX % of the CPUs was tried again (at most $ATTEMPTS tries, the calmest kept)."
    oha_version=''
    [[ -n $CPU_QUOTA ]] || oha_version=", $("$OHA" --version)"
    echo "Versions: $("$BIN" --version), $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | head -1 | cut -d' ' -f1-3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)$oha_version."
    echo
    if [[ -n $CPU_QUOTA ]]; then
        echo "| contestant | access log | req/s at $CPU_QUOTA CPU (median) | ÷ nginx, same log (within rounds) | CPU µs/request | ÷ nginx | throttled periods % | load-generator CPUs busy % | CPUs stolen % | peak RSS MiB |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        for name in "${CONTESTANTS[@]}"; do
            nginx=nginx.${name#*.}
            printf '| %s | %s | %.0f | %s (%.2f) | %s | %s | %s | %s | %s | %s |\n' "${name%.*}" "$(logs_of "$name")" \
                "$(column_of "$name" 3)" "$(ratio "$name" "$nginx" 3)" "$(paired "$name" "$nginx" 3)" "$(column_of "$name" 8)" \
                "$(ratio "$name" "$nginx" 8)" "$(column_of "$name" 13)" "$(column_of "$name" 10)" "$(column_of "$name" 11)" \
                "$(mib "${PEAK[$name]}")"
        done
        echo
        echo "| the access log's cost: CPU per request, on ÷ off | |"
        echo "|---|---:|"
        for kind in "${KINDS[@]}"; do
            printf '| %s | %s (within rounds %.2f) |\n' "$kind" "$(ratio "$kind.log" "$kind.nolog" 8)" "$(paired "$kind.log" "$kind.nolog" 8)"
        done
        echo
        # What a feature costs: CPU per request of poynt-proxy with it on ÷ without it.
        for variant in poynt-proxy-jwt poynt-proxy-traced; do
            if ! has_kind poynt-proxy || ! has_kind "$variant"; then continue; fi
            echo "| CPU per request, $variant ÷ poynt-proxy | |"
            echo "|---|---:|"
            for logs in "${LOGS[@]}"; do
                printf '| access log %s | %s (within rounds %.2f) |\n' "$(logs_of "x.$logs")" \
                    "$(ratio "$variant.$logs" "poynt-proxy.$logs" 8)" "$(paired "$variant.$logs" "poynt-proxy.$logs" 8)"
            done
            echo
        done
        undecided=()
        for name in "${CONTESTANTS[@]}"; do
            busy=$(column_of "$name" 10)
            if awk -v b="$busy" -v max="$LOADGEN_MAX" 'BEGIN {exit !(b >= max)}'; then undecided+=("$name ($busy %)"); fi
        done
        if ((${#undecided[@]} == 0)); then
            echo "Decidable: the load generator's CPUs stayed under $LOADGEN_MAX % busy in every contestant's median, so the cap set the rates."
        else
            echo "**Not decidable**: the load generator's CPUs were $LOADGEN_MAX % busy or more while measuring $(printf '%s, ' "${undecided[@]}" | sed 's/, $//'): they, not the cap, may have set those rates. Lower --cpu-quota, or give the load generator more CPUs (LOADGEN_CPUS)."
        fi
    else
        echo "| contestant | access log | req/s (median) | CPU µs/request | upstream CPU µs/request | load-generator CPUs busy % | CPUs stolen % (saturation / latency) | p50 ms | p99 ms | p99.9 ms | peak RSS MiB |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        for name in "${CONTESTANTS[@]}"; do
            logs=
            [[ $name != direct ]] && logs=$(logs_of "$name")
            printf '| %s | %s | %.0f | %s | %s | %s | %s / %s | %s | %s | %s | %s |\n' "${name%.*}" "$logs" "$(column_of "$name" 3)" \
                "$(column_of "$name" 8)" "$(column_of "$name" 9)" "$(column_of "$name" 10)" "$(column_of "$name" 11)" \
                "$(column_of "$name" 12)" "$(column_of "$name" 4)" "$(column_of "$name" 5)" "$(column_of "$name" 6)" \
                "${PEAK[$name]:+$(mib "${PEAK[$name]}")}"
        done
        echo
        echo "| ratio (same access-log setting) | access log | req/s (within rounds) | CPU per request (within rounds) | p99 (within rounds) | peak RSS |"
        echo "|---|---|---:|---:|---:|---:|"
        for logs in "${LOGS[@]}"; do
            for ours in poynt-proxy poynt-proxy-h2 poynt-proxy-jwt; do
                has_kind "$ours" || continue
                for other in nginx haproxy; do
                    has_kind "$other" || continue
                    a=$ours.$logs b=$other.$logs
                    printf '| %s / %s | %s | %s (%.2f) | %s (%.2f) | %s (%.2f) | %s |\n' "$ours" "$other" "$(logs_of "$a")" \
                        "$(ratio "$a" "$b" 3)" "$(paired "$a" "$b" 3)" "$(ratio "$a" "$b" 8)" "$(paired "$a" "$b" 8)" \
                        "$(ratio "$a" "$b" 5)" "$(paired "$a" "$b" 5)" "$(peak_ratio "$a" "$b")"
                done
            done
            if has_kind poynt-proxy; then
                echo "| poynt-proxy / direct | $(logs_of "poynt-proxy.$logs") | $(ratio "poynt-proxy.$logs" direct 3) | | $(ratio "poynt-proxy.$logs" direct 5) | |"
            fi
        done
    fi
    echo
    [[ -n $IDLE_RSS_KB ]] && echo "poynt-proxy idle RSS (started, token not yet fetched): $(mib "$IDLE_RSS_KB") MiB."
    echo "Load average (1, 5, 15 min) when measuring started: $LOAD_AT_START; when it ended: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo "/token calls while measuring: $TOKEN_CALLS_DURING."
} | tee "$REPORT"
say "raw results in $RESULTS, report in $REPORT"
