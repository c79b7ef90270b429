"""A local stack for the demo and the tests: an S3 server, and pagemill's own processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from pipeline.errors import ErrorCategory, PermanentError

DUMMY_CREDENTIALS = {"PAGEMILL_S3_ACCESS_KEY_ID": "test", "PAGEMILL_S3_SECRET_ACCESS_KEY": "test"}


@dataclass
class S3Server:
    endpoint_url: str
    _server: Any

    def stop(self) -> None:
        self._server.stop()


def start_s3_server() -> S3Server:
    """moto in server mode on 127.0.0.1 (a random free port): S3 and SQS over real HTTP."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            "no S3 server configured and moto is not installed: pip install 'moto[server]' "
            "or set PAGEMILL_S3_ENDPOINT_URL",
        ) from None
    # moto serves through werkzeug, which logs every request at INFO.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return S3Server(endpoint_url=f"http://{host}:{port}", _server=server)


def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL when it does not exist yet; True if created."""
    url = make_url(database_url)
    name = url.database
    if not name:
        return False
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if exists:
                return False
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            return True
    finally:
        admin.dispose()


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        # Warm shutdown: a Celery worker finishes or re-queues its tasks on SIGTERM.
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], env: Mapping[str, str], log_dir: Path) -> Process:
    """Run `pagemill ARGS` in its own process group, output to a log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log: IO[bytes] = log_path.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "workers", *args],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return Process(name=name, popen=popen, log_path=log_path)


@contextmanager
def running(processes: list[Process]) -> Iterator[list[Process]]:
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()


def wait_for(predicate: Any, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
