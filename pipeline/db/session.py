"""Database engine and sessions, built per process (never at import time)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline import health
from pipeline.health import HEALTH

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a database that is down (or restarting) looks like through SQLAlchemy and psycopg.
UNAVAILABLE = (OperationalError, InterfaceError)


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    # pre_ping: a worker that outlives a Postgres restart gets a fresh connection, not an error.
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


def patiently(
    factory: sessionmaker[Session],
    work: Callable[[Session], T],
    *,
    deadline: float,
    max_pause_s: float = 10.0,
) -> T:
    """Run `work` in one transaction; while the database is unavailable, wait (backoff up to
    `max_pause_s`) and run it again, until `deadline` (a time.monotonic() value), then raise.

    For what is held in memory and would cost money to get again, such as a model's answer:
    it is written when the database is back instead of being asked for a second time. `work`
    runs again from the start, so it must be idempotent (our writes are)."""
    pause = 0.5
    while True:
        try:
            with transaction(factory) as session:
                result = work(session)
        except UNAVAILABLE as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            if not HEALTH.down(health.DATABASE, str(exc)):
                log.debug("database unavailable; writing again in %.1f s", pause)
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, max_pause_s)
            continue
        return result
