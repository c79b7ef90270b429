"""Pytest fixtures for an S3 + SQS server (moto, over HTTP).

Registered by ``tests/conftest.py`` (``pytest_plugins``); a module can also import them::

    from tests.support.s3_fixtures import bucket_with_queue, s3_server

* ``s3_server`` (session): the endpoint URL of one moto server for the whole run.
* ``s3_settings`` (session): `Settings` pointing at it, with dummy credentials.
* ``s3_clients`` (session): ``(s3, sqs)`` clients built from those settings.
* ``bucket_with_queue``: a fresh bucket wired to a fresh SQS queue by
  `ensure_bucket_notifications`; yields ``(s3, sqs, bucket, queue_url)``. The queue still holds
  the ``s3:TestEvent`` that wiring produces. Removed again afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.settings import Settings
from pipeline.storage import ensure_bucket_notifications, make_s3_client, make_sqs_client
from tests.support.s3_server import settings_for
from workers.devstack import start_s3_server


class BucketWithQueue(NamedTuple):
    s3: Any
    sqs: Any
    bucket: str
    queue_url: str


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    server = start_s3_server()
    try:
        yield server.endpoint_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_settings(s3_server: str) -> Settings:
    return settings_for(s3_server)


@pytest.fixture(scope="session")
def s3_clients(s3_settings: Settings) -> Iterator[tuple[Any, Any]]:
    """One S3 and one SQS client for the session (boto3 clients are thread-safe)."""
    s3 = make_s3_client(s3_settings)
    sqs = make_sqs_client(s3_settings)
    yield s3, sqs
    s3.close()
    sqs.close()


@pytest.fixture
def bucket_with_queue(s3_clients: tuple[Any, Any]) -> Iterator[BucketWithQueue]:
    s3, sqs = s3_clients
    suffix = uuid.uuid4().hex[:12]
    bucket = f"pagemill-test-{suffix}"
    queue_url = ensure_bucket_notifications(s3, sqs, bucket, f"pagemill-test-{suffix}")
    try:
        yield BucketWithQueue(s3, sqs, bucket, queue_url)
    finally:
        with contextlib.suppress(ClientError, BotoCoreError):
            for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
                for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    s3.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
            s3.delete_bucket(Bucket=bucket)
        with contextlib.suppress(ClientError, BotoCoreError):
            sqs.delete_queue(QueueUrl=queue_url)
