"""Fixtures for the integration tests: the use cases wired to real Postgres, S3 and the fake API."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from pipeline.costing import load_price_table
from pipeline.extractors import build_extractor
from pipeline.settings import Settings
from pipeline.usecases.process import Collaborators
from tests.support.fake_model_server import FakeModelServer
from tests.support.s3_fixtures import BucketWithQueue


@pytest.fixture
def deps(
    sessions: sessionmaker[Session],
    s3_settings: Settings,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: FakeModelServer,
) -> Collaborators:
    settings = s3_settings.model_copy(
        update={
            "anthropic_api_key": SecretStr("sk-test"),
            "anthropic_base_url": fake_model_server.anthropic_base_url,
            "anthropic_model": "claude-sonnet-4-6",
            "task_max_retries": 2,
        }
    )
    extractors: dict[str, Any] = {}

    def extractor_for(name: str) -> Any:
        if name not in extractors:
            extractors[name] = build_extractor(settings, name)
        return extractors[name]

    return Collaborators(
        sessions=sessions,
        s3=bucket_with_queue.s3,
        extractor_for=extractor_for,
        prices=load_price_table(),
        settings=settings,
    )
