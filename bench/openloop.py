"""An open-loop HTTP/1.1 load client on asyncio streams.

Request i is due at `start + i / rate`, whatever the server has answered so far, and its latency
runs from that moment, not from when a connection was free to send it: a server that falls
behind shows it in the latency instead of slowing the client down (no coordinated omission).

Requests go over at most `connections` keep-alive connections, opened as needed. One that finds
every connection busy waits for one, and that wait is part of its latency. One not answered
within `timeout` seconds of its due time is a timeout, sent or not: one still waiting for a
connection by then is never sent; one sent keeps its connection until its late answer is in (at
most `linger` s more), as with wrk2's fixed connections, so that a server which is behind never
holds more than `connections` requests, rather than a pile of abandoned ones it would still
work through. A connection that fails is closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# Errors, as Outcome.error has them.
TIMEOUT = "timeout"
NEVER_SENT = "timeout before a connection was free (never sent)"


@dataclass(frozen=True)
class Outcome:
    due: float  # the event loop's clock, seconds
    status: int | None = None  # None: no answer
    body: bytes = b""
    answered: float | None = None
    error: str = ""

    @property
    def latency(self) -> float | None:
        return None if self.answered is None else self.answered - self.due


@dataclass(frozen=True)
class Report:
    outcomes: list[Outcome]
    start: float  # when the first request was due
    seconds: float  # from then to the last answer (or the last due time, if none came after)
    max_lag: float  # how late, at most, the client itself sent a request after its due time


def encode(path: str, body: bytes, headers: Mapping[str, str], host: str) -> bytes:
    """One POST as sent on the wire."""
    head = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class BadResponse(Exception):
    pass


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def exchange(self, raw: bytes) -> tuple[int, bytes, bool]:
        """(status, body, whether the connection may be used again)."""
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise BadResponse(f"not an HTTP/1.x status line: {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip().lower()
        keep = parts[0] == "HTTP/1.1" and headers.get("connection") != "close"
        if "content-length" in headers:
            body = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = await self._chunked()
        else:
            body, keep = await self.reader.read(), False
        return int(parts[1]), body, keep

    async def _chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # (no trailers are sent to us)
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()


class _Pool:
    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port = host, port
        self.slots = asyncio.Semaphore(size)
        self.idle: list[_Connection] = []

    async def take(self) -> _Connection:
        """A connection of one's own (the caller holds a slot)."""
        if self.idle:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return _Connection(reader, writer)

    def close(self) -> None:
        for connection in self.idle:
            connection.close()
        self.idle.clear()


CONNECTION_ERRORS = (
    OSError,
    ValueError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    BadResponse,
)


async def _one(pool: _Pool, raw: bytes, due: float, timeout: float, linger: float) -> Outcome:
    loop = asyncio.get_running_loop()
    deadline = due + timeout
    try:
        async with asyncio.timeout_at(deadline):
            await pool.slots.acquire()
    except TimeoutError:
        return Outcome(due, error=NEVER_SENT)
    connection: _Connection | None = None
    try:
        async with asyncio.timeout_at(deadline):
            connection = await pool.take()
        exchange = asyncio.ensure_future(connection.exchange(raw))
        done, _ = await asyncio.wait({exchange}, timeout=max(0.0, deadline - loop.time()))
        if done:
            status, body, keep = exchange.result()
            outcome = Outcome(due, status, body, loop.time())
        else:
            outcome = Outcome(due, error=TIMEOUT)
            # The server works on it all the same: its connection takes no other request until
            # the answer is in, so the server never holds more than `connections` of them.
            done, _ = await asyncio.wait({exchange}, timeout=linger)
            if not done or exchange.exception() is not None:
                exchange.cancel()
                return outcome
            keep = exchange.result()[2]
        if keep:
            pool.idle.append(connection)
            connection = None
        return outcome
    except TimeoutError:
        return Outcome(due, error=TIMEOUT)  # (connecting took past the deadline)
    except CONNECTION_ERRORS as exc:
        return Outcome(due, error=f"connection: {type(exc).__name__}")
    finally:
        if connection is not None:
            connection.close()
        pool.slots.release()


async def _run(
    host: str,
    port: int,
    requests: Sequence[bytes],
    rate: float,
    timeout: float,
    connections: int,
    linger: float,
) -> Report:
    loop = asyncio.get_running_loop()
    pool = _Pool(host, port, connections)
    start = loop.time() + 0.1
    tasks = []
    max_lag = 0.0
    try:
        for i, raw in enumerate(requests):
            due = start + i / rate
            now = loop.time()
            if due > now:
                await asyncio.sleep(due - now)
            max_lag = max(max_lag, loop.time() - due)
            tasks.append(asyncio.create_task(_one(pool, raw, due, timeout, linger)))
        outcomes = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        pool.close()
        with contextlib.suppress(Exception):
            await asyncio.sleep(0)  # (lets the transports close)
    last_due = start + (len(requests) - 1) / rate if requests else start
    end = max([last_due, *(o.answered for o in outcomes if o.answered is not None)])
    return Report(list(outcomes), start, end - start, max_lag)


def load(
    host: str,
    port: int,
    requests: Sequence[bytes],
    *,
    rate: float,
    timeout: float,
    connections: int,
    linger: float = 60.0,
) -> Report:
    """Send `requests` (already encoded) at `rate` a second, open loop; every outcome, in order."""
    return asyncio.run(_run(host, port, requests, rate, timeout, connections, linger))
