"""Fixtures for the fault tests: a private Redis per test and private Postgres clusters.

Nothing here touches the shared services on 127.0.0.1:6379 / :5432: a fault test kills and
restarts its own. One private cluster serves the session, each test getting a fresh database
copied from a template that `pagemill migrate` created; a test that stops Postgres asks for
`fault_stack_own_postgres` and gets a cluster of its own. The moto server and the fake model
server are the session's (see tests/support), with a fresh bucket + queue per test and the fake
server reset per test.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.faults.harness import API_KEY, RECOVERY_SETTINGS, FaultStack
from tests.support.fake_model_server import FakeModelServer
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.services import (
    PrivatePostgres,
    PrivateRedis,
    postgres_bindir,
    redis_server_path,
)
from workers import devstack

TEMPLATE = "pagemill_faults_template"
_numbers = itertools.count(1)


def _migrate(database_url: str) -> None:
    """Create the schema with the shipped command, as an operator would."""
    devstack.ensure_database(database_url)
    migrated = subprocess.run(
        [sys.executable, "-m", "workers", "migrate"],
        env={**os.environ, "PAGEMILL_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert migrated.returncode == 0, f"pagemill migrate failed:\n{migrated.stderr[-2000:]}"


def _new_cluster() -> PrivatePostgres:
    if postgres_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    cluster = PrivatePostgres()
    try:
        cluster.init().start()
    except BaseException:
        cluster.destroy()
        raise
    return cluster


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if redis_server_path() is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def faults_cluster() -> Iterator[PrivatePostgres]:
    """A private cluster for the fault tests that leave Postgres running, with a migrated
    template database."""
    cluster = _new_cluster()
    try:
        _migrate(cluster.url(TEMPLATE))
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def fault_database(faults_cluster: PrivatePostgres) -> tuple[PrivatePostgres, str]:
    """A fresh, migrated database on the shared private cluster."""
    name = f"pagemill_faults_{os.getpid()}_{next(_numbers)}"
    admin = create_engine(faults_cluster.url("postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"'))
    finally:
        admin.dispose()
    return faults_cluster, faults_cluster.url(name)


@pytest.fixture
def own_database() -> Iterator[tuple[PrivatePostgres, str]]:
    """A cluster of the test's own (it may stop it), migrated with `pagemill migrate`."""
    cluster = _new_cluster()
    try:
        url = cluster.url("pagemill_faults")
        _migrate(url)
        yield cluster, url
    finally:
        cluster.destroy()


def _stack(
    *,
    request: pytest.FixtureRequest,
    database: tuple[PrivatePostgres, str],
    private_redis: PrivateRedis,
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
    log_dir: Path,
) -> Iterator[FaultStack]:
    from pipeline.db.session import make_engine

    cluster, database_url = database
    # The processes' temporary files (the beat's schedule state among them) stay in the test's
    # own directory.
    tmp = log_dir.parent / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env = {
        "TMPDIR": str(tmp),
        "PAGEMILL_DATABASE_URL": database_url,
        "PAGEMILL_BROKER_URL": private_redis.url(),
        "PAGEMILL_S3_ENDPOINT_URL": s3_server,
        "PAGEMILL_SQS_QUEUE_URL": bucket_with_queue.queue_url,
        "PAGEMILL_SQS_WAIT_SECONDS": "1",
        **devstack.DUMMY_CREDENTIALS,
        "PAGEMILL_PROVIDER": "anthropic",
        "PAGEMILL_ANTHROPIC_API_KEY": API_KEY,
        "PAGEMILL_ANTHROPIC_BASE_URL": fake_model_server.anthropic_base_url,
        **RECOVERY_SETTINGS,
    }
    engine = make_engine(database_url, pool_size=2)
    stack = FaultStack(
        env=env,
        redis=private_redis,
        postgres=cluster,
        database_url=database_url,
        engine=engine,
        bucket=bucket_with_queue,
        server=fake_model_server,
        log_dir=log_dir,
    )
    fake_model_server.responder = stack.book.responder
    try:
        yield stack
    finally:
        stack.stop_all()
        outcome = getattr(request.node, "rep_call", None)
        if outcome is not None and outcome.failed:
            print(stack.tails(60))
        engine.dispose()


@pytest.fixture
def fault_stack(
    *,
    request: pytest.FixtureRequest,
    fault_database: tuple[PrivatePostgres, str],
    private_redis: PrivateRedis,
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
    tmp_path: Path,
) -> Iterator[FaultStack]:
    yield from _stack(
        request=request,
        database=fault_database,
        private_redis=private_redis,
        s3_server=s3_server,
        bucket_with_queue=bucket_with_queue,
        fake_model_server=fake_model_server,
        log_dir=tmp_path / "logs",
    )


@pytest.fixture
def fault_stack_own_postgres(
    *,
    request: pytest.FixtureRequest,
    own_database: tuple[PrivatePostgres, str],
    private_redis: PrivateRedis,
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
    tmp_path: Path,
) -> Iterator[FaultStack]:
    yield from _stack(
        request=request,
        database=own_database,
        private_redis=private_redis,
        s3_server=s3_server,
        bucket_with_queue=bucket_with_queue,
        fake_model_server=fake_model_server,
        log_dir=tmp_path / "logs",
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    # Remember each phase's outcome on the item, so fixtures can print logs only on failure.
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
