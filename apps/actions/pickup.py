"""Workers pick queued actions up the moment they are queued, without the broker.

Every path that queues an action announces it (apps/actions/dispatch.py): NOTIFY on the channel
named after the queue, delivered when the transaction commits. Each worker runs one listener: a
thread with a connection of its own that LISTENs on the channel of every queue the worker
consumes, and starts each action it hears on a thread of a small pool
(ACTION_PICKUP_THREADS, the worker's concurrency when 0), through `action_execute` with
`queued_only`. The claim decides as it does for a message: of the workers that hear one notice,
one starts the action and the others find it claimed and drop the notice; a switch engaged
meanwhile refuses it.

Nothing depends on the listener hearing everything:
- when it starts, and each time its connection comes back, it first picks up every action
  already queued and not held by a switch (queued while no worker listened), oldest first;
- an action still queued after ACTION_REQUEUE_AFTER_SECONDS (a notice lost with a worker that
  stopped before starting it) is sent through the broker by the requeue sweep.

A retry an action asks for (a transient failure, a lease held elsewhere) goes through the broker
with its countdown, as every retry does."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from uuid import UUID

import psycopg
from celery import bootsteps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections
from psycopg import sql

from apps.actions.dispatch import EXECUTE, action_send, announcement_read
from apps.actions.execution import action_execute
from apps.actions.requeue import actions_waiting
from apps.core.backoff import backoff
from apps.core.request_context import reset_request_id, set_request_id
from apps.core.tracing import consumer_span

logger = logging.getLogger(__name__)

# How soon the listener notices it is asked to stop while no notice arrives.
POLL_SECONDS = 1.0
# How long a runner thread waits, when stopping, for the others to take their own close.
CLOSE_SECONDS = 10.0


def action_run_announced(payload: str) -> None:
    """Start the action a notice names, if it is still queued, on the current thread."""
    action_id, request_id, traceparent = announcement_read(payload)
    try:
        key = UUID(action_id)
    except ValueError:
        logger.warning("pickup: ignored a notice that names no action: %r", payload[:80])
        return
    token = set_request_id(request_id)
    close_old_connections()
    taken = time.perf_counter()
    ended = False
    try:
        with consumer_span(f"pickup {EXECUTE}", traceparent):
            outcome = action_execute(action_id=key, queued_only=True)
            if outcome.retry_after is not None:
                action_send(action_id, countdown=outcome.retry_after)
        ended = True
        logger.info(
            "pickup: action %s %s%s in %.3f s",
            action_id,
            outcome.status,
            f" ({outcome.note})" if outcome.note else "",
            time.perf_counter() - taken,
        )
    except Exception:
        logger.exception(
            "pickup: action %s stopped on an error; the requeue sweep sends it again", action_id
        )
    finally:
        # As after a task (apps/core/worker_connections.py): kept when it ended well.
        if ended:
            close_old_connections()
        else:
            connections.close_all()
        reset_request_id(token)


class Listener:
    """LISTENs on `channels` and runs what it hears on `threads` threads, until stopped."""

    def __init__(self, channels: Iterable[str], threads: int) -> None:
        self.channels = sorted(set(channels))
        self._stop = threading.Event()
        self._threads = threads
        self._runners = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pickup")
        self._pending: set[Future[None]] = set()
        self._thread = threading.Thread(target=self._run, name="action-pickup", daemon=True)
        self.listening = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening, and wait for the actions already started (notices not yet started
        stay queued in the database for the next listener or the sweep); then each runner
        thread closes its database connection (Django's are per thread): one task each, held
        at a barrier so that no thread takes two."""
        self._stop.set()
        self._thread.join()
        for pending in list(self._pending):
            pending.cancel()
        barrier = threading.Barrier(self._threads)

        def close() -> None:
            connections.close_all()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=CLOSE_SECONDS)

        for _ in range(self._threads):
            self._runners.submit(close)
        self._runners.shutdown(wait=True)

    def _start(self, payload: str) -> None:
        started = self._runners.submit(action_run_announced, payload)
        self._pending.add(started)
        started.add_done_callback(self._pending.discard)

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._listen()
            except (psycopg.Error, OSError) as exc:
                self.listening.clear()
                failures += 1
                wait = backoff(failures, base=0.5, cap=30.0)
                logger.warning(
                    "pickup: lost its connection to the database (%s); listening again in "
                    "%.1f s, queued actions wait for it or for the requeue sweep",
                    type(exc).__name__,
                    wait,
                )
                self._stop.wait(wait)
            else:
                failures = 0
            finally:
                connections.close_all()

    def _listen(self) -> None:
        database = connections.create_connection(DEFAULT_DB_ALIAS)
        try:
            database.ensure_connection()
            raw: psycopg.Connection[Any] = database.connection
            raw.autocommit = True
            for channel in self.channels:
                raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            # Listening first, then reading what is queued: an action queued in between is
            # both heard and read, and its second start finds it claimed.
            waiting = actions_waiting()
            connections[DEFAULT_DB_ALIAS].close()  # this thread's own, used for that read only
            for action_id in waiting:
                self._start(f"{action_id} -")
            if waiting:
                logger.info("pickup: started %d action(s) queued before it listened", len(waiting))
            self.listening.set()
            while not self._stop.is_set():
                for notice in raw.notifies(timeout=POLL_SECONDS):
                    self._start(notice.payload)
        finally:
            database.close()


class ActionPickup(bootsteps.StartStopStep):
    """The worker's listener, started once its pool is (controlplane/celery.py adds it)."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = settings.ACTION_PICKUP

    def create(self, worker: Any) -> Any:
        queues = worker.app.amqp.queues
        channels = list(queues.consume_from or queues)
        threads: int = settings.ACTION_PICKUP_THREADS or worker.concurrency or 1
        self.obj = Listener(channels, threads)
        return self.obj
