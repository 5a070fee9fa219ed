"""Carries the request id (and, when tracing is on, the trace context) from the process that sends
a task to the worker that runs it, so one id ties together the log lines of a request and of the
work it caused, and one trace its spans."""

from __future__ import annotations

from typing import Any

from celery import Task
from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)

from apps.core.request_context import (
    get_request_id,
    new_request_id,
    reset_request_id,
    set_request_id,
)
from apps.core.tracing import inject_into, task_span_end, task_span_start, tracing_configure

HEADER = "escapement_request_id"
_tokens: dict[str, object] = {}


@before_task_publish.connect
def _stamp_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is not None and get_request_id() != "-":
        headers.setdefault(HEADER, get_request_id())
    if headers is not None:
        inject_into(headers)


@task_prerun.connect
def _adopt_request_id(
    task_id: str | None = None, task: Task[Any, Any] | None = None, **_: Any
) -> None:
    incoming = getattr(task.request, HEADER, None) if task is not None else None
    if task_id is not None:
        _tokens[task_id] = set_request_id(incoming or new_request_id())
        if task is not None:
            task_span_start(task_id, task.name, task.request)


@task_postrun.connect
def _drop_request_id(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    token = _tokens.pop(task_id, None) if task_id is not None else None
    if token is not None:
        reset_request_id(token)
    if task_id is not None:
        task_span_end(task_id, state)


@worker_init.connect
@worker_process_init.connect
def _start_tracing(**_: Any) -> None:
    tracing_configure()
