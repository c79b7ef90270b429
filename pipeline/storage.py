"""S3 helpers. Every function takes its clients as arguments; nothing is built at import time.

Errors are mapped onto the pipeline's taxonomy:

* missing bucket/key/version (404, ``NoSuchKey``...) -> ``PermanentError(NOT_FOUND)``;
* over the size limit -> ``PermanentError(TOO_LARGE)``;
* access denied / missing credentials -> ``PermanentError(CONFIGURATION)``;
* connection errors, timeouts, throttling, 5xx -> ``TransientError(STORAGE_UNAVAILABLE)``;
* any other 4xx -> ``PermanentError(BAD_INPUT)``.

Messages name the bucket, key and error code, never object contents or credentials.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator
from typing import Any, NoReturn, TypeAlias

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError
from pipeline.settings import Settings

__all__ = [
    "S3Client",
    "SQSClient",
    "download",
    "ensure_bucket_notifications",
    "head_object",
    "list_objects",
    "looks_like_version_id",
    "make_s3_client",
    "make_sqs_client",
    "storage_error",
]

log = logging.getLogger(__name__)

# boto3 clients are generated at run time; without the per-service stub packages they are `Any`.
S3Client: TypeAlias = Any
SQSClient: TypeAlias = Any

_NOT_FOUND_CODES = frozenset(
    {"404", "NoSuchKey", "NoSuchBucket", "NoSuchVersion", "NotFound", "NoSuchUpload"}
)
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "ServerBusy",
        "XMinioServerNotInitialized",
    }
)
_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
    }
)
# An S3 ETag: hex MD5, with "-<parts>" for multipart uploads. Anything else is a version id.
_ETAG_RE = re.compile(r"[0-9a-fA-F]{32}(-[0-9]+)?")


# --- clients -----------------------------------------------------------------------------------


def _client_kwargs(settings: Settings) -> dict[str, Any]:
    key_id = settings.s3_access_key_id
    secret = settings.s3_secret_access_key
    if (key_id is None) != (secret is None):
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            "set both PAGEMILL_S3_ACCESS_KEY_ID and PAGEMILL_S3_SECRET_ACCESS_KEY, or neither "
            "(then boto3's default credential chain is used)",
        )
    endpoint = settings.s3_endpoint_url or None
    config_kwargs: dict[str, Any] = {
        "retries": {"max_attempts": 3, "mode": "standard"},
        "connect_timeout": 5,
        "read_timeout": 60,
        "user_agent_extra": "pagemill",
    }
    if endpoint:
        # S3-compatible servers (MinIO, Ceph, moto) are addressed by host name only: path-style
        # URLs, and checksums only where the API requires them (older servers reject the
        # CRC32 trailers boto3 adds by default).
        config_kwargs["s3"] = {"addressing_style": "path"}
        config_kwargs["request_checksum_calculation"] = "when_required"
        config_kwargs["response_checksum_validation"] = "when_required"
    kwargs: dict[str, Any] = {
        "region_name": settings.s3_region,
        "endpoint_url": endpoint,
        "config": Config(**config_kwargs),
    }
    if key_id is not None and secret is not None:
        kwargs["aws_access_key_id"] = key_id
        kwargs["aws_secret_access_key"] = secret.get_secret_value()
    return kwargs


def make_s3_client(settings: Settings) -> S3Client:
    """An S3 client for `settings` (endpoint, region, credentials). A new session per call."""
    return boto3.session.Session().client("s3", **_client_kwargs(settings))


def make_sqs_client(settings: Settings) -> SQSClient:
    """An SQS client for `settings`.

    Uses the same endpoint as S3: one endpoint serves both on moto/LocalStack, and on AWS the
    endpoint is unset. (MinIO has no SQS; with MinIO use the webhook intake instead.)
    """
    kwargs = _client_kwargs(settings)
    kwargs["config"] = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5,
        # A long poll holds the connection for up to 20 s.
        read_timeout=max(30, settings.sqs_wait_seconds + 10),
        user_agent_extra="pagemill",
    )
    return boto3.session.Session().client("sqs", **kwargs)


# --- error mapping -----------------------------------------------------------------------------


def _where(bucket: str, key: str | None = None) -> str:
    return f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"


def storage_error(exc: Exception, action: str, where: str) -> PipelineError:
    """Translate a botocore exception into the pipeline's taxonomy (returned, not raised)."""
    if isinstance(exc, PipelineError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "") or "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        status = status if isinstance(status, int) else 0
        label = f"{action} {where}: {code or 'error'} (HTTP {status or '?'})"
        if code in _NOT_FOUND_CODES or status == 404:
            return PermanentError(ErrorCategory.NOT_FOUND, label)
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return TransientError(ErrorCategory.STORAGE_UNAVAILABLE, label)
        if code in _ACCESS_CODES or status == 403:
            return PermanentError(
                ErrorCategory.CONFIGURATION, f"{label}; check the S3 credentials and policy"
            )
        return PermanentError(ErrorCategory.BAD_INPUT, label)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentError(
            ErrorCategory.CONFIGURATION, f"{action} {where}: no usable S3 credentials"
        )
    if isinstance(
        exc, BotoConnectionError | HTTPClientError | IncompleteReadError | FlexibleChecksumError
    ):
        return TransientError(
            ErrorCategory.STORAGE_UNAVAILABLE, f"{action} {where}: {type(exc).__name__}"
        )
    return PermanentError(ErrorCategory.INTERNAL, f"{action} {where}: {type(exc).__name__}")


def _raise_storage_error(exc: Exception, action: str, where: str) -> NoReturn:
    error = storage_error(exc, action, where)
    if error is exc:
        raise error
    raise error from exc


def _strip_etag(etag: object) -> str:
    return etag.strip().strip('"') if isinstance(etag, str) else ""


def looks_like_version_id(version: str) -> bool:
    """True when `version` (an `ObjectRef.version`) is a version id rather than an ETag or ""."""
    return bool(version) and version != "null" and _ETAG_RE.fullmatch(version) is None


def _object_params(ref: ObjectRef) -> dict[str, str]:
    params = {"Bucket": ref.bucket, "Key": ref.key}
    if looks_like_version_id(ref.version):
        params["VersionId"] = ref.version
    return params


# --- objects -----------------------------------------------------------------------------------


def head_object(s3: S3Client, ref: ObjectRef) -> ObjectRef:
    """`ref` with size and version (version id, else ETag) filled from HeadObject."""
    return head_object_metadata(s3, ref)[0]


def head_object_metadata(s3: S3Client, ref: ObjectRef) -> tuple[ObjectRef, dict[str, str]]:
    """HeadObject: `ref` with size and version filled, and the object's user metadata."""
    try:
        head = s3.head_object(**_object_params(ref))
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "HeadObject", _where(ref.bucket, ref.key))
    version_id = head.get("VersionId")
    if isinstance(version_id, str) and version_id and version_id != "null":
        version = version_id
    else:
        version = _strip_etag(head.get("ETag")) or ref.version
    size = head.get("ContentLength")
    metadata = head.get("Metadata") or {}
    filled = dataclasses.replace(
        ref, version=version, size=size if isinstance(size, int) else ref.size
    )
    return filled, {str(k): str(v) for k, v in metadata.items()}


def download(s3: S3Client, ref: ObjectRef, max_bytes: int) -> bytes:
    """The object's bytes. Reads at most `max_bytes` + 1 bytes, whatever the server claims.

    Asks for `ref.version` when it is a version id; an ETag is not enforced (a newer write of the
    same key brings its own event).
    """
    where = _where(ref.bucket, ref.key)

    def too_large(size: int | str) -> PermanentError:
        return PermanentError(
            ErrorCategory.TOO_LARGE, f"{where} is {size} bytes, over the {max_bytes}-byte limit"
        )

    if ref.size is not None and ref.size > max_bytes:
        raise too_large(ref.size)
    try:
        response = s3.get_object(**_object_params(ref))
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "GetObject", where)
    body = response["Body"]
    try:
        length = response.get("ContentLength")
        if isinstance(length, int) and length > max_bytes:
            raise too_large(length)
        # With a length, read() takes exactly that many bytes into one buffer; read(n) would
        # allocate n and copy the result out: the file twice in memory at its peak.
        data: bytes = body.read() if isinstance(length, int) else body.read(max_bytes + 1)
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "GetObject", where)
    finally:
        body.close()
    if len(data) > max_bytes:
        raise too_large(f"more than {max_bytes}")
    return data


def list_objects(s3: S3Client, bucket: str, prefix: str = "") -> Iterator[ObjectRef]:
    """Every object under `prefix`, page by page (for reconciliation against missed events)."""
    paginator = s3.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                modified = item.get("LastModified")
                yield ObjectRef(
                    bucket=bucket,
                    key=item["Key"],
                    version=_strip_etag(item.get("ETag")),
                    size=item.get("Size"),
                    event_time=modified.isoformat() if modified is not None else None,
                )
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "ListObjectsV2", _where(bucket, prefix or None))


# --- bucket notifications ----------------------------------------------------------------------


def _notification_id(queue_name: str) -> str:
    return f"pagemill-{queue_name}"


def _ensure_bucket(s3: S3Client, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if status != 404 and code not in {"404", "NoSuchBucket", "NotFound"}:
            _raise_storage_error(exc, "HeadBucket", _where(bucket))
    except BotoCoreError as exc:
        _raise_storage_error(exc, "HeadBucket", _where(bucket))

    params: dict[str, Any] = {"Bucket": bucket}
    region = s3.meta.region_name
    if region and region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**params)
        log.info("created bucket %s", bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
            _raise_storage_error(exc, "CreateBucket", _where(bucket))
    except BotoCoreError as exc:
        _raise_storage_error(exc, "CreateBucket", _where(bucket))


def _queue_policy(existing: str | None, queue_arn: str, bucket: str) -> str:
    # arn:<partition>:sqs:<region>:<account>:<name>
    parts = queue_arn.split(":")
    partition = parts[1] if len(parts) > 1 else "aws"
    account = parts[4] if len(parts) > 4 else ""
    sid = "PagemillS3" + re.sub(r"[^A-Za-z0-9]", "", bucket)
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:{partition}:s3:::{bucket}"}},
    }
    if account:
        statement["Condition"]["StringEquals"] = {"aws:SourceAccount": account}
    policy: dict[str, Any] = {"Version": "2012-10-17", "Statement": []}
    if existing:
        try:
            loaded = json.loads(existing)
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict) and isinstance(loaded.get("Statement"), list):
            policy = loaded
    policy["Statement"] = [
        s for s in policy["Statement"] if not (isinstance(s, dict) and s.get("Sid") == sid)
    ]
    policy["Statement"].append(statement)
    return json.dumps(policy, separators=(",", ":"))


def ensure_bucket_notifications(s3: S3Client, sqs: SQSClient, bucket: str, queue_name: str) -> str:
    """Wire `bucket` to an SQS queue for ``s3:ObjectCreated:*`` events; return the queue URL.

    Idempotent: creates the bucket and queue when missing, adds a queue-policy statement that lets
    S3 (for this bucket and account only) send messages, and merges one queue configuration into
    the bucket's notification configuration, keeping any others. When that configuration is
    already in place the bucket is not touched again (each change makes S3 send a test event).
    """
    _ensure_bucket(s3, bucket)
    try:
        queue_url: str = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn", "Policy"])[
            "Attributes"
        ]
        queue_arn: str = attrs["QueueArn"]
        policy = _queue_policy(attrs.get("Policy"), queue_arn, bucket)
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": policy})
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "SQS setup for", f"queue {queue_name}")

    wanted = {
        "Id": _notification_id(queue_name),
        "QueueArn": queue_arn,
        "Events": ["s3:ObjectCreated:*"],
    }
    try:
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "GetBucketNotificationConfiguration", _where(bucket))
    current.pop("ResponseMetadata", None)
    queues = [q for q in current.get("QueueConfigurations", []) if q.get("Id") != wanted["Id"]]
    for existing in current.get("QueueConfigurations", []):
        if (
            existing.get("Id") == wanted["Id"]
            and existing.get("QueueArn") == queue_arn
            and existing.get("Events") == wanted["Events"]
            and not existing.get("Filter")
        ):
            log.info("bucket %s already notifies queue %s", bucket, queue_name)
            return queue_url
    # Keep every other destination; an empty EventBridgeConfiguration ({}) means "enabled".
    config: dict[str, Any] = {
        k: current[k]
        for k in ("TopicConfigurations", "LambdaFunctionConfigurations", "EventBridgeConfiguration")
        if k in current
    }
    config["QueueConfigurations"] = [*queues, wanted]
    try:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    except (ClientError, BotoCoreError) as exc:
        _raise_storage_error(exc, "PutBucketNotificationConfiguration", _where(bucket))
    log.info("bucket %s now notifies queue %s of created objects", bucket, queue_name)
    return queue_url
