"""Sending work to the Celery workers by task name.

Code that sends a task names it (`"actions.execute"`) instead of importing the task's module:
a task module is an entry point that imports the code it runs, so the code that sends it would
otherwise import its own caller. The tasks are found in the Celery application's registry; the
first send in a process loads every app's `tasks` module (Celery's autodiscovery), after which
a look-up is a dictionary read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task, current_app
from django.db import transaction


def task_named(name: str) -> Task[Any, Any]:
    """The registered task called `name` (KeyError naming it when no app defines it)."""
    tasks = current_app.tasks
    if name not in tasks:
        current_app.loader.import_default_modules()
    if name not in tasks:
        raise KeyError(f"no worker task is registered as {name!r}")
    task: Task[Any, Any] = tasks[name]
    return task


def task_channel() -> str:
    """The PostgreSQL channel on which work for this process's queue is announced: the queue's
    own name, so that an announcement reaches the workers a message would have reached."""
    queue: str = current_app.conf.task_default_queue
    return queue


def task_send(name: str, *args: Any, **options: Any) -> None:
    """Send one task message now, with Celery's sending options (`countdown`, `time_limit`);
    raises whatever the broker raises when it cannot take it."""
    task = task_named(name)
    if options:
        task.apply_async(args, **options)
    else:
        task.delay(*args)


def task_send_on_commit(name: str, *args: Any, **options: Any) -> None:
    """Send one task message once the current transaction commits (at once outside one), so
    that the worker finds the rows the message names."""
    send: Callable[[], None] = lambda: task_send(name, *args, **options)  # noqa: E731
    transaction.on_commit(send)
