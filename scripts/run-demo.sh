#!/usr/bin/env bash
# The demo of `make run`, inside the environment of the embedded servers (controlplane/embedded.py
# has set DATABASE_URL and REDIS_URL): migrate, seed, then web (gunicorn), worker and scheduler,
# supervised until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-8000}
export PATH="$PWD/.venv/bin:$PATH" WEB_PORT="$PORT"
# The demo as a newcomer should see it: the product's own error pages, its traffic on, the
# sandbox system of record mounted, /metrics for a scraper on this machine.
export DEBUG="${DEBUG:-false}" DEMO_TRAFFIC="${DEMO_TRAFFIC:-true}" SANDBOX_ENABLED="${SANDBOX_ENABLED:-true}"
export METRICS_ALLOWED_IPS="${METRICS_ALLOWED_IPS:-127.0.0.1/32}" LOG_FORMAT="${LOG_FORMAT:-text}"
# Web processes and workers add to the same counters through one folder, emptied at start.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$PWD/var/prometheus}"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
python manage.py migrate --noinput
python manage.py collectstatic --noinput --verbosity 0
python manage.py seed_demo --port "$PORT"
echo "Escapement on http://127.0.0.1:$PORT/  (Ctrl-C stops web, worker, scheduler and the servers)"
exec python -m controlplane.embedded supervise Procfile
