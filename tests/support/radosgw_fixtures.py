"""Pytest fixture for a real S3 server that pushes bucket events: Ceph radosgw, once a session.

Registered by ``tests/conftest.py`` (``pytest_plugins``).

* ``radosgw_events`` (session): a one-node cluster (see `tests.support.radosgw`) with an S3
  user and one persistent topic that pushes to ``http://127.0.0.1:<port>/events`` with a
  secret, for an intake the tests start on that port (`RadosgwEvents.intake_port`). Tests make
  a fresh bucket each and call `RadosgwEvents.new_bucket`, which wires it to the topic.

Skips with the reason when the Ceph daemons are not installed (Debian: ``apt-get install
radosgw ceph-mon ceph-osd``; ``make test`` installs them); installed but failing to start is
an error.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.radosgw import Radosgw, missing_binaries
from tests.support.services import free_port


@dataclass
class RadosgwEvents:
    rgw: Radosgw
    s3: Any
    topic_arn: str
    intake_port: int
    secret: str

    def new_bucket(self) -> str:
        bucket = f"pagemill-{uuid.uuid4().hex[:12]}"
        self.s3.create_bucket(Bucket=bucket)
        self.rgw.notify(self.s3, bucket, self.topic_arn)
        return bucket


@pytest.fixture(scope="session")
def radosgw_events() -> Iterator[RadosgwEvents]:
    missing = missing_binaries()
    if missing:
        pytest.skip(
            f"Ceph radosgw is not installed (missing {', '.join(missing)}): "
            "apt-get install radosgw ceph-mon ceph-osd, or run `make test`, which does"
        )
    root = Path(tempfile.mkdtemp(prefix="pagemill-radosgw-"))
    try:
        # Installed but not starting is a failure, not a skip: RadosgwError says why.
        rgw = Radosgw(root).start()
        s3 = rgw.client("s3")
        port = free_port()
        secret = secrets.token_urlsafe(24)
        # radosgw sends the endpoint's user-info as HTTP Basic authentication.
        topic = rgw.create_http_topic(
            "pagemill-intake", f"http://pagemill:{secret}@127.0.0.1:{port}/events"
        )
        try:
            yield RadosgwEvents(rgw, s3, topic, port, secret)
        finally:
            s3.close()
            rgw.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
