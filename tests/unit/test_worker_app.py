"""The Celery app: broker connections sized to what a worker runs at once, and a worker's exit
code that tells a supervisor the truth."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from pipeline.settings import get_settings, load_settings
from workers import cli, launcher
from workers.app import app, make_app, size_broker_pool


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


def _run_worker_command(
    monkeypatch: pytest.MonkeyPatch, celery_exit: int | None, *args: str
) -> tuple[int, list[list[str]]]:
    """`pagemill worker ARGS` with Celery's own `start` replaced (starting a real worker is
    not the point here): it records its argv and ends with `celery_exit`."""
    monkeypatch.setenv("PAGEMILL_WORKER_CONCURRENCY", "2")  # restored, with the env, afterwards
    started: list[list[str]] = []

    def start(argv: list[str]) -> int | None:
        started.append(argv)
        return celery_exit

    monkeypatch.setattr(app, "start", start)
    pool_limit = app.conf.broker_pool_limit
    before: dict[str, Any] = dict(app.conf.broker_transport_options)
    try:
        result = CliRunner().invoke(cli.app, ["worker", *args])
    finally:
        app.conf.broker_pool_limit = pool_limit
        app.conf.broker_transport_options = before
    return result.exit_code, started


def test_worker_concurrency_on_the_command_line_sizes_the_connection_pools(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        code, started = _run_worker_command(
            monkeypatch, 0, "--queues", "extract", "--pool", "threads", "--concurrency", "150"
        )
        assert code == 0
        assert "--concurrency=150" in started[0] and "--pool=threads" in started[0]
        # ... and the database pool of the processes that run the tasks (workers.runtime).
        assert get_settings().worker_concurrency == 150
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(("celery_exit", "expected"), [(1, 1), (None, 0), (0, 0)])
def test_the_worker_exits_with_celerys_code(
    monkeypatch: pytest.MonkeyPatch, celery_exit: int | None, expected: int
) -> None:
    # Celery ends with 1 after an "Unrecoverable error" (a broker connection it could not
    # restore): the process must say so, or a restart-on-failure supervisor leaves it down.
    try:
        code, _ = _run_worker_command(monkeypatch, celery_exit, "--concurrency", "1")
    finally:
        get_settings.cache_clear()
    assert code == expected


@pytest.mark.parametrize(
    ("code", "asked", "expected"),
    [(0, False, 1), (0, True, 0), (1, False, 1), (-9, False, 137), (-15, True, 143)],
)
def test_a_stage_worker_that_ends_by_itself_fails_the_pair(
    code: int, asked: bool, expected: int
) -> None:
    assert launcher.exit_code(code, asked_to_stop=asked) == expected
