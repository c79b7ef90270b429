"""Builds the web app from settings: database, S3 client, the ingest handle, the Celery nudge.
Shared by `pagemill web`, `pagemill ingest --webhook` and `pagemill demo --keep-running`."""

from __future__ import annotations

import functools
import logging
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette

from pipeline.db.session import make_engine, make_session_factory
from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.routing import configure_schemas
from pipeline.settings import Settings
from pipeline.storage import make_s3_client
from pipeline.usecases.ingest import ingest_event_object
from pipeline.usecases.rollup import margins_for, roll_up
from workers.intake import Handle, WebhookIntake, is_loopback, make_webhook_intake
from workers.telemetry import scrape_registry
from workers.web.app import Dashboard, create_app

log = logging.getLogger(__name__)


def ingest_handle(settings: Settings, sessions: sessionmaker[Session], s3: Any) -> Handle:
    """What a bucket event does: register the object (schema chosen by metadata, routes or the
    default) and nudge the prepare stage."""
    from workers.tasks.documents import nudge

    routes = configure_schemas(settings.user_schemas, settings.schema_routes, settings.schema_name)

    def handle(ref: ObjectRef) -> None:
        ingest_event_object(
            sessions,
            s3,
            ref,
            routes=routes,
            default_schema=settings.schema_name,
            provider=settings.default_provider,
            read_metadata=settings.schema_from_metadata,
            # A broker that is down does not lose the document: Postgres owes it a nudge.
            enqueue=functools.partial(nudge, sessions=sessions),
        )

    return handle


def build_app(
    settings: Settings, host: str, *, dashboard: bool, require_webhook_secret: bool = False
) -> Starlette:
    """The app for `host`. With `dashboard`, everything; without, the webhook and health only.

    The webhook is served when a secret is set or `host` is loopback; `require_webhook_secret`
    (the dedicated intake) makes a missing secret an error instead."""
    from workers.tasks.documents import nudge

    pool = 5 if dashboard else 2
    engine = make_engine(settings.database_url, pool_size=pool)
    sessions = make_session_factory(engine)
    s3 = make_s3_client(settings)
    intake: WebhookIntake | None = None
    secret = settings.webhook_secret
    if secret is None and require_webhook_secret:
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            "set PAGEMILL_WEBHOOK_SECRET: the webhook only accepts signed requests",
        )
    if secret is not None or is_loopback(host):
        intake = make_webhook_intake(host, secret, ingest_handle(settings, sessions, s3))
    else:
        log.warning(
            "bucket-event webhook off on %s: set PAGEMILL_WEBHOOK_SECRET to receive events", host
        )
    parts = None
    if dashboard:
        from pipeline.usecases.process import limits_from

        parts = Dashboard(
            s3=s3,
            enqueue=functools.partial(nudge, sessions=sessions),
            max_file_bytes=settings.max_file_bytes,
            limits=limits_from(settings),
            refresh_s=settings.web_refresh_s,
        )
    token = settings.web_token.get_secret_value() if settings.web_token else None
    margins = margins_for(settings.task_time_limit_s, settings.retry_cap_s)
    return create_app(
        host=host,
        sessions=sessions,
        intake=intake,
        dashboard_parts=parts,
        web_token=token,
        on_shutdown=engine.dispose,
        metrics_registry=scrape_registry(settings),
        # The dashboard keeps its views fast itself, also where no beat runs.
        background=(lambda: roll_up(sessions, margins=margins)) if dashboard else None,
        background_interval_s=settings.ops_rollup_interval_s,
    )
