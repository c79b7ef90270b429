"""What the dashboard handlers share: access checks, forms, query parameters, database work."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TypeVar
from urllib.parse import urlencode

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pipeline.db.session import transaction
from workers.web.security import csrf_ok

T = TypeVar("T")


def session_factory(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


async def read_only(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work` in a read-only transaction on the thread pool."""
    sessions = session_factory(request)

    def run() -> T:
        with sessions() as session:
            return work(session)

    return await run_in_threadpool(run)


async def in_transaction(request: Request, work: Callable[[Session], T]) -> T:
    sessions = session_factory(request)

    def run() -> T:
        with transaction(sessions) as session:
            return work(session)

    return await run_in_threadpool(run)


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def access_denied(request: Request) -> Response | None:
    """A redirect to the login page (or 401 for scripts) when the request may not see this."""
    if request.app.state.access.allowed(request):
        return None
    if "text/html" in request.headers.get("accept", ""):
        return _login_redirect(request)
    return Response("token required\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token and origin were checked (403 otherwise)."""
    form = await request.form(max_files=0, max_fields=5000)
    if not csrf_ok(request, form):
        raise HTTPException(403, "the form expired or came from another site: reload the page")
    return form


def int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number") from None


def date_param(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date (YYYY-MM-DD)") from None


def text_param(request: Request, name: str, limit: int = 1024) -> str | None:
    raw = request.query_params.get(name, "").strip()
    return raw[:limit] or None
