#!/usr/bin/env bash
# Creates .venv when missing (or when it was made by a Python older than 3.12) and installs the
# pinned requirements. Re-run whenever a requirements file changes; the Makefile does so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)'; then
  echo "venv: .venv uses an old Python; recreating it"
  rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
  python=$(scripts/python.sh)
  echo "venv: creating .venv with $python ($("$python" --version))"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "${1:-requirements-dev.txt}"
