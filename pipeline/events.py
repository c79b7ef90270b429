"""Bucket event parsing: S3-style notifications in, `ObjectRef`s for newly created objects out.

Pure functions, no I/O. Accepted shapes:

* AWS S3 notifications as delivered to SQS: ``{"Records": [{"eventSource": "aws:s3", ...}]}``;
* the same inside an SNS envelope: ``{"Type": "Notification", "Message": "<json>"}``;
* EventBridge events: ``{"source": "aws.s3", "detail-type": "Object Created", "detail": {...}}``;
* MinIO webhook posts: ``{"EventName": ..., "Key": "bucket/key", "Records": [...]}`` (the records
  are used; ``Key`` is ignored);
* Ceph RGW notifications (``eventSource: ceph:s3``).

Keys in ``aws:s3`` and ``minio:s3`` records are form-URL-encoded (``+`` is a space, ``%2B`` a
plus); Ceph and EventBridge keys are not encoded. ``s3:TestEvent`` messages and non-create events
(removals, restores, tagging, ...) yield no refs. Anything else raises
``PermanentError(BAD_INPUT)``: a malformed body can never succeed on retry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError

__all__ = ["parse_bucket_event"]

# Sources whose record keys are form-URL-encoded, and those whose keys are sent as is.
_ENCODED_KEY_SOURCES = frozenset({"aws:s3", "minio:s3"})
_PLAIN_KEY_SOURCES = frozenset({"ceph:s3"})

# EventBridge "reason" -> the S3 notification event name for the same operation.
_EVENTBRIDGE_REASONS = {
    "PutObject": "ObjectCreated:Put",
    "POST Object": "ObjectCreated:Post",
    "CopyObject": "ObjectCreated:Copy",
    "CompleteMultipartUpload": "ObjectCreated:CompleteMultipartUpload",
}

# SNS message types that carry no bucket event (subscription housekeeping).
_SNS_HOUSEKEEPING = frozenset({"SubscriptionConfirmation", "UnsubscribeConfirmation"})

_MAX_ENVELOPE_DEPTH = 2


def parse_bucket_event(body: str | bytes | Mapping[str, Any]) -> list[ObjectRef]:
    """Return one `ObjectRef` per object-created record in `body`, in order.

    Raises `PermanentError(BAD_INPUT)` with a one-line message when `body` is not a bucket event.
    """
    return _parse(_load(body), depth=0)


# --- decoding ----------------------------------------------------------------------------------


def _bad(message: str) -> PermanentError:
    # One line, bounded: messages end up in logs and dead-letter rows.
    line = " ".join(message.split())
    if len(line) > 300:
        line = line[:297] + "..."
    return PermanentError(ErrorCategory.BAD_INPUT, line)


def _load(body: object) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return dict(body)
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(f"bucket event is not UTF-8 (byte {exc.start})") from None
    if not isinstance(body, str):
        raise _bad(f"bucket event must be str, bytes or dict, not {type(body).__name__}")
    if not body.strip():
        raise _bad("bucket event is empty")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise _bad(
            f"bucket event is not JSON: {exc.msg} at line {exc.lineno} col {exc.colno}"
        ) from None
    except RecursionError:
        raise _bad("bucket event is nested too deeply") from None
    if not isinstance(data, dict):
        raise _bad(f"bucket event must be a JSON object, not {type(data).__name__}")
    return data


def _describe(data: Mapping[str, Any]) -> str:
    keys = sorted(str(k)[:40] for k in data)[:8]
    return "keys: " + (", ".join(keys) if keys else "none")


# --- dispatch ----------------------------------------------------------------------------------


def _parse(data: dict[str, Any], *, depth: int) -> list[ObjectRef]:
    if "Records" in data:
        return _parse_records(data["Records"])
    if data.get("Event") == "s3:TestEvent":
        return []
    if "Type" in data and "Message" in data:
        return _parse_sns(data, depth=depth)
    if data.get("source") == "aws.s3" and "detail-type" in data:
        return _parse_eventbridge(data)
    if data.get("Type") in _SNS_HOUSEKEEPING:
        return []
    raise _bad(f"unrecognised bucket event ({_describe(data)})")


def _parse_sns(data: dict[str, Any], *, depth: int) -> list[ObjectRef]:
    kind = data.get("Type")
    if kind in _SNS_HOUSEKEEPING:
        return []
    if kind != "Notification":
        raise _bad(f"unsupported SNS message type {str(kind)[:40]!r}")
    if depth >= _MAX_ENVELOPE_DEPTH:
        raise _bad("SNS envelopes nested too deeply")
    message = data.get("Message")
    if not isinstance(message, str):
        raise _bad("SNS notification has no string Message")
    try:
        inner = _load(message)
    except PermanentError as exc:
        raise _bad(f"SNS Message: {exc.message}") from None
    return _parse(inner, depth=depth + 1)


# --- S3 notification records (AWS, MinIO, Ceph) ------------------------------------------------


def _parse_records(records: object) -> list[ObjectRef]:
    if not isinstance(records, list):
        raise _bad(f"Records must be a list, not {type(records).__name__}")
    refs: list[ObjectRef] = []
    for index, record in enumerate(records):
        ref = _parse_record(record, index)
        if ref is not None:
            refs.append(ref)
    return refs


def _parse_record(record: object, index: int) -> ObjectRef | None:
    where = f"Records[{index}]"
    if not isinstance(record, dict):
        raise _bad(f"{where} must be an object, not {type(record).__name__}")

    source = record.get("eventSource", "aws:s3")  # absent on some S3-compatible servers
    if source in _ENCODED_KEY_SOURCES:
        encoded = True
    elif source in _PLAIN_KEY_SOURCES:
        encoded = False
    else:
        raise _bad(f"{where}: unsupported eventSource {str(source)[:40]!r}")

    event_name = _event_name(record.get("eventName"), where)
    if not _is_create(event_name):
        return None

    s3 = _obj(record.get("s3"), f"{where}.s3")
    bucket = _name(_obj(s3.get("bucket"), f"{where}.s3.bucket").get("name"), f"{where} bucket")
    obj = _obj(s3.get("object"), f"{where}.s3.object")
    key = _key(obj.get("key"), encoded=encoded, where=where)
    return ObjectRef(
        bucket=bucket,
        key=key,
        version=_version(obj.get("versionId"), obj.get("eTag"), where),
        size=_size(obj.get("size"), where),
        event_name=event_name,
        event_time=_time(record.get("eventTime"), where),
    )


def _event_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{where}: eventName missing")
    # MinIO (and older Ceph) prefix event names with "s3:"; AWS does not.
    return value.removeprefix("s3:")


def _is_create(event_name: str) -> bool:
    return event_name == "ObjectCreated" or event_name.startswith("ObjectCreated:")


# --- EventBridge -------------------------------------------------------------------------------


def _parse_eventbridge(data: dict[str, Any]) -> list[ObjectRef]:
    if data.get("detail-type") != "Object Created":
        return []
    detail = _obj(data.get("detail"), "detail")
    bucket = _name(_obj(detail.get("bucket"), "detail.bucket").get("name"), "detail bucket")
    obj = _obj(detail.get("object"), "detail.object")
    reason = detail.get("reason")
    if isinstance(reason, str) and reason:
        event_name = _EVENTBRIDGE_REASONS.get(reason, f"ObjectCreated:{reason}")
    else:
        event_name = "ObjectCreated"
    return [
        ObjectRef(
            bucket=bucket,
            key=_key(obj.get("key"), encoded=False, where="detail.object"),
            version=_version(obj.get("version-id"), obj.get("etag"), "detail.object"),
            size=_size(obj.get("size"), "detail.object"),
            event_name=event_name,
            event_time=_time(data.get("time"), "EventBridge event"),
        )
    ]


# --- fields ------------------------------------------------------------------------------------


def _obj(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _bad(f"{where} missing or not an object")
    return value


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{what} name missing")
    return value


def _key(value: object, *, encoded: bool, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise _bad(f"{where}: object key missing")
    if not encoded:
        return value
    try:
        key = unquote_plus(value, errors="strict")
    except UnicodeDecodeError:
        raise _bad(f"{where}: object key is not valid percent-encoded UTF-8") from None
    if not key:
        raise _bad(f"{where}: object key missing")
    return key


def _version(version_id: object, etag: object, where: str) -> str:
    # "null" is S3's version id for objects written while versioning was off: useless for telling
    # two writes apart, so fall back to the ETag.
    if isinstance(version_id, str) and version_id and version_id != "null":
        return version_id
    if version_id is not None and not isinstance(version_id, str):
        raise _bad(f"{where}: versionId must be a string")
    if isinstance(etag, str):
        return etag.strip().strip('"')
    if etag is not None:
        raise _bad(f"{where}: eTag must be a string")
    return ""


def _size(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _bad(f"{where}: size must be an integer")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and value.strip().isdigit():
        size = int(value)
    else:
        raise _bad(f"{where}: size must be an integer")
    if size < 0:
        raise _bad(f"{where}: size must not be negative")
    return size


def _time(value: object, where: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"{where}: event time must be a string")
    return value
