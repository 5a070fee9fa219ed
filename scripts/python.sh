#!/usr/bin/env bash
# Prints the path of a Python 3.12+ interpreter: the one .python-version names (via pyenv) when
# available, else any python3.12 on PATH or under pyenv's root. Exits 1 with one line if none.
set -euo pipefail
cd "$(dirname "$0")/.."

wanted=$(tr -d '[:space:]' < .python-version)
candidates=()
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  candidates+=("$root/versions/$wanted/bin/python3")
fi
candidates+=("${PYENV_ROOT:-$HOME/.pyenv}/versions/$wanted/bin/python3")
for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin; do candidates+=("$dir/python3"); done
for name in python3.12 python3.13 python3; do
  if command -v "$name" >/dev/null 2>&1; then candidates+=("$(command -v "$name")"); fi
done

for python in "${candidates[@]}"; do
  if [ -x "$python" ] && "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; then
    echo "$python"
    exit 0
  fi
done
echo "no Python 3.12 or newer found (wanted $wanted, per .python-version); install it with pyenv" >&2
exit 1
