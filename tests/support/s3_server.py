"""Settings for the tests' S3 + SQS server (moto over real HTTP, started by workers.devstack).

moto's S3 sends AWS-format bucket notifications to its SQS once a bucket has a
``QueueConfigurations`` entry (see `pipeline.storage.ensure_bucket_notifications`). State lives
in memory and is shared by every client of one server, so give each test its own bucket.
"""

from __future__ import annotations

from pipeline.settings import Settings, load_settings

__all__ = ["DUMMY_ACCESS_KEY_ID", "DUMMY_SECRET_ACCESS_KEY", "settings_for"]

# moto accepts any credentials; these only need to be present so boto3 signs requests.
DUMMY_ACCESS_KEY_ID = "test"
DUMMY_SECRET_ACCESS_KEY = "test"  # not a secret: moto accepts anything


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
