"""The one ASGI app for everything pagemill serves over HTTP: the bucket-event webhook, the
dashboard, health and readiness, and Prometheus metrics. Built from explicit parts, so the
webhook-only intake (`pagemill ingest --webhook`) and `pagemill web` serve the same routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pipeline.errors import ErrorCategory, PermanentError
from pipeline.pages import Limits
from workers.intake import EVENTS_PATH, WebhookIntake, is_loopback
from workers.web import dashboard, endpoints, rendering
from workers.web.security import LOOPBACK_HOSTS, Access, SecurityHeaders

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class Dashboard:
    """What the dashboard needs beyond the database."""

    s3: Any  # page images rendered from the bucket object, the ground-truth export
    enqueue: Callable[[int], object]  # a replayed dead letter goes back to the workers
    max_file_bytes: int
    limits: Limits
    refresh_s: int = 15


def create_app(
    *,
    host: str,
    sessions: sessionmaker[Session] | None,
    intake: WebhookIntake | None = None,
    dashboard_parts: Dashboard | None = None,
    web_token: str | None = None,
    metrics_registry: CollectorRegistry | None = None,
    on_shutdown: Callable[[], None] | None = None,
    background: Callable[[], object] | None = None,
    background_interval_s: float = 300.0,
) -> Starlette:
    """The app for a server listening on `host`. The dashboard needs `sessions`, and a token
    unless `host` is a loopback address (this raises PermanentError(CONFIGURATION) otherwise)."""
    loopback = is_loopback(host)
    if dashboard_parts is not None:
        if sessions is None:
            raise ValueError("the dashboard needs database sessions")
        if not web_token and not loopback:
            raise PermanentError(
                ErrorCategory.CONFIGURATION,
                f"refusing to serve the dashboard on {host} without a token: set "
                "PAGEMILL_WEB_TOKEN, or listen on 127.0.0.1",
            )
    routes: list[Route | Mount] = [
        Route(EVENTS_PATH, endpoints.events, methods=["POST", "HEAD"]),
        Route("/healthz", endpoints.healthz, methods=["GET", "HEAD"]),
        Route("/readyz", endpoints.readyz, methods=["GET", "HEAD"]),
        Route("/metrics", endpoints.metrics, methods=["GET"]),
    ]
    if dashboard_parts is not None:
        routes += dashboard.routes()
        routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if background is not None and background_interval_s > 0:
            task = asyncio.create_task(_every(background_interval_s, background))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if on_shutdown is not None:
                on_shutdown()

    allowed_hosts = LOOPBACK_HOSTS | {host.lower()} if loopback else None
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, allowed_hosts=allowed_hosts)],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.intake = intake
    app.state.sessions = sessions
    app.state.dashboard = dashboard_parts
    app.state.access = Access(token=web_token or None)
    app.state.metrics_registry = metrics_registry
    return app


async def _every(interval_s: float, work: Callable[[], object]) -> None:
    """Run `work` (blocking) off the event loop now and every `interval_s`; a failure is
    logged and tried again next time."""
    while True:
        try:
            await run_in_threadpool(work)
        except Exception:  # a periodic job must outlive one bad run (logged with its traceback)
            log.exception("periodic job failed; trying again in %.0f s", interval_s)
        await asyncio.sleep(interval_s)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    wants_html = request.app.state.dashboard is not None and "text/html" in request.headers.get(
        "accept", ""
    )
    if wants_html:
        return rendering.error_page(request, exc.status_code, str(exc.detail))
    return JSONResponse(
        {"error": "not found" if exc.status_code == 404 else str(exc.detail)},
        status_code=exc.status_code,
        headers=exc.headers,
    )
