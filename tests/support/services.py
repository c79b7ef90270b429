"""Private Redis and PostgreSQL instances that a fault test may kill, stop and start at will.

The shared services on 127.0.0.1 (Redis :6379, Postgres :5432) belong to everybody on the
machine; a fault test must never touch them. These helpers start throw-away instances on free
ports instead:

* `PrivateRedis`: ``redis-server --save "" --appendonly no`` in its own process group. `kill()`
  is a ``kill -9``; `start()` again brings up an *empty* server on the same port (no persistence),
  which is what a broker restart without persistence looks like to clients.
* `PrivatePostgres`: a cluster made by ``initdb`` in a temporary directory (run as the
  ``postgres`` OS user when we are root, as initdb refuses root), listening on 127.0.0.1 and a
  free port, its Unix socket inside the cluster directory. `stop()` is ``pg_ctl stop -m fast``;
  `start()` starts the same cluster again, data intact.

The binaries are found at run time (``redis-server`` on PATH; Postgres via ``pg_config
--bindir``, then the Debian layout, then PATH). `postgres_bindir()` / `redis_server_path()`
return None when they are missing, so fixtures can skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PrivatePostgres",
    "PrivateRedis",
    "free_port",
    "postgres_bindir",
    "private_postgres",
    "private_redis",
    "redis_server_path",
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    if not predicate():  # type: ignore[operator]
        raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


# --- Redis -------------------------------------------------------------------------------------


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


class PrivateRedis:
    """One redis-server on a free port; see the module docstring."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        binary = redis_server_path()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.log_dir = log_dir
        self.starts = 0
        self._popen: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def start(self, timeout: float = 10.0) -> PrivateRedis:
        if self.alive():
            return self
        # The port may linger in TIME_WAIT after a kill; redis sets SO_REUSEADDR, so only a
        # live listener would block it.
        _wait(lambda: not _port_open(self.port), 5.0, f"port {self.port} to be free")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = (self.log_dir / f"redis-{self.port}.{self.starts}.log").open("wb")
        try:
            self._popen = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.log_dir),
                    "--loglevel",
                    "warning",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        _wait(self.ping, timeout, f"redis on port {self.port}")
        return self

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: no shutdown, no save; everything in memory is gone."""
        popen, self._popen = self._popen, None
        if popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.wait(10)
        _wait(lambda: not _port_open(self.port), 5.0, f"redis on port {self.port} to go away")

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)


@contextlib.contextmanager
def private_redis(log_dir: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(log_dir).start()
    try:
        yield server
    finally:
        server.stop()


# --- PostgreSQL --------------------------------------------------------------------------------


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def postgres_bindir() -> Path | None:
    """The directory with initdb, pg_ctl and postgres, found at run time."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates.extend(Path(p) for p in debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


class PrivatePostgres:
    """One throw-away cluster; see the module docstring."""

    def __init__(self, port: int | None = None) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bindir = bindir
        self.port = port or free_port()
        # Not under pytest's tmp_path: initdb runs as `postgres`, which cannot enter root's
        # 0700 directories. mkdtemp's directory is handed over to that user.
        self.base = Path(tempfile.mkdtemp(prefix="pagemill-pg-"))
        self.data = self.base / "data"
        self.log_path = self.base / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root and runuser is missing: cannot run initdb")
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as_user = [runuser, "-u", "postgres", "--"]
        self.running = False

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run(
            [*self._as_user, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({out.returncode}): {out.stderr.strip()[-800:]}"
                f"\n{self.log_tail()}"
            )
        return out.stdout

    def init(self) -> PrivatePostgres:
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        return self

    def start(self, timeout: float = 30.0) -> PrivatePostgres:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.base}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c shared_buffers=32MB",
                "-c max_connections=60",
            ]
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-o",
            options,
            "-w",
            "-t",
            str(int(timeout)),
            "start",
            timeout=timeout + 10,
        )
        self.running = True
        return self

    def stop(self, mode: str = "fast", timeout: float = 30.0) -> None:
        """pg_ctl stop -m MODE: `fast` ends every session (clients see errors), then shuts down."""
        if not self.running:
            return
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-m",
            mode,
            "-w",
            "-t",
            str(int(timeout)),
            "stop",
            timeout=timeout + 10,
        )
        self.running = False

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    cluster = PrivatePostgres()
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.destroy()
