"""The webhook intake for S3 servers that post their bucket events (MinIO, radosgw): the ASGI
app served by uvicorn, exercised over real HTTP, its secret checked as a Bearer token or an
HTTP Basic password.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from workers.intake import make_webhook_intake
from workers.web.app import create_app
from workers.web.server import Served

pytestmark = pytest.mark.integration

SECRET = "webhook-s3cret-ünï"


def minio_post_body(bucket: str, key: str) -> bytes:
    """A MinIO webhook post as MinIO sends it (keys query-escaped in the record)."""
    from urllib.parse import quote_plus

    record = {
        "eventVersion": "2.0",
        "eventSource": "minio:s3",
        "awsRegion": "",
        "eventTime": "2026-11-26T05:10:49.870Z",
        "eventName": "s3:ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "Config",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key),
                "size": 12,
                "eTag": "5d41402abc4b2a76b9719d911017c592",
                "contentType": "application/pdf",
                "sequencer": "17F3A1B2C3D4E5F6",
            },
        },
    }
    return json.dumps(
        {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{key}", "Records": [record]}
    ).encode()


class Webhook:
    def __init__(self, secret: str | None, host: str = "127.0.0.1") -> None:
        self.seen: list[ObjectRef] = []
        self.fail = False
        # The webhook-only app, as `pagemill ingest --webhook` serves it, over real HTTP.
        app = create_app(
            host=host, sessions=None, intake=make_webhook_intake(host, secret, self._handle)
        )
        self.server = Served(app, host, 0).start()
        self.url = self.server.url

    def _handle(self, ref: ObjectRef) -> None:
        if self.fail:
            raise RuntimeError("queue unavailable")
        self.seen.append(ref)

    def close(self) -> None:
        self.server.stop()

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook(SECRET)
    yield hook
    hook.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}".encode().decode("latin-1")}


def test_webhook_rejects_missing_or_wrong_secret(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="workers.intake")
    body = minio_post_body("pagemill", "in/a b+c.pdf")
    for headers in (
        {},
        bearer("wrong"),
        bearer(""),
        bearer(SECRET + "x"),
        {"Authorization": SECRET.encode().decode("latin-1")},  # no scheme
        {"Authorization": "Basic " + SECRET.encode().decode("latin-1")},
    ):
        status, _ = webhook.request("POST", "/events", body, headers)
        assert status == 401, headers
    assert webhook.seen == []
    assert webhook.request("POST", "/events", body, bearer(SECRET))[0] == 200
    assert caplog.records
    assert not any(SECRET in r.getMessage() for r in caplog.records)


def test_webhook_accepts_the_right_secret(webhook: Webhook) -> None:
    status, reply = webhook.request(
        "POST", "/events", minio_post_body("pagemill", "in/a b+c%.pdf"), bearer(SECRET)
    )
    assert status == 200
    assert json.loads(reply) == {"accepted": 1}
    assert webhook.seen == [
        ObjectRef(
            bucket="pagemill",
            key="in/a b+c%.pdf",
            version="5d41402abc4b2a76b9719d911017c592",
            size=12,
            event_name="ObjectCreated:Put",
            event_time="2026-11-26T05:10:49.870Z",
        )
    ]


def test_control_characters_in_keys_are_kept_but_not_logged_raw(
    webhook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    # (moto's S3 cannot store a key with a newline, so this goes through the webhook.)
    key = "in/evil\nINFO forged line\x1b[31m.pdf"
    with caplog.at_level("INFO", logger="workers.intake"):
        status, _ = webhook.request(
            "POST", "/events", minio_post_body("pagemill", key), bearer(SECRET)
        )
    assert status == 200
    assert [r.key for r in webhook.seen] == [key]
    messages = [r.getMessage() for r in caplog.records]
    assert any("forged line" in m for m in messages)
    assert not any("\n" in m or "\x1b" in m for m in messages)


def test_webhook_malformed_body_is_400_and_handler_failure_is_503(webhook: Webhook) -> None:
    status, _ = webhook.request("POST", "/events", b"{not json", bearer(SECRET))
    assert status == 400
    webhook.fail = True
    status, _ = webhook.request(
        "POST", "/events", minio_post_body("pagemill", "x.pdf"), bearer(SECRET)
    )
    assert status == 503
    assert webhook.seen == []


def test_webhook_health_and_probe(webhook: Webhook) -> None:
    assert webhook.request("GET", "/healthz")[0] == 200
    assert webhook.request("GET", "/nope")[0] == 404
    # MinIO probes the endpoint with HEAD (and its token) before it sends events.
    assert webhook.request("HEAD", "/events", headers=bearer(SECRET))[0] == 200
    assert webhook.request("HEAD", "/events")[0] == 401
    # A test event posted by a server is accepted and names nothing.
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}).encode()
    status, reply = webhook.request("POST", "/events", test_event, bearer(SECRET))
    assert (status, json.loads(reply)) == (200, {"accepted": 0})


def test_webhook_takes_the_secret_as_a_basic_auth_password(webhook: Webhook) -> None:
    # Ceph radosgw cannot send a header of its own: its push endpoint's user-info
    # (http://user:secret@host/events) goes out as HTTP Basic authentication.
    def basic(credentials: bytes) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}

    body = minio_post_body("pagemill", "in/ceph.pdf")
    for wrong in (
        basic(b"pagemill:wrong"),
        basic(b"pagemill:" + SECRET.encode() + b"x"),
        basic(SECRET.encode()),  # no user part: not user:password
        basic(b":"),
        {"Authorization": "Basic not base64!"},
    ):
        assert webhook.request("POST", "/events", body, wrong)[0] == 401, wrong
    assert webhook.seen == []
    assert webhook.request("POST", "/events", body, basic(b"pagemill:" + SECRET.encode()))[0] == 200
    assert webhook.request("POST", "/events", body, basic(b"any-user:" + SECRET.encode()))[0] == 200
    assert [ref.key for ref in webhook.seen] == ["in/ceph.pdf", "in/ceph.pdf"]


def test_webhook_refuses_to_listen_openly_without_a_secret() -> None:
    with pytest.raises(PermanentError) as caught:
        make_webhook_intake("0.0.0.0", None, lambda ref: None)
    assert caught.value.category is ErrorCategory.CONFIGURATION
    with pytest.raises(PermanentError):
        make_webhook_intake("0.0.0.0", "", lambda ref: None)


def test_webhook_on_loopback_without_a_secret_needs_no_token() -> None:
    hook = Webhook(None)
    try:
        status, _ = hook.request("POST", "/events", minio_post_body("pagemill", "a.pdf"))
        assert status == 200
        assert [r.key for r in hook.seen] == ["a.pdf"]
    finally:
        hook.close()
