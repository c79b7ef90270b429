"""Which schema a new object gets: object metadata, then prefix routes, then the default."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.models import DeadLetter, Document
from pipeline.domain import ObjectRef
from pipeline.routing import parse_routes
from pipeline.usecases.ingest import ingest_event_object
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def test_metadata_then_prefix_then_default(
    sessions: sessionmaker[Session], bucket_with_queue: BucketWithQueue
) -> None:
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    routes = parse_routes("receipts/=receipt;*=invoice")
    enqueued: list[int] = []
    uploads = {
        "receipts/r1.jpg": {},
        "invoices/i1.pdf": {},
        "invoices/tagged.pdf": {"pagemill-schema": "receipt"},
        "invoices/unknown.pdf": {"pagemill-schema": "passport"},
    }
    for key, metadata in uploads.items():
        put = s3.put_object(Bucket=bucket, Key=key, Body=b"%PDF-1.4", Metadata=metadata)
        ref = ObjectRef(bucket=bucket, key=key, version=put["ETag"].strip('"'))
        ingest_event_object(
            sessions,
            s3,
            ref,
            routes=routes,
            default_schema="invoice",
            provider="local",
            read_metadata=True,
            enqueue=enqueued.append,
        )
    gone = ingest_event_object(
        sessions,
        s3,
        ObjectRef(bucket=bucket, key="deleted.pdf", version="0" * 32),
        routes=routes,
        default_schema="invoice",
        provider="local",
        read_metadata=True,
        enqueue=enqueued.append,
    )
    assert gone is None

    with sessions() as session:
        docs = {d.key: d for d in session.execute(select(Document)).scalars()}
        letters = list(session.execute(select(DeadLetter)).scalars())
    assert docs["receipts/r1.jpg"].schema_name == "receipt"
    assert docs["invoices/i1.pdf"].schema_name == "invoice"
    assert docs["invoices/tagged.pdf"].schema_name == "receipt"
    unknown = docs["invoices/unknown.pdf"]
    assert unknown.status == "failed" and unknown.error_category == "configuration"
    assert "passport" in (unknown.error_message or "")
    assert [letter.document_id for letter in letters] == [unknown.id]
    assert len(enqueued) == 3 and unknown.id not in enqueued
