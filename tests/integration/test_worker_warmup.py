"""Worker warm-up on real `pagemill worker` processes, read from their logs: collaborators are
built at process start in the process that runs the tasks (each prefork child, the main process
of a threads pool), the provider's SDK is imported before the fork by a worker that calls the
provider, and a warm-up that fails is logged there and then fails the first document loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.models import DeadLetter, Document
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef
from pipeline.synthetic import make_invoice, render_pdf
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.worker_processes import logged, wait_until, worker
from workers import devstack

pytestmark = pytest.mark.integration

WARMED = "worker process warmed up"
SDK = "imported the anthropic SDK"
WITH_KEY = {"PAGEMILL_ANTHROPIC_API_KEY": "sk-test-warmup"}  # anthropic is the default provider


def _env(broker: str, **extra: str) -> dict[str, str]:
    return {"PAGEMILL_BROKER_URL": broker, **extra}


def test_prefork_children_warm_up_and_the_main_process_does_not(
    engine: object, redis_broker: str, tmp_path: Path
) -> None:
    with worker(
        ["--queues", "prepare", "--pool", "prefork", "--concurrency", "2"],
        _env(redis_broker, **WITH_KEY),
        tmp_path,
    ) as process:
        wait_until(process, lambda: len(logged(process, WARMED)) >= 2)
        main_pid = process.popen.pid
        wait_until(process, lambda: any(e["pid"] == main_pid for e in logged(process, "ready")))
    warmed = logged(process, WARMED)
    # One warm-up per pool process, none in the main process (it forks them: no sockets or
    # pools built there may cross the fork).
    assert len(warmed) == 2, warmed
    assert {e["process"] for e in warmed} == {"ForkPoolWorker-1", "ForkPoolWorker-2"}
    assert len({e["pid"] for e in warmed}) == 2 and main_pid not in {e["pid"] for e in warmed}
    # A worker that does not consume the extract queue never calls the provider: no SDK import.
    assert not logged(process, SDK)
    assert not logged(process, "warm-up failed")


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_threads_and_solo_pools_warm_up_once_in_the_main_process(
    engine: object, redis_broker: str, tmp_path: Path, pool: str
) -> None:
    # The solo pool also sends worker_process_init in the main process: still one warm-up.
    with worker(
        ["--queues", "prepare", "--pool", pool, "--concurrency", "4"],
        _env(redis_broker),
        tmp_path,
    ) as process:
        wait_until(process, lambda: bool(logged(process, WARMED)))
    warmed = logged(process, WARMED)
    assert len(warmed) == 1, warmed  # once for the process, not once per thread or signal
    assert warmed[0]["pid"] == process.popen.pid and warmed[0]["process"] == "MainProcess"


def test_an_extract_worker_imports_the_provider_sdk_before_it_forks(
    engine: object, redis_broker: str, tmp_path: Path
) -> None:
    with worker(
        ["--queues", "extract", "--pool", "prefork", "--concurrency", "1"],
        _env(redis_broker, **WITH_KEY),
        tmp_path,
    ) as process:
        wait_until(process, lambda: bool(logged(process, WARMED)))
    messages = [e for e in logged(process, "") if e["logger"] == "workers.runtime"]
    sdk = [i for i, e in enumerate(messages) if e["message"].startswith(SDK)]
    warmed = [i for i, e in enumerate(messages) if e["message"].startswith(WARMED)]
    assert len(sdk) == 1 and len(warmed) == 1, messages
    assert messages[sdk[0]]["pid"] == process.popen.pid  # the main process, ...
    assert sdk[0] < warmed[0]  # ... before the pool process it forked warmed up
    assert messages[warmed[0]]["pid"] != process.popen.pid


def test_an_sdk_that_fails_to_import_is_logged_and_the_worker_starts(
    engine: object, redis_broker: str, tmp_path: Path
) -> None:
    # A broken installation of the provider's SDK: its import raises (found first on the path).
    broken = tmp_path / "broken-sdk"
    broken.mkdir()
    (broken / "anthropic.py").write_text('raise ImportError("a broken anthropic install")\n')
    env = _env(redis_broker, PYTHONPATH=str(broken), **WITH_KEY)
    with worker(
        ["--queues", "extract", "--pool", "threads", "--concurrency", "1"], env, tmp_path
    ) as process:
        wait_until(process, lambda: bool(logged(process, WARMED)))
    failed = logged(process, "importing the anthropic SDK failed")
    assert len(failed) == 1 and failed[0]["level"] == "error", failed
    assert "a broken anthropic install" in failed[0]["exception"]
    assert not logged(process, SDK)  # and the worker went on to warm up (the SDK is lazy)


def test_a_failed_warm_up_is_logged_and_the_first_document_fails_with_the_reason(
    sessions: sessionmaker[Session],
    redis_broker: str,
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    tmp_path: Path,
) -> None:
    from workers.tasks.documents import enqueue_document

    # The anthropic provider chosen, its key forgotten (conftest removes it from the env).
    env = _env(
        redis_broker,
        PAGEMILL_PROVIDER="anthropic",
        PAGEMILL_S3_ENDPOINT_URL=s3_server,
        **devstack.DUMMY_CREDENTIALS,
    )
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    put = s3.put_object(Bucket=bucket, Key="in/first.pdf", Body=render_pdf(make_invoice(41)))
    with transaction(sessions) as session:
        doc_id, _ = repo.register_document(
            session,
            ObjectRef(bucket=bucket, key="in/first.pdf", version=put["ETag"].strip('"')),
            "invoice",  # no provider: the worker's default (anthropic) applies
        )

    def final() -> bool:
        with sessions() as session:
            doc = session.get(Document, doc_id)
            return doc is not None and doc.finished_at is not None

    with worker(
        ["--queues", "prepare", "--pool", "prefork", "--concurrency", "1"], env, tmp_path
    ) as process:
        wait_until(process, lambda: bool(logged(process, "warm-up failed")))
        enqueue_document(doc_id)
        wait_until(process, final)

    failed = logged(process, "worker warm-up failed")
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert failed[0]["pid"] != process.popen.pid  # in the pool process, which stays up
    assert "needs an API key" in failed[0]["exception"]  # with the traceback
    assert not logged(process, WARMED)

    # The document is not lost and says why: the task built the extractor again (nothing
    # failed was kept) and failed with the configuration error, dead-lettered for replay.
    with sessions() as session:
        doc = session.get(Document, doc_id)
        assert doc is not None
        letters = list(
            session.execute(select(DeadLetter).where(DeadLetter.document_id == doc_id)).scalars()
        )
    assert doc.status == "failed"
    assert doc.error_category == "configuration"
    assert "PAGEMILL_ANTHROPIC_API_KEY" in (doc.error_message or "")
    assert [(d.task_name, d.error_category) for d in letters] == [("prepare", "configuration")]
    assert any(str(doc_id) in e["message"] for e in logged(process, "failed: "))
