"""Database connections in Celery workers: kept from one task to the next, as a web process keeps
them from one request to the next.

Left to itself, Celery closes every database connection before and after every task, so each
task opened a new one: a new PostgreSQL backend, 10 to 25 ms on a busy 2-core machine, paid by
every action executed and by every claim a kill switch refuses. Instead (CELERY_DB_REUSE_MAX in
the settings turns Celery's closing down to once in that many tasks), a task starts and ends
the way Django starts and ends a request: a connection older than CONN_MAX_AGE is closed, one
with errors is closed unless it still answers, and one left in a transaction is closed; the
first query of the next task checks it first (CONN_HEALTH_CHECKS).

A task that did not end in success closes its connections outright: an exception may have cut a
query short and left the connection in a state a check cannot see (Celery closes after every
task for that reason). The next task opens a new one."""

from __future__ import annotations

from typing import Any

from celery import Task, states
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections, connections


def _worker_task(task: Task[Any, Any] | None) -> bool:
    # An eager task (run in the caller's process) shares the caller's connection and its
    # transaction: it is not this module's to close.
    return task is not None and not getattr(task.request, "is_eager", False)


@task_prerun.connect
def _connections_before_task(task: Task[Any, Any] | None = None, **_: Any) -> None:
    if _worker_task(task):
        close_old_connections()


@task_postrun.connect
def _connections_after_task(
    task: Task[Any, Any] | None = None, state: str | None = None, **_: Any
) -> None:
    if not _worker_task(task):
        return
    if state == states.SUCCESS:
        close_old_connections()
    else:
        connections.close_all()
