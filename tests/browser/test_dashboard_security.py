"""The dashboard's defences: untrusted text stays text, state changes need a POST with a CSRF
token from this site, a token guards a dashboard that could be reached by others, and a
foreign Host header is refused."""

from __future__ import annotations

import http.cookiejar
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.pages import Limits
from workers.cli import app as cli_app
from workers.web.app import Dashboard, create_app
from workers.web.server import Served

pytestmark = [pytest.mark.integration, pytest.mark.browser]

HOSTILE_KEY = 'in/<script>window.pwned=1</script><img src=x onerror="window.pwned=2">.pdf'
HOSTILE_NUMBER = "<img src=x onerror=\"window.pwned='number'\">"
HOSTILE_MESSAGE = "</td><script>window.pwned='message'</script>"


def serve(sessions: sessionmaker[Session], token: str | None = None) -> Served:
    enqueued: list[int] = []
    parts = Dashboard(
        s3=None, enqueue=enqueued.append, max_file_bytes=1 << 20, limits=Limits(), refresh_s=0
    )
    app = create_app(host="127.0.0.1", sessions=sessions, dashboard_parts=parts, web_token=token)
    return Served(app, "127.0.0.1", 0).start()


@pytest.fixture
def hostile(sessions: sessionmaker[Session]) -> dict[str, int]:
    """A document in review and a failed one, both named and filled by an attacker."""
    with transaction(sessions) as session:
        review_id, _ = repo.register_document(
            session, ObjectRef("evil<b>bucket", HOSTILE_KEY, "v1"), "invoice", "local"
        )
        failed_id, _ = repo.register_document(
            session, ObjectRef("evil<b>bucket", HOSTILE_KEY, "v2"), "invoice", "local"
        )
    with transaction(sessions) as session:
        session.execute(
            text(
                "INSERT INTO extractions (document_id, schema_name, schema_version, provider,"
                " model, valid, data, grounding, review_reasons)"
                " VALUES (:id, 'invoice', '1', 'local', 'm', true, CAST(:data AS jsonb),"
                " CAST(:grounding AS jsonb), CAST(:reasons AS jsonb))"
            ),
            {
                "id": review_id,
                "data": f'{{"invoice_number": {_json(HOSTILE_NUMBER)}, "total": "1.00"}}',
                "grounding": '{"invoice_number": "ungrounded"}',
                "reasons": f"[{_json(HOSTILE_MESSAGE)}]",
            },
        )
        session.execute(
            text("UPDATE documents SET status = 'needs_review' WHERE id = :id"), {"id": review_id}
        )
        error = PermanentError(ErrorCategory.BAD_INPUT, HOSTILE_MESSAGE)
        repo.finish_document(session, failed_id, DocumentStatus.FAILED, error)
        repo.add_dead_letter(session, failed_id, "prepare", error, 1)
    return {"review": review_id, "failed": failed_id}


def _json(value: str) -> str:
    import json

    return json.dumps(value)


@pytest.fixture
def dashboard(sessions: sessionmaker[Session]) -> Iterator[Served]:
    served = serve(sessions)
    yield served
    served.stop()


def test_untrusted_keys_values_and_messages_are_shown_as_text(
    hostile: dict[str, int], dashboard: Served, browser: Any
) -> None:
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    for path in (
        "/",
        "/documents",
        f"/documents/{hostile['review']}",
        f"/documents/{hostile['review']}/review",
        f"/documents/{hostile['failed']}",
        "/review",
        "/dead-letters",
        "/dead-letters/1",
    ):
        response = page.goto(dashboard.url + path)
        assert response is not None and response.status == 200, path
        assert page.evaluate("() => window.pwned") is None, path
        assert page.locator("script").count() == 0, path
        if "documents" in path or "dead-letters" in path:
            assert HOSTILE_KEY in page.inner_text("body"), path
    page.goto(dashboard.url + f"/documents/{hostile['review']}")
    assert HOSTILE_NUMBER in page.inner_text("#fields")
    assert HOSTILE_MESSAGE in page.inner_text("ul.reasons")
    page.goto(dashboard.url + f"/documents/{hostile['review']}/review")
    assert page.input_value('input[name="field:invoice_number"]') == HOSTILE_NUMBER
    assert dialogs == []
    html = urllib.request.urlopen(dashboard.url + "/documents").read().decode()
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;" in html


def _opener() -> tuple[urllib.request.OpenerDirector, http.cookiejar.CookieJar]:
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar)), jar


def _post(
    opener: urllib.request.OpenerDirector,
    url: str,
    fields: dict[str, str],
    headers: dict[str, str] | None = None,
) -> int:
    request = urllib.request.Request(
        url, data=urllib.parse.urlencode(fields).encode(), method="POST", headers=headers or {}
    )
    try:
        with opener.open(request) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_replay_needs_a_post_with_this_sites_csrf_token(
    hostile: dict[str, int], dashboard: Served, sessions: sessionmaker[Session]
) -> None:
    replay = dashboard.url + "/dead-letters/1/replay"
    opener, jar = _opener()
    opener.open(dashboard.url + "/dead-letters").read()  # sets the CSRF cookie
    token = next(c.value for c in jar if c.name == "pagemill_csrf")
    assert token

    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(replay)  # GET
    assert caught.value.code == 405
    assert _post(opener, replay, {}) == 403
    assert _post(opener, replay, {"csrf_token": "forged"}) == 403
    evil = {"Origin": "http://evil.example"}
    assert _post(opener, replay, {"csrf_token": token}, evil) == 403
    stranger, _ = _opener()  # another browser: no cookie, so the token means nothing
    assert _post(stranger, replay, {"csrf_token": token}) == 403

    with sessions() as session:
        assert session.execute(text("SELECT replayed_at FROM dead_letters")).scalar() is None

    assert _post(opener, replay, {"csrf_token": token}) == 200  # after the redirect
    with sessions() as session:
        assert session.execute(text("SELECT replayed_at FROM dead_letters")).scalar() is not None
        status = session.execute(
            text("SELECT status FROM documents WHERE id = :id"), {"id": hostile["failed"]}
        ).scalar()
    assert status == "pending"


def test_a_token_guards_the_dashboard_but_not_health(
    sessions: sessionmaker[Session], browser: Any
) -> None:
    served = serve(sessions, token="s3cret-token")
    try:
        assert urllib.request.urlopen(served.url + "/healthz").status == 200
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(served.url + "/documents")
        assert caught.value.code == 401
        scripted = urllib.request.Request(
            served.url + "/documents", headers={"Authorization": "Bearer s3cret-token"}
        )
        assert urllib.request.urlopen(scripted).status == 200

        page = browser.new_page()
        page.goto(served.url + "/documents?status=failed")
        assert page.url.startswith(served.url + "/login")
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        assert "not the right one" in page.inner_text("p.error")
        page.fill("input[name=token]", "s3cret-token")
        page.click("button[type=submit]")
        page.wait_for_url(served.url + "/documents?status=failed")
        assert page.locator("#documents").count() == 1
    finally:
        served.stop()


def test_the_dashboard_is_not_served_openly_without_a_token(
    sessions: sessionmaker[Session],
) -> None:
    parts = Dashboard(s3=None, enqueue=print, max_file_bytes=1, limits=Limits())
    with pytest.raises(PermanentError) as caught:
        create_app(host="0.0.0.0", sessions=sessions, dashboard_parts=parts)
    assert caught.value.category is ErrorCategory.CONFIGURATION
    assert "PAGEMILL_WEB_TOKEN" in caught.value.message

    result = CliRunner().invoke(cli_app, ["web", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 1
    assert "PAGEMILL_WEB_TOKEN" in result.output


def test_a_foreign_host_name_is_refused_on_loopback(dashboard: Served) -> None:
    request = urllib.request.Request(dashboard.url + "/", headers={"Host": "rebound.example"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request)
    assert caught.value.code == 421
    request = urllib.request.Request(dashboard.url + "/healthz", headers={"Host": "localhost"})
    assert urllib.request.urlopen(request).status == 200
