"""Log lines: JSON objects with the context of the work (per thread), or text with the same."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from pipeline import logs


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("pagemill.test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_line_carries_the_context_it_was_logged_in(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    logger.info("before")
    with logs.bound(task_id="t-1", document_id=7, stage="extract"):
        logs.bind(provider_request_id="req_1")
        logger.info("call %s done", 1)
    logger.info("after")
    before, during, after = lines(stream)
    assert before["message"] == "before" and "document_id" not in before
    assert during["message"] == "call 1 done"
    assert {k: during[k] for k in logs.FIELDS} == {
        "document_id": 7,
        "task_id": "t-1",
        "stage": "extract",
        "provider_request_id": "req_1",
    }
    assert during["level"] == "info" and during["logger"] == "pagemill.test"
    assert not set(logs.FIELDS) & set(after)  # the block restored the outer (empty) context


def test_threads_keep_their_own_context(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = captured
    both_bound = threading.Barrier(2)

    def work(document_id: int) -> None:
        logs.bind(document_id=document_id, task_id=f"task-{document_id}")
        both_bound.wait(5)  # each thread logs only after the other one bound its own values
        logger.info("working on %d", document_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    for line in lines(stream):
        assert line["message"] == f"working on {line['document_id']}"
        assert line["task_id"] == f"task-{line['document_id']}"


def test_celery_lines_outside_a_task_name_their_task(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    _, stream = captured
    celery = logging.getLogger("celery.worker.strategy")
    celery.addHandler(logging.getLogger("pagemill.test").handlers[0])
    celery.propagate = False
    try:
        context = {"id": "abc-123", "name": "pagemill.prepare_document"}
        celery.warning("Task %(name)s[%(id)s] received", context, extra={"data": context})
    finally:
        celery.handlers.clear()
        celery.propagate = True
    (line,) = lines(stream)
    assert line["message"] == "Task pagemill.prepare_document[abc-123] received"
    assert line["task_id"] == "abc-123"


def test_a_traceback_stays_inside_its_json_line(
    captured: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = captured
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logger.exception("failed")
    (line,) = lines(stream)  # one line, though the traceback has many
    assert line["level"] == "error"
    assert "ValueError: boom" in str(line["exception"])


def test_text_lines_append_the_known_fields() -> None:
    record = logging.LogRecord("pagemill.x", logging.INFO, __file__, 1, "done", None, None)
    with logs.bound(document_id=3, task_id=None):
        logs.ContextFilter().filter(record)
    text = logs.TextFormatter().format(record)
    assert text.endswith("pagemill.x: done [document_id=3]")


def test_celery_text_lines_keep_their_format_and_gain_the_fields() -> None:
    # Celery's own text format (scripts and the fault tests read it) with the fields appended.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("[%(levelname)s/%(processName)s] %(message)s"))
    logs.append_context(handler)
    logs.append_context(handler)  # idempotent: one filter, one suffix
    logger = logging.getLogger("pagemill.test.celery")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logs.bound(task_id="t-9", stage="prepare"):
            logger.warning("Scheduler: Sending due task sweep")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == (
        "[WARNING/MainProcess] Scheduler: Sending due task sweep [task_id=t-9 stage=prepare]\n"
    )
