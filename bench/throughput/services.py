"""The processes and stores a benchmark run shares: helper servers, the database, Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import common


@dataclass
class Helper:
    """A process of ours that prints one line (its URL) when ready."""

    name: str
    popen: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def start_helper(name: str, args: list[str], log_dir: Path, timeout: float = 60.0) -> Helper:
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr = (log_dir / f"{name}.log").open("w")
    popen = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=common.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    stderr.close()
    result: list[str] = []
    reader = threading.Thread(
        target=lambda: result.append((popen.stdout.readline() if popen.stdout else "").strip()),
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        helper = Helper(name, popen, "")
        helper.stop()
        raise RuntimeError(f"{name} did not start; see {log_dir / (name + '.log')}")
    return Helper(name, popen, result[0])


# --- the database and the broker --------------------------------------------------------------


def reset_database(database_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from pipeline.db.migrate import upgrade

    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    upgrade(database_url)


def empty_tables(engine: Any) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE documents RESTART IDENTITY CASCADE"))


def flush_redis(broker_url: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.flushdb()
    finally:
        client.close()
