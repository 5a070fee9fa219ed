"""Escapement settings, read from the environment.

The product runs on PostgreSQL (`DATABASE_URL`) and Redis or Valkey (`REDIS_URL`); with neither
set, on the embedded servers `make run` starts under `var/` (controlplane/embedded.py). Every
variable is listed in the README.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.utils.csp import CSP

from apps.core.metrics_access import metrics_networks, metrics_token
from apps.runtime.config import demo_interval, model_settings
from apps.sandbox.config import sandbox_token
from controlplane.environment import (
    DEFAULT_AUDIT_ORIGIN,
    ConfigurationError,
    audit_signing_key,
    broker_config,
    database_config,
    env_bool,
    env_float,
    env_int,
    env_list,
    secret_key,
)

BASE_DIR = Path(__file__).resolve().parent.parent
ENV = os.environ
VAR_DIR = Path(ENV.get("ESCAPEMENT_VAR_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool(ENV, "DEBUG", default=False)
SECRET_KEY = secret_key(ENV, VAR_DIR)
ALLOWED_HOSTS = env_list(ENV, "ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list(ENV, "CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "apps.accounts.admin_config.EscapementAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",
    "apps.core",
    "apps.accounts",
    "apps.registry",
    "apps.reviews",
    "apps.books",
    "apps.audit",
    "apps.ledger",
    "apps.killswitches",
    "apps.actions",
    "apps.sandbox",
    "apps.runtime",
    # The living demo of `make run`, on top of the product: no product app imports it.
    "apps.demo",
]

MIDDLEWARE = [
    "apps.core.middleware.RequestIdMiddleware",
    # A view that cannot reach the database answers 503 saying so (apps/core/middleware.py).
    "apps.core.middleware.DatabaseUnavailableMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "apps.accounts.context_processors.navigation",
            ],
        },
    },
]

DATABASES = {"default": database_config(ENV, VAR_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = ENV.get("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve straight from the source folders in development and tests; production runs collectstatic.
WHITENOISE_USE_FINDERS = DEBUG or env_bool(ENV, "WHITENOISE_USE_FINDERS", default=False)

# --- Security -------------------------------------------------------------------------------
# Behind a TLS-terminating proxy set BEHIND_TLS=true: cookies become Secure, HTTP redirects to
# HTTPS and browsers are told to insist on HTTPS.
BEHIND_TLS = env_bool(ENV, "BEHIND_TLS", default=False)
SESSION_COOKIE_SECURE = BEHIND_TLS
CSRF_COOKIE_SECURE = BEHIND_TLS
SECURE_SSL_REDIRECT = BEHIND_TLS
SECURE_HSTS_SECONDS = 31536000 if BEHIND_TLS else 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS else None
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "form-action": [CSP.SELF],
    "base-uri": [CSP.SELF],
}

# --- Celery ---------------------------------------------------------------------------------
_broker = broker_config(ENV, VAR_DIR)
CELERY_BROKER_URL = _broker.broker_url
CELERY_RESULT_BACKEND = _broker.result_backend
CELERY_BROKER_TRANSPORT_OPTIONS = _broker.transport_options
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker that loses the broker keeps trying to reconnect for as long as it takes (Celery's
# default gives up after 100 attempts, about 47 minutes, and the worker exits): when Redis is
# back, the workers already running take the work again without anyone restarting them.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_TASK_DEFAULT_QUEUE = ENV.get("CELERY_QUEUE", "escapement")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
# Task results are not kept: the database records every outcome (an action's status and
# result), and nothing reads them from Redis. Keeping them would also make every send subscribe
# the sending process to the result's channel first, and while Redis is down that subscription
# is retried for about 20 seconds before the message is even tried: a proposal would wait that
# long for its answer. Tasks whose result is read (core.ping) ask for it themselves.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery would close the database connections around every task, so that each opened a new one;
# it closes them once in this many tasks instead, and apps/core/worker_connections.py looks after
# them the way Django does between requests (CONN_MAX_AGE, health checks).
CELERY_DB_REUSE_MAX = 1000
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_WORKER_SEND_TASK_EVENTS = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    "heartbeat": {"task": "core.heartbeat", "schedule": 60.0},
    "review-sla": {"task": "reviews.sweep", "schedule": 30.0},
    "action-requeue": {"task": "actions.requeue", "schedule": 30.0},
    # The balance sheet's daily cost rollup (idempotent; see apps/ledger/rollups.py).
    "ledger-cost-rollup": {"task": "ledger.cost_rollup", "schedule": 15 * 60.0},
    # Folds the action tally's new rows (exact either way; see apps/ledger/tallies.py).
    "ledger-tally-compact": {"task": "ledger.tally_compact", "schedule": 60.0},
    # SLO breaches and regressions: one alert each, resolved when over.
    "ledger-slo-check": {"task": "ledger.slo_check", "schedule": 60.0},
    # Hosted runs: resume the steps whose held action a person decided, retry the lost ones
    # (apps/runtime/services.py, docs/runtime.md).
    "runtime-sweep": {"task": "runtime.sweep", "schedule": 3.0},
    # The audit log's sequencer: committed events into the Merkle log, a signed checkpoint.
    "audit-integrate": {"task": "audit.integrate", "schedule": 2.0},
}
# --- The audit log (apps/audit/log.py, docs/deployment.md) -----------------------------------
# The origin line of its checkpoints: a name for this log that no other log uses.
AUDIT_LOG_ORIGIN = ENV.get("AUDIT_LOG_ORIGIN", DEFAULT_AUDIT_ORIGIN).strip() or DEFAULT_AUDIT_ORIGIN
AUDIT_SIGNING_KEY = audit_signing_key(ENV, VAR_DIR, AUDIT_LOG_ORIGIN)
# The log's verifier key, for hosts that serve it but do not sign (the web): with it set there,
# the signing key stays on the workers. Empty: derived from AUDIT_SIGNING_KEY.
AUDIT_VERIFIER_KEY = ENV.get("AUDIT_VERIFIER_KEY", "").strip()
# Verifier keys of keys that signed checkpoints before the current one (comma-separated).
AUDIT_PAST_VERIFIER_KEYS = env_list(ENV, "AUDIT_PAST_VERIFIER_KEYS", [])
# Every signed checkpoint is appended to this file (empty: none) and POSTed to this URL (empty:
# none), so that a copy lives outside the database.
AUDIT_WITNESS_FILE = ENV.get("AUDIT_WITNESS_FILE", str(VAR_DIR / "audit-checkpoints.txt"))
AUDIT_WITNESS_URL = ENV.get("AUDIT_WITNESS_URL", "")

# A workflow's approval or override rate moving by this much (0.10 = 10 points) from one week
# to the next raises a regression alert.
SLO_REGRESSION_POINTS = 0.10
# An action still `queued` this long after it was queued (its message lost, say while the broker
# was down) is sent to the workers again by the requeue sweep (apps/actions/requeue.py).
ACTION_REQUEUE_AFTER_SECONDS = env_int(ENV, "ACTION_REQUEUE_AFTER_SECONDS", 60)
# A worker listens for queued actions announced by PostgreSQL and starts them at once
# (apps/actions/pickup.py). Off for a worker whose database connection cannot LISTEN (through a
# connection pooler in transaction mode): it then runs what the broker brings, and an action no
# listening worker heard waits for the requeue sweep.
ACTION_PICKUP = env_bool(ENV, "ACTION_PICKUP", default=True)
# Threads on which a worker starts the actions it hears announced; 0: as many as the worker's
# concurrency.
ACTION_PICKUP_THREADS = env_int(ENV, "ACTION_PICKUP_THREADS", 0)
# A worker running an action holds its lease for the tool's timeout plus this margin (for the
# connection, the database statements around the call, a slow host); apps/actions/execution.py
# explains the choice.
ACTION_LEASE_MARGIN_SECONDS = env_float(ENV, "ACTION_LEASE_MARGIN_SECONDS", 30.0)
# A review item past its SLA deadline is escalated; this many minutes later, still undecided,
# it expires (its action never runs).
REVIEW_EXPIRE_AFTER_MINUTES = env_int(ENV, "REVIEW_EXPIRE_AFTER_MINUTES", 24 * 60)
# An approval holds this long: a second approval, and the start of the run, must come within it.
REVIEW_APPROVAL_TTL_MINUTES = env_int(ENV, "REVIEW_APPROVAL_TTL_MINUTES", 60)
# How long /healthz waits for a worker to answer its ping.
HEALTHZ_WORKER_TIMEOUT = env_float(ENV, "HEALTHZ_WORKER_TIMEOUT", 1.0)

# --- Agent runtime --------------------------------------------------------------------------
# Hosted agents (their steps and deterministic models) live in these modules.
RUNTIME_AGENT_MODULES = ["apps.demo.agents"]
# Which provider serves the small and frontier model tiers: MODEL_PROVIDER, MODEL_BASE_URL,
# MODEL_API_KEY, MODEL_SMALL, MODEL_FRONTIER, ... (see docs/runtime.md).
RUNTIME_MODELS = model_settings(ENV)
# The share of a monthly budget that raises the soft-limit alert (workflow budgets; an agent's
# budget carries its own).
RUNTIME_SOFT_LIMIT_PERCENT = 80
# The living demo (apps/demo): demo agents pick up demo work every DEMO_TRAFFIC_INTERVAL seconds
# while DEMO_TRAFFIC is true (`make run` sets it); `manage.py demo_traffic off` pauses them.
DEMO_TRAFFIC = env_bool(ENV, "DEMO_TRAFFIC", default=False)
DEMO_TRAFFIC_INTERVAL = demo_interval(ENV)
if DEMO_TRAFFIC:
    CELERY_BEAT_SCHEDULE["demo-traffic"] = {
        "task": "demo.tick",
        "schedule": DEMO_TRAFFIC_INTERVAL,
    }


# --- The demo sandbox -----------------------------------------------------------------------
# The demo's system of record (apps/sandbox) answers under /sandbox/ only when SANDBOX_ENABLED is
# true (`make run` sets it; a production deployment never does): anywhere else those addresses
# are a plain 404. Its endpoints answer only `Authorization: Bearer <SANDBOX_TOKEN>`, the
# credential its tools carry (Tool.credential_secret); unset, the token is derived from
# SECRET_KEY (apps/sandbox/config.py).
SANDBOX_ENABLED = env_bool(ENV, "SANDBOX_ENABLED", default=False)
SANDBOX_TOKEN = sandbox_token(ENV, secret_key=SECRET_KEY)


# --- Behavioural firewall -------------------------------------------------------------------
# An agent is quarantined (its own kill switch, the evidence as the reason) when it calls tools
# outside its scope, proposes far above its usual rate, or keeps tripping forbid policies. The
# counters live in Redis (REDIS_URL) so that every web process adds to the same ones; on the
# embedded default they are kept in the process. See apps/killswitches/firewall.py.
def _firewall_number(name: str, default: float, *, whole: bool = True) -> float:
    value = env_float(ENV, name, default)
    if value <= 0 or (whole and value != int(value)):
        kind = "a positive whole number" if whole else "a positive number"
        raise ConfigurationError(f"{name}: expected {kind}, got {ENV.get(name)!r}")
    return value


FIREWALL_ENABLED = env_bool(ENV, "FIREWALL_ENABLED", default=True)
# Proposals outside the agent's scope (a tool or workflow it was not given) within the window.
FIREWALL_SCOPE_VIOLATIONS = int(_firewall_number("FIREWALL_SCOPE_VIOLATIONS", 3))
FIREWALL_SCOPE_WINDOW_SECONDS = int(_firewall_number("FIREWALL_SCOPE_WINDOW_SECONDS", 600))
# Proposals within the window above max(floor, multiple x the agent's trailing average for a
# window of that length, over the trailing period).
FIREWALL_RATE_WINDOW_SECONDS = int(_firewall_number("FIREWALL_RATE_WINDOW_SECONDS", 60))
FIREWALL_RATE_MULTIPLE = _firewall_number("FIREWALL_RATE_MULTIPLE", 10.0, whole=False)
FIREWALL_RATE_FLOOR = int(_firewall_number("FIREWALL_RATE_FLOOR", 300))
FIREWALL_RATE_TRAILING_SECONDS = int(_firewall_number("FIREWALL_RATE_TRAILING_SECONDS", 3600))
# Proposals denied by a forbid policy within the window.
FIREWALL_DENIALS = int(_firewall_number("FIREWALL_DENIALS", 5))
FIREWALL_DENIAL_WINDOW_SECONDS = int(_firewall_number("FIREWALL_DENIAL_WINDOW_SECONDS", 300))
FIREWALL_REDIS_URL = _broker.broker_url

# --- Metrics --------------------------------------------------------------------------------
# Prometheus metrics at /metrics, for the scraper only: from METRICS_ALLOWED_IPS (addresses or
# networks) or with `Authorization: Bearer <METRICS_TOKEN>`; with neither set, /metrics is a 404.
# Several processes on a host share their counters through PROMETHEUS_MULTIPROC_DIR (see
# controlplane/metrics.py and docs/deployment.md).
METRICS_ALLOWED_IPS = metrics_networks(ENV)
METRICS_TOKEN = metrics_token(ENV)
# Prometheus scrapes over plain HTTP inside the network, like the load balancer's /healthz.
SECURE_REDIRECT_EXEMPT = [*SECURE_REDIRECT_EXEMPT, r"^metrics$"]

# --- Logging --------------------------------------------------------------------------------
# JSON lines in production (one object per line, for log shippers); readable text in development.
LOG_FORMAT = ENV.get("LOG_FORMAT", "text" if DEBUG else "json")
LOG_LEVEL = ENV.get("LOG_LEVEL", "INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "request_id": {"()": "apps.core.logging.RequestIdFilter"},
        # Personal data (emails, phone, card and account numbers) never reaches a log line.
        "mask_pii": {"()": "apps.runtime.pii.PiiMaskingFilter"},
    },
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id", "mask_pii"],
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "django.server": {"level": "WARNING"},
    },
}
