"""The machine-facing routes: the bucket-event webhook, health, readiness and metrics."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from workers.intake import WebhookIntake, WebhookReply

log = logging.getLogger(__name__)


def _reply(request: Request, reply: WebhookReply) -> Response:
    body = b"" if reply.payload is None else json.dumps(reply.payload).encode("utf-8")
    response = Response(
        body if request.method != "HEAD" else b"",
        status_code=reply.status,
        headers=reply.headers,
        media_type="application/json",
    )
    if request.method == "HEAD":
        response.headers["content-length"] = str(len(body))
    return response


async def events(request: Request) -> Response:
    """``POST /events``: bucket events pushed by an S3-compatible server (see workers.intake).
    ``HEAD /events`` is MinIO's probe (with its token) before it sends events."""
    intake: WebhookIntake | None = request.app.state.intake
    if intake is None:
        return JSONResponse({"error": "the webhook is not served here"}, status_code=404)
    authorized = intake.authorized(request.headers.get("authorization"))
    if request.method == "HEAD":
        status = HTTPStatus.OK if authorized else HTTPStatus.UNAUTHORIZED
        return _reply(request, WebhookReply(status))
    if not authorized:
        client = request.client.host if request.client else "?"
        return _reply(request, intake.unauthorized(client))
    problem = intake.body_problem(
        request.headers.get("content-length"), request.headers.get("transfer-encoding")
    )
    if problem is not None:
        return _reply(request, problem)
    length = int(request.headers["content-length"])
    body = await request.body()
    if len(body) != length:
        problem = WebhookReply(
            HTTPStatus.BAD_REQUEST, {"error": "body shorter than Content-Length"}
        )
        return _reply(request, problem)
    # `handle` blocks (database, broker): off the event loop.
    return _reply(request, await run_in_threadpool(intake.accept, body))


async def healthz(request: Request) -> Response:
    """Live: the process serves requests."""
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def _database_ready(sessions: Any) -> str | None:
    try:
        with sessions() as session:
            session.execute(text("SET LOCAL statement_timeout = '2s'"))
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 -- any failure means "not ready", said in one line
        return " ".join(str(exc).split())[:200]
    return None


async def readyz(request: Request) -> Response:
    """Ready: the database answers (nothing useful can be done without it)."""
    sessions = request.app.state.sessions
    if sessions is None:
        return JSONResponse({"status": "ready"}, headers={"Cache-Control": "no-store"})
    problem = await run_in_threadpool(_database_ready, sessions)
    if problem is not None:
        log.warning("not ready: database unreachable: %s", problem)
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable"},
            status_code=503,
            headers={"Cache-Control": "no-store", "Retry-After": "5"},
        )
    return JSONResponse({"status": "ready"}, headers={"Cache-Control": "no-store"})


async def metrics(request: Request) -> Response:
    """Prometheus text format from the registry the app was given (default: the process's)."""
    registry = request.app.state.metrics_registry or REGISTRY
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
