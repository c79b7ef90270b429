"""Shared fixtures: a dedicated Postgres database and Redis db for the tests, samples on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

# The tests own a database and a Redis db of their own, so that a developer's data survives.
TEST_DATABASE_URL = os.environ.get(
    "PAGEMILL_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/pagemill_test"
)
TEST_BROKER_URL = os.environ.get("PAGEMILL_TEST_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ["PAGEMILL_DATABASE_URL"] = TEST_DATABASE_URL
os.environ["PAGEMILL_BROKER_URL"] = TEST_BROKER_URL
# Processes the tests start serve no metrics unless a test asks (helpers share this machine).
os.environ["PAGEMILL_METRICS_PORT"] = "0"
for _name in ("PAGEMILL_PROVIDER", "PAGEMILL_ANTHROPIC_API_KEY", "PAGEMILL_S3_ENDPOINT_URL"):
    os.environ.pop(_name, None)

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO.parent / "shared" / "samples"

pytest_plugins = [
    "tests.support.s3_fixtures",
    "tests.support.fake_model_fixtures",
    "tests.support.radosgw_fixtures",
]


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    if not (SAMPLES / "docs").is_dir():
        pytest.skip("../shared/samples is not beside the repository")
    return SAMPLES


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    from pipeline.db.migrate import downgrade, upgrade
    from pipeline.db.session import make_engine
    from workers.devstack import ensure_database

    ensure_database(TEST_DATABASE_URL)
    engine = make_engine(TEST_DATABASE_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    # Down and up again: the migration must be reversible, not only applicable.
    upgrade(TEST_DATABASE_URL)
    downgrade(TEST_DATABASE_URL, "base")
    upgrade(TEST_DATABASE_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> Iterator[sessionmaker[Session]]:
    from pipeline.db.session import make_session_factory

    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE documents, vlm_calls, budget_caps, budget_ledger, message_batches,"
                " page_cache, ops_rollup_finished, ops_rollup_failures, ops_rollup_latency,"
                " ops_rollup_cost RESTART IDENTITY CASCADE"
            )
        )
        # What an earlier test's beat rolled up is gone: the views read raw rows again.
        conn.execute(text("UPDATE ops_rollup_state SET rolled_until = NULL"))
    yield make_session_factory(engine)


@pytest.fixture
def redis_broker() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(TEST_BROKER_URL)
    client.flushdb()
    yield TEST_BROKER_URL
    client.flushdb()
    client.close()
