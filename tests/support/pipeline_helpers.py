"""Helpers for tests that drive the document use cases in-process against real services."""

from __future__ import annotations

from sqlalchemy import select

from pipeline.db import repository as repo
from pipeline.db.models import Document, VlmCall
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef, Stage
from pipeline.usecases.process import Collaborators, extract_document, prepare_document


def process_document(deps: Collaborators, document_id: int) -> DocumentStatus | Stage | None:
    """The message each stage's worker would get next: prepare, then extract (a retry of a
    document already prepared finds nothing to prepare and goes straight to extract)."""
    outcome = prepare_document(deps, document_id)
    if outcome is Stage.EXTRACT or outcome is None:
        return extract_document(deps, document_id)
    return outcome


def upload(deps: Collaborators, bucket: str, key: str, body: bytes, provider: str) -> int:
    put = deps.s3.put_object(Bucket=bucket, Key=key, Body=body)
    ref = ObjectRef(bucket=bucket, key=key, version=put["ETag"].strip('"'))
    with transaction(deps.sessions) as session:
        document_id, created = repo.register_document(session, ref, "invoice", provider)
    assert created
    return document_id


def calls(deps: Collaborators, document_id: int) -> list[VlmCall]:
    with deps.sessions() as session:
        return list(
            session.execute(
                select(VlmCall).where(VlmCall.document_id == document_id).order_by(VlmCall.id)
            ).scalars()
        )


def document(deps: Collaborators, document_id: int) -> Document:
    with deps.sessions() as session:
        doc = session.get(Document, document_id)
        assert doc is not None
        return doc
