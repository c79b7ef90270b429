"""Bucket events end to end against a real S3 + SQS server (moto over HTTP).

Objects with awkward keys are uploaded, S3 puts notifications on SQS, and `consume_sqs` must
hand over the decoded keys with their ETags, skip the ``s3:TestEvent``, leave failed messages for
redelivery and delete malformed ones. The webhook intake is in test_webhook_intake.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError, TransientError
from pipeline.settings import Settings
from pipeline.storage import (
    download,
    ensure_bucket_notifications,
    head_object,
    list_objects,
    looks_like_version_id,
    make_s3_client,
    make_sqs_client,
)
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.s3_server import settings_for
from workers.intake import IntakeStats, consume_sqs

pytestmark = pytest.mark.integration

AWKWARD_KEYS = [
    "in/plain.pdf",
    "in/space name+plus.pdf",
    "in/percent 100%25 %.pdf",
    "in/ünïcødé €.pdf",
    "in/a&b=c?d#e.pdf",
    "in/deep/er/path/x.pdf",
]


# --- helpers -----------------------------------------------------------------------------------


def put(bwq: BucketWithQueue, key: str, body: bytes = b"%PDF-1.7 test") -> str:
    """Upload and return the ETag without quotes."""
    etag: str = bwq.s3.put_object(Bucket=bwq.bucket, Key=key, Body=body)["ETag"]
    return etag.strip('"')


def run_consumer(
    bwq: BucketWithQueue,
    handle: Callable[[ObjectRef], None],
    until: Callable[[IntakeStats], bool],
    *,
    timeout_s: float = 15.0,
) -> IntakeStats:
    """Run consume_sqs in a thread until `until(stats)` holds, then stop it."""
    stop = threading.Event()
    stats = IntakeStats()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            consume_sqs(bwq.sqs, bwq.queue_url, handle, wait_seconds=1, stop=stop, stats=stats)
        except Exception as exc:  # noqa: BLE001 -- re-raised in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not until(stats) and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive(), "consume_sqs did not stop"
    if errors:
        raise errors[0]
    assert until(stats), f"condition not reached before the timeout: {stats}"
    return stats


def queue_depth(bwq: BucketWithQueue) -> int:
    attrs = bwq.sqs.get_queue_attributes(
        QueueUrl=bwq.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def receive_event_body(bwq: BucketWithQueue) -> dict[str, Any]:
    """Pull the next message that has Records (skipping the test event) without deleting it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for message in bwq.sqs.receive_message(
            QueueUrl=bwq.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", []):
            body = json.loads(message["Body"])
            if "Records" in body:
                return {"body": message["Body"], "receipt": message["ReceiptHandle"]}
            bwq.sqs.delete_message(QueueUrl=bwq.queue_url, ReceiptHandle=message["ReceiptHandle"])
    raise AssertionError("no S3 event arrived on the queue")


# --- SQS intake --------------------------------------------------------------------------------


def test_created_objects_arrive_with_decoded_keys_and_etags(
    bucket_with_queue: BucketWithQueue,
) -> None:
    bwq = bucket_with_queue
    expected = {key: put(bwq, key, f"body of {key}".encode()) for key in AWKWARD_KEYS}
    seen: list[ObjectRef] = []

    stats = run_consumer(bwq, seen.append, lambda s: s.refs_handled >= len(AWKWARD_KEYS))

    assert sorted(r.key for r in seen) == sorted(AWKWARD_KEYS)
    for ref in seen:
        assert ref.bucket == bwq.bucket
        assert ref.version == expected[ref.key]
        assert ref.size == len(f"body of {ref.key}".encode())
        assert ref.event_name == "ObjectCreated:Put"
        assert ref.event_time
    assert stats.ignored == 1  # the s3:TestEvent sent when notifications were configured
    assert stats.malformed == 0
    assert stats.failed == 0
    assert stats.deleted == len(AWKWARD_KEYS) + 1
    assert queue_depth(bwq) == 0


def test_the_initial_test_event_is_skipped(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    seen: list[ObjectRef] = []

    stats = run_consumer(bwq, seen.append, lambda s: s.ignored >= 1)

    assert seen == []
    assert stats.deleted == 1
    assert queue_depth(bwq) == 0


def test_failed_handle_leaves_the_message_and_redelivery_gives_the_same_ref(
    bucket_with_queue: BucketWithQueue,
) -> None:
    bwq = bucket_with_queue
    bwq.sqs.set_queue_attributes(QueueUrl=bwq.queue_url, Attributes={"VisibilityTimeout": "1"})
    etag = put(bwq, "in/retry me.pdf")
    calls: list[ObjectRef] = []

    def flaky(ref: ObjectRef) -> None:
        calls.append(ref)
        if len(calls) == 1:
            raise TransientError(ErrorCategory.DATABASE_UNAVAILABLE, "database down")

    stats = run_consumer(bwq, flaky, lambda s: s.refs_handled >= 1)

    assert len(calls) == 2
    assert calls[0] == calls[1]
    assert calls[0].key == "in/retry me.pdf"
    assert calls[0].version == etag
    assert stats.failed == 1
    assert queue_depth(bwq) == 0


def test_duplicate_message_yields_an_equal_ref(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    put(bwq, "in/dup+licate.pdf")
    original = receive_event_body(bwq)
    # S3 delivers at least once: the same notification may arrive twice.
    bwq.sqs.change_message_visibility(
        QueueUrl=bwq.queue_url, ReceiptHandle=original["receipt"], VisibilityTimeout=0
    )
    bwq.sqs.send_message(QueueUrl=bwq.queue_url, MessageBody=original["body"])
    seen: list[ObjectRef] = []

    run_consumer(bwq, seen.append, lambda s: s.refs_handled >= 2)

    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[0].key == "in/dup+licate.pdf"
    assert queue_depth(bwq) == 0


def test_malformed_message_is_deleted_and_counted(
    bucket_with_queue: BucketWithQueue, caplog: pytest.LogCaptureFixture
) -> None:
    bwq = bucket_with_queue
    sent = bwq.sqs.send_message(QueueUrl=bwq.queue_url, MessageBody="this is not an event")
    seen: list[ObjectRef] = []

    with caplog.at_level("WARNING", logger="workers.intake"):
        stats = run_consumer(bwq, seen.append, lambda s: s.malformed >= 1 and s.ignored >= 1)

    assert seen == []
    assert stats.malformed == 1
    assert queue_depth(bwq) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(sent["MessageId"] in w for w in warnings)
    assert not any("this is not an event" in w for w in warnings)


class FlakySQS:
    """The real SQS client, except that the first ReceiveMessage cannot connect."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.failed = False

    def receive_message(self, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        return self._sqs.receive_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_transient_receive_error_is_retried(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    put(bwq, "in/after outage.pdf")
    flaky = BucketWithQueue(bwq.s3, FlakySQS(bwq.sqs), bwq.bucket, bwq.queue_url)
    seen: list[ObjectRef] = []

    stats = run_consumer(flaky, seen.append, lambda s: s.refs_handled >= 1)

    assert stats.receive_errors == 1
    assert [r.key for r in seen] == ["in/after outage.pdf"]


class RecordingSQS:
    """The real SQS client, recording what was received and how it was deleted.

    `corrupt_keys`: in the first DeleteMessageBatch call, the entries of messages naming one of
    these keys get an invalid receipt handle, so the server reports them in `Failed`.
    `batch_error`: raised instead of the first DeleteMessageBatch call.
    """

    def __init__(
        self,
        sqs: Any,
        *,
        corrupt_keys: tuple[str, ...] = (),
        batch_error: Exception | None = None,
    ) -> None:
        self._sqs = sqs
        self.corrupt_keys = corrupt_keys
        self.batch_error = batch_error
        self.bodies: dict[str, str] = {}  # receipt handle -> body
        self.received: list[int] = []  # messages per non-empty receive
        self.batches: list[int] = []  # entries per DeleteMessageBatch call
        self.singles = 0  # DeleteMessage calls

    def receive_message(self, **kwargs: Any) -> Any:
        response = self._sqs.receive_message(**kwargs)
        messages = response.get("Messages", [])
        if messages:
            self.received.append(len(messages))
        for message in messages:
            self.bodies[message["ReceiptHandle"]] = message["Body"]
        return response

    def delete_message_batch(self, **kwargs: Any) -> Any:
        first = not self.batches
        self.batches.append(len(kwargs["Entries"]))
        if first and self.batch_error is not None:
            raise self.batch_error
        if first and self.corrupt_keys:
            kwargs["Entries"] = [
                {**e, "ReceiptHandle": "not-a-receipt-handle"}
                if any(k in self.bodies.get(e["ReceiptHandle"], "") for k in self.corrupt_keys)
                else e
                for e in kwargs["Entries"]
            ]
        return self._sqs.delete_message_batch(**kwargs)

    def delete_message(self, **kwargs: Any) -> Any:
        self.singles += 1
        return self._sqs.delete_message(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)


def test_each_receive_is_deleted_with_one_batch_request(
    bucket_with_queue: BucketWithQueue,
) -> None:
    bwq = bucket_with_queue
    keys = [f"in/batch {i}.pdf" for i in range(7)]
    for key in keys:
        put(bwq, key)
    recording = RecordingSQS(bwq.sqs)
    seen: list[ObjectRef] = []

    stats = run_consumer(
        BucketWithQueue(bwq.s3, recording, bwq.bucket, bwq.queue_url),
        seen.append,
        lambda s: s.deleted >= len(keys) + 1,
    )

    assert sorted(r.key for r in seen) == sorted(keys)
    assert recording.batches == recording.received  # one request per receive, all of it
    assert recording.singles == 0
    assert stats.delete_calls == len(recording.received)
    assert stats.deleted == len(keys) + 1  # and the s3:TestEvent
    assert stats.delete_errors == 0
    assert queue_depth(bwq) == 0


def test_partial_batch_delete_failure_redelivers_only_the_failed_message(
    bucket_with_queue: BucketWithQueue, caplog: pytest.LogCaptureFixture
) -> None:
    bwq = bucket_with_queue
    bwq.sqs.set_queue_attributes(QueueUrl=bwq.queue_url, Attributes={"VisibilityTimeout": "1"})
    keys = ["in/lucky one.pdf", "in/unlucky.pdf", "in/lucky two.pdf"]
    for key in keys:
        put(bwq, key)
    recording = RecordingSQS(bwq.sqs, corrupt_keys=("unlucky",))
    seen: list[ObjectRef] = []

    with caplog.at_level("WARNING", logger="workers.intake"):
        stats = run_consumer(
            BucketWithQueue(bwq.s3, recording, bwq.bucket, bwq.queue_url),
            seen.append,
            lambda s: s.deleted >= len(keys) + 1,
        )

    # The failed entry came back and was handled again (a duplicate); the others did not.
    assert sorted(r.key for r in seen) == sorted([*keys, "in/unlucky.pdf"])
    assert stats.delete_errors == 1
    assert stats.deleted == len(keys) + 1
    assert queue_depth(bwq) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "ReceiptHandleIsInvalid" in warnings[0]
    assert "will be delivered again" in warnings[0]
    assert "not-a-receipt-handle" not in warnings[0]


def test_failed_batch_delete_request_leaves_the_messages_for_redelivery(
    bucket_with_queue: BucketWithQueue,
) -> None:
    bwq = bucket_with_queue
    bwq.sqs.set_queue_attributes(QueueUrl=bwq.queue_url, Attributes={"VisibilityTimeout": "1"})
    keys = ["in/first.pdf", "in/second.pdf"]
    for key in keys:
        put(bwq, key)
    recording = RecordingSQS(
        bwq.sqs, batch_error=EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    )
    seen: list[ObjectRef] = []

    stats = run_consumer(
        BucketWithQueue(bwq.s3, recording, bwq.bucket, bwq.queue_url),
        seen.append,
        lambda s: s.deleted >= len(keys) + 1,
    )

    assert stats.delete_errors == recording.batches[0]
    # Every message of the failed request came back once and was then deleted.
    assert stats.messages == stats.deleted + recording.batches[0]
    assert {r.key for r in seen} == set(keys)
    assert queue_depth(bwq) == 0


def test_server_without_batch_delete_gets_single_deletes(
    bucket_with_queue: BucketWithQueue,
) -> None:
    bwq = bucket_with_queue
    keys = ["in/one.pdf", "in/two.pdf", "in/three.pdf"]
    for key in keys:
        put(bwq, key)
    unsupported = ClientError(
        {"Error": {"Code": "UnsupportedOperation", "Message": "not supported"}},
        "DeleteMessageBatch",
    )
    recording = RecordingSQS(bwq.sqs, batch_error=unsupported)
    seen: list[ObjectRef] = []

    stats = run_consumer(
        BucketWithQueue(bwq.s3, recording, bwq.bucket, bwq.queue_url),
        seen.append,
        lambda s: s.deleted >= len(keys) + 1,
    )

    assert sorted(r.key for r in seen) == sorted(keys)  # no redelivery
    assert len(recording.batches) == 1  # tried once, then no more
    assert recording.singles == len(keys) + 1
    assert stats.delete_errors == 0
    assert queue_depth(bwq) == 0


def test_missing_queue_is_a_configuration_error(s3_settings: Settings) -> None:
    sqs = make_sqs_client(s3_settings)
    queue_url = sqs.create_queue(QueueName="pagemill-test-gone")["QueueUrl"]
    sqs.delete_queue(QueueUrl=queue_url)

    with pytest.raises(PermanentError) as caught:
        consume_sqs(sqs, queue_url, lambda ref: None, wait_seconds=0, stop=threading.Event())
    assert caught.value.category is ErrorCategory.CONFIGURATION


# --- bucket wiring -----------------------------------------------------------------------------


def test_ensure_bucket_notifications_is_idempotent_and_keeps_other_queues(
    bucket_with_queue: BucketWithQueue,
) -> None:
    bwq = bucket_with_queue
    queue_name = bwq.queue_url.rsplit("/")[-1]
    assert ensure_bucket_notifications(bwq.s3, bwq.sqs, bwq.bucket, queue_name) == bwq.queue_url

    # Only one test event on the queue: the second call left the bucket alone.
    stats = run_consumer(bwq, lambda ref: None, lambda s: s.ignored >= 1)
    assert stats.ignored == 1
    assert queue_depth(bwq) == 0

    policy = json.loads(
        bwq.sqs.get_queue_attributes(QueueUrl=bwq.queue_url, AttributeNames=["Policy"])[
            "Attributes"
        ]["Policy"]
    )
    (statement,) = policy["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{bwq.bucket}"

    # A second destination is added next to the first, not instead of it.
    other_url = ensure_bucket_notifications(bwq.s3, bwq.sqs, bwq.bucket, queue_name + "-audit")
    try:
        config = bwq.s3.get_bucket_notification_configuration(Bucket=bwq.bucket)
        ids = sorted(q["Id"] for q in config["QueueConfigurations"])
        assert ids == [f"pagemill-{queue_name}", f"pagemill-{queue_name}-audit"]
        assert all(q["Events"] == ["s3:ObjectCreated:*"] for q in config["QueueConfigurations"])
    finally:
        bwq.sqs.delete_queue(QueueUrl=other_url)


# --- storage helpers ---------------------------------------------------------------------------


def test_download_and_head(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    body = b"%PDF-1.7 " + bytes(range(256))
    etag = put(bwq, "in/ünï €.pdf", body)
    ref = ObjectRef(bucket=bwq.bucket, key="in/ünï €.pdf", version=etag)

    assert download(bwq.s3, ref, max_bytes=len(body)) == body
    headed = head_object(bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/ünï €.pdf"))
    assert headed.size == len(body)
    assert headed.version == etag


def test_download_missing_key_is_not_found(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    with pytest.raises(PermanentError) as caught:
        download(bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/nope.pdf"), max_bytes=1000)
    assert caught.value.category is ErrorCategory.NOT_FOUND
    assert "in/nope.pdf" in caught.value.message

    with pytest.raises(PermanentError) as caught:
        head_object(bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/nope.pdf"))
    assert caught.value.category is ErrorCategory.NOT_FOUND

    with pytest.raises(PermanentError) as caught:
        download(bwq.s3, ObjectRef(bucket=bwq.bucket + "-nope", key="x.pdf"), max_bytes=10)
    assert caught.value.category is ErrorCategory.NOT_FOUND


def test_download_over_max_bytes_is_too_large(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    put(bwq, "in/big.pdf", b"x" * 2048)

    # Size unknown up front: refused on the server's Content-Length.
    with pytest.raises(PermanentError) as caught:
        download(bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/big.pdf"), max_bytes=2047)
    assert caught.value.category is ErrorCategory.TOO_LARGE

    # Size known from the event: refused without a request.
    with pytest.raises(PermanentError) as caught:
        download(
            bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/absent.pdf", size=4096), max_bytes=2047
        )
    assert caught.value.category is ErrorCategory.TOO_LARGE

    assert len(download(bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/big.pdf"), 2048)) == 2048


def test_versioned_bucket_downloads_the_version_named(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    bwq.s3.put_bucket_versioning(Bucket=bwq.bucket, VersioningConfiguration={"Status": "Enabled"})
    first = bwq.s3.put_object(Bucket=bwq.bucket, Key="in/v.pdf", Body=b"first")["VersionId"]
    bwq.s3.put_object(Bucket=bwq.bucket, Key="in/v.pdf", Body=b"second version")
    assert looks_like_version_id(first)

    old = ObjectRef(bucket=bwq.bucket, key="in/v.pdf", version=first)
    assert download(bwq.s3, old, max_bytes=100) == b"first"
    assert head_object(bwq.s3, old) == ObjectRef(
        bucket=bwq.bucket, key="in/v.pdf", version=first, size=5
    )
    latest = head_object(bwq.s3, ObjectRef(bucket=bwq.bucket, key="in/v.pdf"))
    assert latest.version not in {"", first}
    assert latest.size == len(b"second version")


def test_list_objects_returns_decoded_keys(bucket_with_queue: BucketWithQueue) -> None:
    bwq = bucket_with_queue
    etags = {key: put(bwq, key) for key in AWKWARD_KEYS}
    put(bwq, "elsewhere/skip.pdf")

    listed = list(list_objects(bwq.s3, bwq.bucket, prefix="in/"))

    assert {r.key: r.version for r in listed} == etags
    assert all(r.size == len(b"%PDF-1.7 test") and r.event_time for r in listed)


def test_unreachable_server_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s3 = make_s3_client(settings_for(f"http://127.0.0.1:{port}"))
    with pytest.raises(TransientError) as caught:
        download(s3, ObjectRef(bucket="some-bucket", key="x.pdf"), max_bytes=10)
    assert caught.value.category is ErrorCategory.STORAGE_UNAVAILABLE
