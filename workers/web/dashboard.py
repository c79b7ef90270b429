"""The dashboard's pages: overview, documents, one document, review, dead letters, login.

Handlers are thin: the numbers come from the use cases in `pipeline.usecases` (which read the
ops_* views and the tables), blocking database work runs on the thread pool, and every value
reaches the page through Jinja's autoescaping (keys, file names and document text are
untrusted).
"""

from __future__ import annotations

import io
import logging
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode
from xml.sax.saxutils import escape as xml_escape

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from pipeline.db.session import transaction
from pipeline.money import usd
from pipeline.usecases import browse, dead_letters, overview, review
from workers.web import charts
from workers.web.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    csrf_ok,
    csrf_token,
    safe_next,
    set_cookies,
)

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REVIEWER_COOKIE = "pagemill_reviewer"
T = TypeVar("T")


# --- formatting ----------------------------------------------------------------------------


def money(value: Any) -> str:
    """Plain decimal dollars (`pipeline.money.usd`), shortened for the eye: at least cents,
    at most 8 places, no trailing zeros beyond the cents."""
    if value is None:
        return "–"
    whole, _, frac = usd(value, 8).partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(2, '0')}"


def seconds(value: Any) -> str:
    if value is None:
        return "–"
    s = float(value)
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    if s < 86400:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    return f"{int(s // 86400)} d {int(s % 86400 // 3600)} h"


def when(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def number(value: Any) -> str:
    return "–" if value is None else f"{int(value):,}"


def shown(value: Any) -> str:
    return "" if value is None else str(value)


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(money=money, seconds=seconds, when=when, number=number, shown=shown)


def render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    parts = request.app.state.dashboard
    page = _env.get_template(name).render(
        request=request,
        csrf_field=CSRF_FIELD,
        csrf=csrf_token(request),
        # Logging out only makes sense with a token, once logged in.
        show_logout=request.app.state.access.token is not None
        and request.app.state.access.allowed(request),
        refresh=context.pop("refresh", None),
        refresh_s=parts.refresh_s,
        **context,
    )
    response = HTMLResponse(page, status_code=status_code, headers={"Cache-Control": "no-store"})
    return set_cookies(request, response)


def error_page(request: Request, status_code: int, message: str) -> Response:
    return render(request, "error.html", {"status": status_code, "message": message}, status_code)


# --- plumbing ------------------------------------------------------------------------------


def _sessions(request: Request) -> sessionmaker[Session]:
    sessions: sessionmaker[Session] = request.app.state.sessions
    return sessions


async def _read(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work` in a read-only transaction on the thread pool."""
    sessions = _sessions(request)

    def run() -> T:
        with sessions() as session:
            return work(session)

    return await run_in_threadpool(run)


async def _write(request: Request, work: Callable[[Session], T]) -> T:
    sessions = _sessions(request)

    def run() -> T:
        with transaction(sessions) as session:
            return work(session)

    return await run_in_threadpool(run)


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


def _denied(request: Request) -> Response | None:
    """A redirect to the login page (or 401 for scripts) when the request may not see this."""
    if request.app.state.access.allowed(request):
        return None
    if "text/html" in request.headers.get("accept", ""):
        return _login_redirect(request)
    return Response("token required\n", status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _form(request: Request) -> FormData:
    """The posted form, once its CSRF token and origin were checked (403 otherwise)."""
    form = await request.form(max_files=0, max_fields=5000)
    if not csrf_ok(request, form):
        raise HTTPException(403, "the form expired or came from another site: reload the page")
    return form


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a number") from None


def _date_param(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be a date (YYYY-MM-DD)") from None


def _text_param(request: Request, name: str, limit: int = 1024) -> str | None:
    raw = request.query_params.get(name, "").strip()
    return raw[:limit] or None


# --- pages ---------------------------------------------------------------------------------


async def overview_page(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    hours = _int_param(request, "hours") or 24
    data = await _read(request, lambda s: overview.load_overview(s, hours=hours))
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
        status=_text_param(request, "status", 32),
        schema_name=_text_param(request, "schema", 64),
        bucket=_text_param(request, "bucket", 255),
        prefix=_text_param(request, "prefix"),
        error_category=_text_param(request, "error", 64),
        stage=_text_param(request, "stage", 32),
        since=_date_param(request, "since"),
        until=_date_param(request, "until"),
        search=_text_param(request, "q"),
        before_id=_int_param(request, "before"),
    )


async def documents_page(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    filters = _filters(request)

    def work(session: Session) -> tuple[Any, Any, Any]:
        rows, next_id = browse.list_documents(session, filters)
        return rows, next_id, browse.filter_choices(session)

    rows, next_id, choices = await _read(request, work)
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
    if (denied := _denied(request)) is not None:
        return denied
    document_id = int(request.path_params["document_id"])

    def work(session: Session) -> browse.DocumentDetail | None:
        detail = browse.load_document(session, document_id)
        if detail is not None and detail.extraction is not None:
            detail.mark_doubtful(set(_doubtful(detail)))
        return detail

    detail = await _read(request, work)
    if detail is None:
        raise HTTPException(404, f"no document {document_id}")
    return render(
        request,
        "document.html",
        {"d": detail, "doc": detail.document, "reviewed": request.query_params.get("reviewed")},
    )


def _doubtful(detail: browse.DocumentDetail) -> dict[str, list[str]]:
    extraction = detail.extraction or {}
    return review.doubtful_fields(
        detail.document["schema_name"], extraction.get("data"), extraction.get("grounding")
    )


def _placeholder(message: str) -> bytes:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="600" height="120" viewBox="0 0 600 120">'
        '<rect width="600" height="120" fill="#f3f3f3" stroke="#bbb"/>'
        '<text x="20" y="65" font-family="sans-serif" font-size="15" fill="#555">'
        f"{xml_escape(message[:90])}</text></svg>"
    ).encode()


async def page_image(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    document_id = int(request.path_params["document_id"])
    index = int(request.path_params["index"])
    parts = request.app.state.dashboard
    image = await _read(
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


# --- review --------------------------------------------------------------------------------


async def review_queue(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    before = _int_param(request, "before")

    def work(session: Session) -> tuple[Any, Any, Any]:
        rows, next_id = browse.list_documents(
            session, browse.DocumentFilter(status="needs_review", before_id=before)
        )
        return rows, next_id, review.reviewed_cases(session)

    rows, next_id, reviewed = await _read(request, work)
    return render(
        request,
        "review_queue.html",
        {
            "rows": rows,
            "reviewed": reviewed,
            "next_link": f"/review?before={next_id}" if next_id else None,
            "refresh": request.app.state.dashboard.refresh_s,
        },
    )


async def _review_context(request: Request, document_id: int) -> dict[str, Any]:
    def work(session: Session) -> tuple[Any, dict[str, list[str]]]:
        detail = browse.load_document(session, document_id)
        if detail is None or detail.extraction is None:
            return detail, {}
        doubtful = _doubtful(detail)
        detail.mark_doubtful(set(doubtful))
        return detail, doubtful

    detail, doubtful = await _read(request, work)
    if detail is None:
        raise HTTPException(404, f"no document {document_id}")
    fields = sorted(detail.fields, key=lambda f: not f["doubtful"])  # doubtful first
    return {
        "d": detail,
        "doc": detail.document,
        "fields": fields,
        "reasons": doubtful,
        "reviewer": request.cookies.get(REVIEWER_COOKIE, ""),
    }


async def review_page(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    context = await _review_context(request, int(request.path_params["document_id"]))
    return render(request, "review.html", {**context, "errors": []})


async def review_submit(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    document_id = int(request.path_params["document_id"])
    form = await _form(request)
    reviewer = str(form.get("reviewer", ""))
    answers = {
        str(name)[len("field:") :]: str(value)
        for name, value in form.multi_items()
        if str(name).startswith("field:")
    }
    try:
        outcome = await _write(
            request, lambda s: review.apply_review(s, document_id, reviewer, answers)
        )
    except review.ReviewError as exc:
        context = await _review_context(request, document_id)
        errors = exc.errors if isinstance(exc, review.ReviewInvalid) else [str(exc)]
        status = 409 if isinstance(exc, review.ReviewConflict) else 400
        context["reviewer"] = reviewer
        context["answers"] = answers
        return render(request, "review.html", {**context, "errors": errors}, status)
    log.info(
        "document %s reviewed: %d corrected, %d accepted",
        document_id,
        len(outcome.corrected),
        len(outcome.accepted),
    )
    response = RedirectResponse(f"/documents/{document_id}?reviewed=1", status_code=303)
    response.set_cookie(
        REVIEWER_COOKIE,
        " ".join(reviewer.split())[: review.MAX_REVIEWER_CHARS],
        httponly=True,
        samesite="strict",
        max_age=90 * 86400,
    )
    return response


async def review_export(request: Request) -> Response:
    """The reviewed documents as a zip in the layout `pagemill eval` reads."""
    if (denied := _denied(request)) is not None:
        return denied
    parts = request.app.state.dashboard
    sessions = _sessions(request)

    def build() -> tuple[str, int]:
        with sessions() as session:
            cases = review.reviewed_cases(session)
        handle = tempfile.NamedTemporaryFile(prefix="pagemill-review-", suffix=".zip", delete=False)  # noqa: SIM115 -- closed below, removed after sending
        with handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            result = review.export_ground_truth(
                cases,
                parts.s3,
                lambda name, data: archive.writestr(f"pagemill-review/{name}", data),
                max_bytes=parts.max_file_bytes,
            )
            archive.writestr("pagemill-review/README.txt", _export_readme(result))
        return handle.name, len(result.exported)

    path, count = await run_in_threadpool(build)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"pagemill-review-{stamp}.zip",
        headers={"Cache-Control": "no-store", "X-Pagemill-Documents": str(count)},
        background=BackgroundTask(Path(path).unlink, missing_ok=True),
    )


def _export_readme(result: review.ExportResult) -> str:
    out = io.StringIO()
    out.write(
        "Reviewed documents exported by pagemill as ground truth.\n"
        "Score an extractor on them with:  pagemill eval pagemill-review\n\n"
        f"{len(result.exported)} document(s) exported.\n"
    )
    for name, why in result.skipped.items():
        out.write(f"skipped {name}: {why}\n")
    return out.getvalue()


# --- dead letters --------------------------------------------------------------------------


async def dead_letters_page(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    category = _text_param(request, "category", 64)
    include_replayed = request.query_params.get("all") == "1"
    letters = await _read(
        request,
        lambda s: dead_letters.list_letters(
            s, category=category, include_replayed=include_replayed
        ),
    )
    categories = sorted({x.category for x in letters})
    return render(
        request,
        "dead_letters.html",
        {
            "letters": letters,
            "category": category,
            "include_replayed": include_replayed,
            "categories": categories,
            "done": request.query_params.get("done"),
            "refresh": request.app.state.dashboard.refresh_s,
        },
    )


async def dead_letter_page(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    letter_id = int(request.path_params["letter_id"])
    detail = await _read(request, lambda s: dead_letters.show_letter(s, letter_id))
    if detail is None:
        raise HTTPException(404, f"no dead letter {letter_id}")
    return render(request, "dead_letter.html", {"x": detail})


async def dead_letter_replay(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    letter_id = int(request.path_params["letter_id"])
    await _form(request)
    parts = request.app.state.dashboard

    def work(session: Session) -> int | None:
        session.execute(_actor_statement(), {"actor": "dashboard:replay"})
        return dead_letters.replay(session, letter_id)

    document_id = await _write(request, work)
    if document_id is None:
        return RedirectResponse("/dead-letters?done=already", status_code=303)
    # After the commit: the row says pending before the nudge goes out.
    await run_in_threadpool(parts.enqueue, document_id)
    log.info("dead letter %s replayed from the dashboard: document %s", letter_id, document_id)
    return RedirectResponse(f"/dead-letters?done=replayed-{document_id}", status_code=303)


async def dead_letters_purge(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    form = await _form(request)
    if form.get("confirm") != "yes":
        raise HTTPException(400, "tick the box to confirm the purge")
    category = str(form.get("category") or "") or None
    replayed_only = form.get("replayed_only") == "1"
    count = await _write(
        request,
        lambda s: dead_letters.purge(s, category=category, replayed_only=replayed_only),
    )
    log.info("purged %d dead letter(s) from the dashboard", count)
    return RedirectResponse(f"/dead-letters?done=purged-{count}", status_code=303)


def _actor_statement() -> Any:
    return text("SELECT set_config('pagemill.actor', :actor, true)")


# --- login ---------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    if request.app.state.access.token is None:
        return RedirectResponse(target, status_code=303)
    return render(request, "login.html", {"next": target, "failed": False})


async def login_submit(request: Request) -> Response:
    access = request.app.state.access
    form = await _form(request)
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
    await _form(request)
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
