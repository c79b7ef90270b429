"""The web app's machine-facing routes, and `pagemill ingest --webhook` serving them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.session import make_engine, make_session_factory
from tests.browser.conftest import free_port
from tests.integration.test_webhook_intake import bearer, minio_post_body
from tests.support.s3_fixtures import BucketWithQueue
from workers import devstack
from workers.web.app import create_app
from workers.web.server import Served

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""  # not listening (yet)


def test_ready_only_while_the_database_answers(sessions: sessionmaker[Session]) -> None:
    up = Served(create_app(host="127.0.0.1", sessions=sessions), "127.0.0.1", 0).start()
    nowhere = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/none")
    down = Served(
        create_app(host="127.0.0.1", sessions=make_session_factory(nowhere)), "127.0.0.1", 0
    ).start()
    try:
        assert get(up.url + "/readyz") == (200, b'{"status":"ready"}')
        status, body = get(down.url + "/readyz")
        assert status == 503
        assert json.loads(body)["database"] == "unreachable"
        assert get(down.url + "/healthz")[0] == 200  # alive, only not ready
        status, metrics = get(up.url + "/metrics")
        assert status == 200
        assert b"# TYPE python_info gauge" in metrics  # prometheus_client's own registry
    finally:
        up.stop()
        down.stop()
        nowhere.dispose()


def test_pagemill_ingest_webhook_turns_a_post_into_a_document(
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    sessions: sessionmaker[Session],
    redis_broker: str,
    tmp_path: Path,
) -> None:
    port = free_port()
    key = "in/pushed by minio.pdf"
    bucket_with_queue.s3.put_object(Bucket=bucket_with_queue.bucket, Key=key, Body=b"%PDF-1.7")
    env = {
        "PAGEMILL_S3_ENDPOINT_URL": s3_server,
        "PAGEMILL_WEBHOOK_PORT": str(port),
        "PAGEMILL_WEBHOOK_SECRET": "hook-secret",
        "PAGEMILL_BROKER_URL": redis_broker,
        **devstack.DUMMY_CREDENTIALS,
    }
    intake = devstack.spawn("ingest-webhook", ["ingest", "--webhook"], env, tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        assert devstack.wait_for(lambda: get(url + "/healthz")[0] == 200, 60), intake.tail()
        body = minio_post_body(bucket_with_queue.bucket, key)
        post = urllib.request.Request(url + "/events", data=body, headers=bearer("wrong"))
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(post)
        assert caught.value.code == 401
        post = urllib.request.Request(url + "/events", data=body, headers=bearer("hook-secret"))
        with urllib.request.urlopen(post, timeout=10) as response:
            assert json.loads(response.read()) == {"accepted": 1}
        assert get(url + "/")[0] == 404  # the intake serves no dashboard
    finally:
        intake.stop()
    with sessions() as session:
        keys = session.execute(text("SELECT key, status FROM documents")).all()
    assert [tuple(k) for k in keys] == [(key, "pending")]
