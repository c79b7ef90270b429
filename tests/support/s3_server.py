"""An S3 + SQS server for tests and the demo: moto in server mode on 127.0.0.1, real HTTP.

moto's S3 sends AWS-format bucket notifications to its SQS once a bucket has a
``QueueConfigurations`` entry (see `pipeline.storage.ensure_bucket_notifications`). State lives
in memory and is shared by every client of one server, so give each test its own bucket.
"""

from __future__ import annotations

import logging

from moto.server import ThreadedMotoServer

from pipeline.settings import Settings, load_settings

__all__ = ["DUMMY_ACCESS_KEY_ID", "DUMMY_SECRET_ACCESS_KEY", "settings_for", "start_s3_server"]

# moto accepts any credentials; these only need to be present so boto3 signs requests.
DUMMY_ACCESS_KEY_ID = "test"
DUMMY_SECRET_ACCESS_KEY = "test"  # not a secret: moto accepts anything


def start_s3_server() -> tuple[ThreadedMotoServer, str]:
    """Start moto on a free port of 127.0.0.1; return the server (call `.stop()`) and its URL."""
    # Werkzeug logs every request at INFO on stderr; keep test output readable.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def settings_for(endpoint_url: str, **overrides: object) -> Settings:
    """Settings whose S3/SQS clients talk to the server at `endpoint_url` with dummy keys."""
    values: dict[str, object] = {
        "s3_endpoint_url": endpoint_url,
        "s3_region": "us-east-1",
        "s3_access_key_id": DUMMY_ACCESS_KEY_ID,
        "s3_secret_access_key": DUMMY_SECRET_ACCESS_KEY,
    }
    values.update(overrides)
    return load_settings(**values)
