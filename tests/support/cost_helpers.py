"""Helpers for cost-control tests: the use cases' collaborators with cost control switched on,
uploads of invoices the fake provider knows, and reads of what was recorded."""

from __future__ import annotations

import dataclasses
from typing import Any

import redis
from pydantic import SecretStr
from sqlalchemy import select

from pipeline.cost.circuit import CircuitBreaker, RedisCircuitBreaker
from pipeline.cost.control import CostServices
from pipeline.cost.prompt_cache import RedisActivity
from pipeline.db import repository as repo
from pipeline.db.cost_models import BatchRequest
from pipeline.db.models import Document, Extraction
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef
from pipeline.extractors import build_extractor
from pipeline.extractors.base import Extractor
from pipeline.usecases.process import Collaborators
from tests.conftest import TEST_BROKER_URL
from tests.support.fake_model_server import FakeModelServer


def with_cost(
    deps: Collaborators,
    server: FakeModelServer,
    *,
    shared_state: bool = False,
    circuit: CircuitBreaker | None = None,
    **overrides: Any,
) -> Collaborators:
    """`deps` with cost control on and settings changed by `overrides`; both providers point at
    the fake server. `shared_state` keeps circuits and prompt-cache activity in the test
    Redis (as workers do) instead of in this process."""
    settings = deps.settings.model_copy(
        update={
            "anthropic_api_key": SecretStr("sk-test"),
            "anthropic_base_url": server.anthropic_base_url,
            "openai_base_url": server.openai_base_url,
            "openai_model": "Qwen/Qwen2.5-VL-7B-Instruct",
            **overrides,
        }
    )
    extractors: dict[str, Extractor] = {}

    def extractor_for(name: str) -> Extractor:
        if name not in extractors:
            extractors[name] = build_extractor(settings, name)
        return extractors[name]

    kwargs: dict[str, Any] = {"circuit": circuit} if circuit is not None else {}
    if shared_state:
        client = redis.Redis.from_url(TEST_BROKER_URL)
        # A fresh start: no circuit or prompt-cache traffic left by an earlier test.
        for pattern in ("pagemill:circuit:*", "pagemill:prompt-cache:*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
        kwargs["circuit"] = RedisCircuitBreaker(
            client,
            failure_threshold=settings.circuit_failures,
            open_s=settings.circuit_open_s,
            probe_s=30,
        )
        kwargs["activity"] = RedisActivity(client)
    services = CostServices(settings, deps.prices, deps.sessions, **kwargs)
    return dataclasses.replace(deps, settings=settings, extractor_for=extractor_for, cost=services)


def upload(
    deps: Collaborators,
    bucket: str,
    key: str,
    body: bytes,
    *,
    schema: str = "invoice",
    provider: str = "anthropic",
    priority: str = "standard",
) -> int:
    put = deps.s3.put_object(Bucket=bucket, Key=key, Body=body)
    ref = ObjectRef(bucket=bucket, key=key, version=put["ETag"].strip('"'))
    with transaction(deps.sessions) as session:
        document_id, created = repo.register_document(session, ref, schema, provider)
        assert created
        if priority != "standard":
            session.get_one(Document, document_id).priority = priority
    return document_id


def extraction(deps: Collaborators, document_id: int) -> Extraction:
    with deps.sessions() as session:
        return session.execute(
            select(Extraction).where(Extraction.document_id == document_id)
        ).scalar_one()


def done_but_a_copy(deps: Collaborators, document_id: int, status: DocumentStatus | None) -> bool:
    """A second upload of an invoice already finished: right in every respect, and sent to
    review for the one reason that it is a possible duplicate (pipeline.duplicates)."""
    reasons = extraction(deps, document_id).review_reasons
    return (
        status is DocumentStatus.NEEDS_REVIEW
        and bool(reasons)
        and all(r.startswith("possible duplicate of document ") for r in reasons)
    )


def batch_requests(deps: Collaborators, document_id: int) -> list[BatchRequest]:
    with deps.sessions() as session:
        return list(
            session.execute(
                select(BatchRequest)
                .where(BatchRequest.document_id == document_id)
                .order_by(BatchRequest.id)
            ).scalars()
        )
