"""Fault fixtures: a TCP relay that stands for a server which can be stopped and started again,
and a real web process (gunicorn) serving the product on the test database.

The relay sits between the web process and the test PostgreSQL. Stopping it closes every
connection going through it and stops listening, so the web process sees exactly what a stopped
or restarting PostgreSQL looks like from the network: open connections reset, new ones refused.
Starting it again on the same port is the server coming back. The relay only ever forwards to
loopback."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import urllib3

from tests.conftest import ROOT, WORKER_START_SECONDS, database_url_for_subprocess
from tests.execution.conftest import (  # noqa: F401 (fixtures)
    sandbox_requests,
    sandbox_url,
    world,
)


def free_port() -> int:
    """A free loopback port below the range the system picks local ports of outgoing
    connections from. A server stopped and started again on its port (the relay, the test's
    Redis) must find it free: in that range, a client's connection made in between (a busy
    machine makes many) could have taken it."""
    first_ephemeral = 32768
    with contextlib.suppress(OSError, ValueError):
        first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    low = 10_000 if first_ephemeral > 11_000 else 1_024
    for _ in range(1_000):
        port = random.randrange(low, first_ephemeral)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {low} and {first_ephemeral}")


@dataclass
class Relay:
    """Forwards 127.0.0.1:<port> to 127.0.0.1:<upstream_port> while running."""

    upstream_port: int
    port: int = field(default_factory=free_port)
    _listener: socket.socket | None = None
    _sockets: set[socket.socket] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening and reset every open connection, both ways."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            open_sockets, self._sockets = self._sockets, set()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def database_relay(transactional_db: Any) -> Iterator[tuple[Relay, str]]:
    """A relay to the test database, running; and the DATABASE_URL that goes through it."""
    from django.db import connection

    upstream = int(connection.settings_dict["PORT"] or 5432)
    relay = Relay(upstream_port=upstream)
    relay.start()
    url = database_url_for_subprocess().replace(f":{upstream}/", f":{relay.port}/")
    assert str(relay.port) in url
    try:
        yield relay, url
    finally:
        relay.stop()


@dataclass(frozen=True)
class WebProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


def web_start(*, env: dict[str, str]) -> WebProcess:
    """gunicorn serving the product on a free loopback port (one worker, in a process group of
    its own); waits until it answers."""
    port = free_port()
    log_path = ROOT / "var" / f"web-{uuid.uuid4().hex[:8]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--workers", "1",
                "--bind", f"127.0.0.1:{port}", "--timeout", "120",
            ],
            cwd=ROOT,
            env={**os.environ, "LOG_FORMAT": "text", **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    web = WebProcess(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + WORKER_START_SECONDS
    while True:
        try:
            urllib3.request("GET", f"{web.url}/accounts/login/", timeout=30, retries=False)
            return web
        except urllib3.exceptions.HTTPError:
            if process.poll() is not None or time.monotonic() > deadline:
                output = web.log()
                web_stop(web)
                raise RuntimeError(f"web process did not start:\n{output}") from None
            time.sleep(0.2)


def web_stop(web: WebProcess) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(web.process.pid, signal.SIGTERM)
    try:
        web.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(web.process.pid, signal.SIGKILL)
        web.process.wait(timeout=10)
    web.log_path.unlink(missing_ok=True)
