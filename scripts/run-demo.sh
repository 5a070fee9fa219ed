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
# The product runs as a role that owns nothing: on the audit trail it may only read and append
# (docs/deployment.md, Database roles). The role that migrated grants it, after every migrate.
APP_ROLE=escapement_app
if [ ! -s var/app-db-password ]; then
  (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(24))' > var/app-db-password)
fi
APP_DB_PASSWORD=$(cat var/app-db-password) python manage.py db_roles grant --app-role "$APP_ROLE" \
  --password-env APP_DB_PASSWORD
DATABASE_URL=$(APP_ROLE="$APP_ROLE" python - <<'PY'
import os
from urllib.parse import quote, urlsplit, urlunsplit

url = urlsplit(os.environ["DATABASE_URL"])
password = open("var/app-db-password").read().strip()
host = url.hostname + (f":{url.port}" if url.port else "")
print(urlunsplit(url._replace(netloc=f"{os.environ['APP_ROLE']}:{quote(password)}@{host}")))
PY
)
export DATABASE_URL
python manage.py db_roles check
echo "Escapement on http://127.0.0.1:$PORT/  (Ctrl-C stops web, worker, scheduler and the servers)"
exec python -m controlplane.embedded supervise Procfile
