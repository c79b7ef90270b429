"""`pagemill worker` as a real process: the connection pools sized by --concurrency, and an
exit code that tells a supervisor the truth."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.support.worker_processes import logged, wait_until, wait_until_exit, worker
from workers import queues

pytestmark = pytest.mark.integration


def test_worker_concurrency_on_the_command_line_sizes_the_connection_pools(
    redis_broker: str, tmp_path: Path
) -> None:
    from workers.app import app

    with worker(
        ["--queues", queues.MAINTENANCE, "--pool", "threads", "--concurrency", "150"],
        # The flag wins over the setting.
        {"PAGEMILL_BROKER_URL": redis_broker, "PAGEMILL_WORKER_CONCURRENCY": "2"},
        tmp_path,
    ) as process:
        wait_until(process, lambda: bool(logged(process, "ready")))
        # Asked over the broker (Celery's remote control), from the worker that runs.
        inspect = app.control.inspect(timeout=10, limit=1)
        confs, stats = inspect.conf() or {}, inspect.stats() or {}
        assert len(confs) == 1 and len(stats) == 1, (confs, stats, process.tail())
        conf, stat = next(iter(confs.values())), next(iter(stats.values()))
        process.stop()
    assert stat["pool"]["max-concurrency"] == 150
    # Late acks need a connection per task in flight on top of the consumer's and the
    # publishers' (FIELD-NOTES: with kombu's default of 10, acks were lost under load).
    assert conf["broker_pool_limit"] >= 151
    options = conf["broker_transport_options"]
    assert options["max_connections"] >= 150 + conf["broker_pool_limit"]
    assert options["visibility_timeout"] == 3600  # the rest kept
    # Asked to stop (SIGTERM, a warm shutdown): a clean exit.
    assert process.popen.returncode == 0, process.tail()


def test_a_worker_stopped_by_an_unrecoverable_error_exits_1(
    redis_broker: str, tmp_path: Path
) -> None:
    # Celery stops with "Unrecoverable error" (exit code 1) on a broker error it does not
    # retry; a process that then exits 0 is left down by a restart-on-failure supervisor.
    # Here: the broker's binding of the worker's queue is not a set (WRONGTYPE on SADD).
    from workers.app import app

    exchange = app.amqp.queues[queues.MAINTENANCE].exchange.name
    client = redis.Redis.from_url(redis_broker)
    client.set(f"_kombu.binding.{exchange}", "not a set")
    client.close()
    with worker(
        ["--queues", queues.MAINTENANCE, "--pool", "threads", "--concurrency", "1"],
        {"PAGEMILL_BROKER_URL": redis_broker},
        tmp_path,
    ) as process:
        assert wait_until_exit(process), process.tail()
    assert logged(process, "Unrecoverable error"), process.tail()
    assert process.popen.returncode == 1, process.tail()
