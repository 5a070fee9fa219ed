"""The product's own counters, counted where things happen, in the process they happen in:
the gate's decisions and latency (apps/actions/gate.py), and the workers' executions
(apps/actions/execution.py). An increment takes about a microsecond (the gate's speed is
benchmarked). The scrape that serves them, with the figures read from the database, is
controlplane/metrics.py.

Labels are slugs from the registry and fixed words only: never anything a caller typed, never a
secret, so that neither their number nor their content can be chosen from outside."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# The in-process metrics live in prometheus_client's default registry, which its multiprocess
# mode expects; the scrape builds its own registry around them (see `exposition`).
GATE_DECISIONS = Counter(
    "escapement_gate_decisions",
    "Proposals decided and recorded by the gate, by workflow and outcome "
    "(allow, hold, deny, observe; blocked: a kill switch covered it).",
    ["workflow", "outcome"],
)
GATE_REFUSALS = Counter(
    "escapement_gate_refusals",
    "Proposals refused before anything was recorded (agent out of scope, bad params, reused "
    "idempotency key), by HTTP status.",
    ["status"],
)
GATE_SECONDS = Histogram(
    "escapement_gate_seconds",
    "Time the gate took to decide and record one proposal (refusals included).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
EXECUTIONS = Counter(
    "escapement_executions",
    "Calls of actions' tools by workers, by result: succeeded, failed (handed to a person: "
    "refused, out of retries, or its circuit open), retry (a transient failure, tried again "
    "later). Duplicate deliveries of a finished action are not counted.",
    ["result"],
)

COUNTERS = (GATE_DECISIONS, GATE_REFUSALS, GATE_SECONDS, EXECUTIONS)
