"""The bucket's event queue by hand: take one object's event, release it, count messages."""

from __future__ import annotations

import time
from typing import Any

from pipeline.events import parse_bucket_event
from tests.support.s3_fixtures import BucketWithQueue


def take_event(bucket: BucketWithQueue, key: str, timeout: float = 15.0) -> dict[str, Any]:
    """Receive the queue's event for `key` (deleting the s3:TestEvent on the way); the message
    stays in the queue, invisible until its visibility timeout or `release_event`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = bucket.sqs.receive_message(
            QueueUrl=bucket.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        found: dict[str, Any] | None = None
        for message in response.get("Messages", []):
            refs = parse_bucket_event(message["Body"])
            if not refs:  # the s3:TestEvent: intake would delete it too
                bucket.sqs.delete_message(
                    QueueUrl=bucket.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            elif found is None and any(ref.key == key for ref in refs):
                found = message
            else:
                release_event(bucket, message)
        if found is not None:
            return found
    raise AssertionError(f"no bucket event for {key} within {timeout:g} s")


def release_event(bucket: BucketWithQueue, message: dict[str, Any]) -> None:
    bucket.sqs.change_message_visibility(
        QueueUrl=bucket.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )


def queue_counts(bucket: BucketWithQueue) -> tuple[int, int]:
    attrs = bucket.sqs.get_queue_attributes(
        QueueUrl=bucket.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )
