"""The Celery app's broker connections are sized to what a worker runs at once."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.settings import get_settings, load_settings
from workers import cli
from workers.app import app, make_app, size_broker_pool


def test_the_broker_pool_follows_the_worker_concurrency() -> None:
    small = make_app(load_settings(worker_concurrency=2))
    assert small.conf.broker_pool_limit == 10
    assert small.conf.broker_transport_options["max_connections"] == 20

    size_broker_pool(small, 200)
    assert small.conf.broker_pool_limit == 205
    options = small.conf.broker_transport_options
    assert options["max_connections"] == 410
    assert options["visibility_timeout"] == load_settings().visibility_timeout_s  # kept


def test_worker_concurrency_on_the_command_line_sizes_the_connection_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PAGEMILL_WORKER_CONCURRENCY", "2")  # restored, with the env, afterwards
    started: list[list[str]] = []

    def worker_main(argv: list[str]) -> None:  # Celery's: starting a real worker is not the point
        started.append(argv)

    monkeypatch.setattr(app, "worker_main", worker_main)
    pool_limit = app.conf.broker_pool_limit
    before: dict[str, Any] = dict(app.conf.broker_transport_options)
    try:
        result = CliRunner().invoke(
            cli.app, ["worker", "--queues", "extract", "--pool", "threads", "--concurrency", "150"]
        )
        assert result.exit_code == 0, result.output
        assert "--concurrency=150" in started[0] and "--pool=threads" in started[0]
        assert app.conf.broker_pool_limit == 155
        assert app.conf.broker_transport_options["max_connections"] == 310
        # ... and the database pool of the processes that run the tasks (workers.runtime).
        assert get_settings().worker_concurrency == 150
    finally:
        app.conf.broker_pool_limit = pool_limit
        app.conf.broker_transport_options = before
        get_settings.cache_clear()
