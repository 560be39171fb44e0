# shellcheck shell=bash
# Helpers the load scripts in benches/load share (measuring CPUs from /proc/stat, medians,
# readiness), so each is written once; sourced by each script after it defines say and die.

cpu_count() { # "0-2,5" -> 4
    local n=0 part
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then n=$((n + ${part#*-} - ${part%-*} + 1)); else n=$((n + 1)); fi
    done
    echo "$n"
}
cpu_numbers() { # "0-2,5" -> "0 1 2 5"
    local part
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
    done | tr '\n' ' '
}

wait_ready() { # url [curl options...]: bounded poll until it answers 200
    local url=$1 _
    shift
    for _ in $(seq 1 100); do
        if [[ $(curl -s -o /dev/null -w '%{http_code}' "$@" "$url" || true) == 200 ]]; then return 0; fi
        sleep 0.1
    done
    die "$url did not answer 200 within 10 s"
}

# cpu_stat "1 2" busy|steal -> clock ticks the listed CPUs spent not idle (busy, or taken by
# the host), or only taken by the host (steal: the VM's CPU was not there), from /proc/stat
cpu_stat() {
    awk -v list=" $1 " -v what="$2" '$1 ~ /^cpu[0-9]+$/ && index(list, " " substr($1, 4) " ") {
        n += what == "steal" ? $9 : $2 + $3 + $4 + $7 + $8 + $9 } END {print n}' /proc/stat
}

# median: numbers one a line on stdin ("-" lines skipped) -> their median, or "-" for none
median() { grep -v '^-$' | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
