"""The review pages: the queue, a document's review form and its answer, the export."""

from __future__ import annotations

import io
import logging
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from pipeline.usecases import browse, review
from workers.web.rendering import render
from workers.web.request_helpers import (
    access_denied,
    checked_form,
    in_transaction,
    int_param,
    read_only,
    session_factory,
)

# The name the dashboard's pages have always logged under, so that log filters keep
# matching whichever module a handler lives in.
log = logging.getLogger("workers.web.dashboard")

REVIEWER_COOKIE = "pagemill_reviewer"


def doubtful_reasons(detail: browse.DocumentDetail) -> dict[str, list[str]]:
    extraction = detail.extraction or {}
    return review.doubtful_fields(
        detail.document["schema_name"], extraction.get("data"), extraction.get("grounding")
    )


async def review_queue(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    before = int_param(request, "before")

    def work(session: Session) -> tuple[Any, Any, Any]:
        rows, next_id = browse.list_documents(
            session, browse.DocumentFilter(status="needs_review", before_id=before)
        )
        return rows, next_id, review.reviewed_cases(session)

    rows, next_id, reviewed = await read_only(request, work)
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
        doubtful = doubtful_reasons(detail)
        detail.mark_doubtful(set(doubtful))
        return detail, doubtful

    detail, doubtful = await read_only(request, work)
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
    if (denied := access_denied(request)) is not None:
        return denied
    context = await _review_context(request, int(request.path_params["document_id"]))
    return render(request, "review.html", {**context, "errors": []})


async def review_submit(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    document_id = int(request.path_params["document_id"])
    form = await checked_form(request)
    reviewer = str(form.get("reviewer", ""))
    answers = {
        str(name)[len("field:") :]: str(value)
        for name, value in form.multi_items()
        if str(name).startswith("field:")
    }
    try:
        outcome = await in_transaction(
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
    if (denied := access_denied(request)) is not None:
        return denied
    parts = request.app.state.dashboard
    sessions = session_factory(request)

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
