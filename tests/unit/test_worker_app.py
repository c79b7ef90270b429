"""The Celery app: broker connections sized to what a worker runs at once, and the exit code of
a stage-worker pair. `pagemill worker` itself runs as a real process in
tests/integration/test_worker_command.py."""

from __future__ import annotations

import pytest

from pipeline.settings import load_settings
from workers import launcher
from workers.app import make_app, size_broker_pool


@pytest.mark.parametrize("concurrency", [2, 64, 200])
def test_the_broker_pool_has_a_connection_for_every_task_in_flight(concurrency: int) -> None:
    built = make_app(load_settings(worker_concurrency=2))
    size_broker_pool(built, concurrency)
    options = built.conf.broker_transport_options
    # Late acks need a connection per task in flight on top of the consumer's and the
    # publishers' (FIELD-NOTES: with kombu's default of 10, acks were lost under load).
    assert built.conf.broker_pool_limit >= concurrency + 1
    assert options["max_connections"] >= concurrency + built.conf.broker_pool_limit
    assert options["visibility_timeout"] == load_settings().visibility_timeout_s  # kept


@pytest.mark.parametrize(
    ("code", "asked", "expected"),
    [(0, False, 1), (0, True, 0), (1, False, 1), (-9, False, 137), (-15, True, 143)],
)
def test_a_stage_worker_that_ends_by_itself_fails_the_pair(
    code: int, asked: bool, expected: int
) -> None:
    assert launcher.exit_code(code, asked_to_stop=asked) == expected
