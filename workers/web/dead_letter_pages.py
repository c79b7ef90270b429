"""The dead-letter pages: the list, one letter, replaying a letter and purging letters."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from pipeline.usecases import dead_letters
from workers.web.rendering import render
from workers.web.request_helpers import (
    access_denied,
    checked_form,
    in_transaction,
    read_only,
    text_param,
)

# The name the dashboard's pages have always logged under, so that log filters keep
# matching whichever module a handler lives in.
log = logging.getLogger("workers.web.dashboard")


async def dead_letters_page(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    category = text_param(request, "category", 64)
    include_replayed = request.query_params.get("all") == "1"
    letters = await read_only(
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
    if (denied := access_denied(request)) is not None:
        return denied
    letter_id = int(request.path_params["letter_id"])
    detail = await read_only(request, lambda s: dead_letters.show_letter(s, letter_id))
    if detail is None:
        raise HTTPException(404, f"no dead letter {letter_id}")
    return render(request, "dead_letter.html", {"x": detail})


async def dead_letter_replay(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    letter_id = int(request.path_params["letter_id"])
    await checked_form(request)
    parts = request.app.state.dashboard

    def work(session: Session) -> int | None:
        session.execute(_actor_statement(), {"actor": "dashboard:replay"})
        return dead_letters.replay(session, letter_id)

    document_id = await in_transaction(request, work)
    if document_id is None:
        return RedirectResponse("/dead-letters?done=already", status_code=303)
    # After the commit: the row says pending before the nudge goes out.
    await run_in_threadpool(parts.enqueue, document_id)
    log.info("dead letter %s replayed from the dashboard: document %s", letter_id, document_id)
    return RedirectResponse(f"/dead-letters?done=replayed-{document_id}", status_code=303)


async def dead_letters_purge(request: Request) -> Response:
    if (denied := access_denied(request)) is not None:
        return denied
    form = await checked_form(request)
    if form.get("confirm") != "yes":
        raise HTTPException(400, "tick the box to confirm the purge")
    category = str(form.get("category") or "") or None
    replayed_only = form.get("replayed_only") == "1"
    count = await in_transaction(
        request,
        lambda s: dead_letters.purge(s, category=category, replayed_only=replayed_only),
    )
    log.info("purged %d dead letter(s) from the dashboard", count)
    return RedirectResponse(f"/dead-letters?done=purged-{count}", status_code=303)


def _actor_statement() -> Any:
    return text("SELECT set_config('pagemill.actor', :actor, true)")
