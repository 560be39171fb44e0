#!/bin/sh
# The compose stack's callers: requests through every proxy in PROXIES for a handful of
# merchants, with varied upstream latency (the emulator's _delay_ms knob), a POST every
# tenth request, and, every fiftieth, a merchant that never authorized the app (its 403
# MERCHANT_NOT_AUTHORIZED answers show on the dashboard). Prints a tally every 500 requests,
# and stops after REQUESTS requests when that is set.
set -u
PROXIES=${PROXIES:-"127.0.0.1:8080"}
MERCHANTS=${MERCHANTS:-"11111111-1111-4111-8111-111111111111 22222222-2222-4222-8222-222222222222 33333333-3333-4333-8333-333333333333 44444444-4444-4444-8444-444444444444 55555555-5555-4555-8555-555555555555"}
UNAUTHORIZED=${UNAUTHORIZED:-99999999-9999-4999-8999-999999999999}
PAUSE=${PAUSE:-0.2}
REQUESTS=${REQUESTS:-0}

sent=0
ok=0
tally() { echo "load: $sent requests sent, $ok answered 2xx"; }

while :; do
    for proxy in $PROXIES; do
        for merchant in $MERCHANTS; do
            sent=$((sent + 1))
            if [ $((sent % 50)) -eq 0 ]; then merchant=$UNAUTHORIZED; fi
            url="http://$proxy/businesses/$merchant/orders?_delay_ms=$(((sent * 37) % 120))"
            if [ $((sent % 10)) -eq 0 ]; then
                code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H "X-Poynt-Merchant-Id: $merchant" \
                    -H 'Content-Type: application/json' -d '{"amount": 1200}' "$url")
            else
                code=$(curl -s -o /dev/null -w '%{http_code}' -H "X-Poynt-Merchant-Id: $merchant" "$url&limit=5")
            fi
            case $code in 2??) ok=$((ok + 1)) ;; esac
            if [ "$sent" -eq "$REQUESTS" ]; then
                tally
                exit 0
            fi
            if [ $((sent % 500)) -eq 0 ]; then tally; fi
        done
    done
    sleep "$PAUSE"
done
