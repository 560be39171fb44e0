#!/usr/bin/env bash
# The project's test command (the README names it; CI runs it). On a fresh Debian machine it
# first installs what the tests drive for real — curl (the demo test runs the printed curl
# commands), prometheus/promtool (the observability tests scrape the proxy with a real
# Prometheus), redis-server (the store tests start their own on a free loopback port; the
# system's redis service is never used) and chromium (the onboarding tests walk a headless
# browser through /connect, the emulator's authorize page and the callback) — then runs the
# whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ((${#missing[@]})); then
  echo "installing test dependencies: ${missing[*]}"
  apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
  apt_get update -qq
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${missing[@]}"
fi

cargo test --locked "$@"
