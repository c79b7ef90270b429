"""The dashboard's routes, and its overview, documents, document, page image and login pages.

Handlers are thin: the numbers come from the use cases in `pipeline.usecases` (which read the
ops_* views and the tables), blocking database work runs on the thread pool, and every value
reaches the page through Jinja's autoescaping (keys, file names and document text are
untrusted).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape as xml_escape

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pipeline.usecases import browse, overview
from workers.web import charts
from workers.web.dead_letter_pages import (
    dead_letter_page,
    dead_letter_replay,
    dead_letters_page,
    dead_letters_purge,
)
from workers.web.rendering import render
from workers.web.request_helpers import (
    access_denied,
    checked_form,
    date_param,
    int_param,
    read_only,
    text_param,
)
from workers.web.review_pages import (
    doubtful_reasons,
    review_export,
    review_page,
    review_queue,
    review_submit,
)
from workers.web.security import SESSION_COOKIE, safe_next

log = logging.getLogger(__name__)


async def overview_page(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    hours = int_param(request, "hours") or 24
    data = await read_only(request, lambda s: overview.load_overview(s, hours=hours))
    chart = charts.bars(
        [(p.hour, p.pages_per_minute) for p in data.throughput],
        hours=data.hours,
        now=data.now,
    )
    return render(
        request,
        "overview.html",
        {"o": data, "chart": chart, "refresh": request.app.state.dashboard.refresh_s},
    )


def _filters(request: Request) -> browse.DocumentFilter:
    return browse.DocumentFilter(
        status=text_param(request, "status", 32),
        schema_name=text_param(request, "schema", 64),
        bucket=text_param(request, "bucket", 255),
        prefix=text_param(request, "prefix"),
        error_category=text_param(request, "error", 64),
        stage=text_param(request, "stage", 32),
        since=date_param(request, "since"),
        until=date_param(request, "until"),
        search=text_param(request, "q"),
        before_id=int_param(request, "before"),
    )


async def documents_page(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    filters = _filters(request)

    def work(session: Session) -> tuple[Any, Any, Any]:
        rows, next_id = browse.list_documents(session, filters)
        return rows, next_id, browse.filter_choices(session)

    rows, next_id, choices = await read_only(request, work)
    next_link = (
        "/documents?" + urlencode({**filters.params(), "before": next_id}) if next_id else None
    )
    return render(
        request,
        "documents.html",
        {
            "rows": rows,
            "f": filters,
            "choices": choices,
            "next_link": next_link,
            "first_link": "/documents?" + urlencode(filters.params()),
            "refresh": request.app.state.dashboard.refresh_s if not filters.before_id else None,
        },
    )


async def document_page(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    document_id = int(request.path_params["document_id"])

    def work(session: Session) -> browse.DocumentDetail | None:
        detail = browse.load_document(session, document_id)
        if detail is not None and detail.extraction is not None:
            detail.mark_doubtful(set(doubtful_reasons(detail)))
        return detail

    detail = await read_only(request, work)
    if detail is None:
        raise HTTPException(404, f"no document {document_id}")
    return render(
        request,
        "document.html",
        {"d": detail, "doc": detail.document, "reviewed": request.query_params.get("reviewed")},
    )


def _placeholder(message: str) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="120" viewBox="0 0 600 120">'
        '<rect width="600" height="120" fill="#f3f3f3" stroke="#bbb"/>'
        '<text x="20" y="65" font-family="sans-serif" font-size="15" fill="#555">'
        f"{xml_escape(message[:90])}</text></svg>"
    ).encode()


async def page_image(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    document_id = int(request.path_params["document_id"])
    index = int(request.path_params["index"])
    parts = request.app.state.dashboard
    image = await read_only(
        request,
        lambda s: browse.page_image(
            s, parts.s3, document_id, index, max_bytes=parts.max_file_bytes, limits=parts.limits
        ),
    )
    if isinstance(image, str):
        return Response(
            _placeholder(image),
            status_code=404,
            media_type="image/svg+xml",
            headers={"Cache-Control": "no-store"},
        )
    return Response(
        image.data,
        media_type=image.media_type,
        headers={"Cache-Control": "private, max-age=300", "X-Pagemill-Image": image.source},
    )


async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    if request.app.state.access.token is None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", {"next": target, "failed": False})


async def login_submit(request: Request) -> Response:
    access = request.app.state.access
    form = await checked_form(request)
    target = safe_next(str(form.get("next", "")))
    if access.token is None:
        return RedirectResponse(target, status_code=303)
    if not access.token_matches(str(form.get("token", ""))):
        log.info("dashboard login refused from %s", request.client.host if request.client else "?")
        return render(request, "login.html", {"next": target, "failed": True}, 401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        access.session_value(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    await checked_form(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


def routes() -> list[Route]:
    return [
        Route("/", overview_page, methods=["GET"]),
        Route("/documents", documents_page, methods=["GET"]),
        Route("/documents/{document_id:int}", document_page, methods=["GET"]),
        Route("/documents/{document_id:int}/pages/{index:int}", page_image, methods=["GET"]),
        Route("/documents/{document_id:int}/review", review_page, methods=["GET"]),
        Route("/documents/{document_id:int}/review", review_submit, methods=["POST"]),
        Route("/review", review_queue, methods=["GET"]),
        Route("/review/export.zip", review_export, methods=["GET"]),
        Route("/dead-letters", dead_letters_page, methods=["GET"]),
        Route("/dead-letters/purge", dead_letters_purge, methods=["POST"]),
        Route("/dead-letters/{letter_id:int}", dead_letter_page, methods=["GET"]),
        Route("/dead-letters/{letter_id:int}/replay", dead_letter_replay, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
