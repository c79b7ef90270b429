"""parse_bucket_event: every delivery shape, key encodings, ignored events, malformed bodies."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.events import parse_bucket_event

BUCKET = "in-bucket"
ETAG = "5d41402abc4b2a76b9719d911017c592"
TIME = "2026-11-26T05:10:49.870Z"


def s3_record(
    key: str,
    *,
    event: str = "ObjectCreated:Put",
    source: str = "aws:s3",
    bucket: str = BUCKET,
    size: Any = 5,
    etag: Any = ETAG,
    version_id: Any = None,
    time: str | None = TIME,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "key": key,
        "size": size,
        "eTag": etag,
        "sequencer": "0055AED6DCD90281E5",
    }
    if version_id is not None:
        obj["versionId"] = version_id
    record: dict[str, Any] = {
        "eventVersion": "2.1",
        "eventSource": source,
        "awsRegion": "us-east-1",
        "eventName": event,
        "userIdentity": {"principalId": "AWS:EXAMPLE"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "pagemill-in",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": obj,
        },
    }
    if time is not None:
        record["eventTime"] = time
    return record


def sqs_body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def sns(message: str) -> str:
    return json.dumps(
        {
            "Type": "Notification",
            "MessageId": "6b4d8d9f-0000-0000-0000-000000000000",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:pagemill",
            "Subject": "Amazon S3 Notification",
            "Message": message,
            "Timestamp": TIME,
        }
    )


def eventbridge(
    key: str, *, detail_type: str = "Object Created", reason: str = "PutObject", **obj: Any
) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": "17793124-05d4-b198-2fde-7ededc63b103",
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-11-26T05:10:49Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{BUCKET}"],
            "detail": {
                "version": "0",
                "bucket": {"name": BUCKET},
                "object": {"key": key, "size": 5, "etag": ETAG, "sequencer": "617f08299329d189"}
                | obj,
                "request-id": "N4N7GDK58NMKJ12R",
                "requester": "123456789012",
                "reason": reason,
            },
        }
    )


def minio(key_encoded: str, key_plain: str, *, version_id: str | None = None) -> str:
    record = s3_record(
        key_encoded, event="s3:ObjectCreated:Put", source="minio:s3", version_id=version_id
    )
    return json.dumps(
        {"EventName": "s3:ObjectCreated:Put", "Key": f"{BUCKET}/{key_plain}", "Records": [record]}
    )


TEST_EVENT = json.dumps(
    {
        "Service": "Amazon S3",
        "Event": "s3:TestEvent",
        "Time": TIME,
        "Bucket": BUCKET,
        "RequestId": "5582815E1AEA5ADF",
        "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE",
    }
)


def ref(
    key: str,
    *,
    version: str = ETAG,
    size: int | None = 5,
    event_name: str = "ObjectCreated:Put",
    event_time: str | None = TIME,
    bucket: str = BUCKET,
) -> ObjectRef:
    return ObjectRef(
        bucket=bucket,
        key=key,
        version=version,
        size=size,
        event_name=event_name,
        event_time=event_time,
    )


VERSION_ID = "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
MINIO_VERSION = "2f4b4b7e-3d9c-4c8e-9a43-0b7a6f1d2c11"

SHAPES: list[tuple[str, str | bytes | dict[str, Any], list[ObjectRef]]] = [
    ("aws via sqs", sqs_body(s3_record("in%2Fa.pdf")), [ref("in/a.pdf")]),
    ("aws as bytes", sqs_body(s3_record("a.pdf")).encode(), [ref("a.pdf")]),
    ("aws as dict", json.loads(sqs_body(s3_record("a.pdf"))), [ref("a.pdf")]),
    (
        "aws versioned bucket",
        sqs_body(s3_record("a.pdf", version_id=VERSION_ID)),
        [ref("a.pdf", version=VERSION_ID)],
    ),
    (
        "aws versionId null falls back to the etag",
        sqs_body(s3_record("a.pdf", version_id="null")),
        [ref("a.pdf")],
    ),
    ("quoted etag", sqs_body(s3_record("a.pdf", etag=f'"{ETAG}"')), [ref("a.pdf")]),
    ("no etag, no version", sqs_body(s3_record("a.pdf", etag=None)), [ref("a.pdf", version="")]),
    ("no size", sqs_body(s3_record("a.pdf", size=None)), [ref("a.pdf", size=None)]),
    ("size as string", sqs_body(s3_record("a.pdf", size="5")), [ref("a.pdf")]),
    ("no event time", sqs_body(s3_record("a.pdf", time=None)), [ref("a.pdf", event_time=None)]),
    (
        "multipart upload",
        sqs_body(
            s3_record("big.pdf", event="ObjectCreated:CompleteMultipartUpload", etag=f"{ETAG}-3")
        ),
        [ref("big.pdf", version=f"{ETAG}-3", event_name="ObjectCreated:CompleteMultipartUpload")],
    ),
    (
        "several records, removal skipped",
        sqs_body(
            s3_record("one.pdf"),
            s3_record("gone.pdf", event="ObjectRemoved:Delete"),
            s3_record("two.pdf", event="ObjectCreated:Copy"),
        ),
        [ref("one.pdf"), ref("two.pdf", event_name="ObjectCreated:Copy")],
    ),
    ("empty Records", json.dumps({"Records": []}), []),
    ("sns wrapped", sns(sqs_body(s3_record("in%2Fb+c.pdf"))), [ref("in/b c.pdf")]),
    ("sns wrapped test event", sns(TEST_EVENT), []),
    (
        "sns subscription confirmation",
        json.dumps(
            {"Type": "SubscriptionConfirmation", "Message": "You have chosen...", "Token": "t"}
        ),
        [],
    ),
    (
        "eventbridge object created (keys not encoded)",
        eventbridge("in/a b+c%2B.pdf", **{"version-id": VERSION_ID}),
        [
            ref(
                "in/a b+c%2B.pdf",
                version=VERSION_ID,
                event_time="2026-11-26T05:10:49Z",
            )
        ],
    ),
    (
        "eventbridge multipart, no version id",
        eventbridge("x.pdf", reason="CompleteMultipartUpload"),
        [
            ref(
                "x.pdf",
                event_name="ObjectCreated:CompleteMultipartUpload",
                event_time="2026-11-26T05:10:49Z",
            )
        ],
    ),
    ("eventbridge object deleted", eventbridge("x.pdf", detail_type="Object Deleted"), []),
    (
        "eventbridge in sns",
        sns(eventbridge("y.pdf")),
        [ref("y.pdf", event_time="2026-11-26T05:10:49Z")],
    ),
    (
        "minio webhook (Records used, s3: prefix dropped)",
        minio("in%2Fspace+name%2Bplus.pdf", "in/space name+plus.pdf"),
        [ref("in/space name+plus.pdf")],
    ),
    (
        "minio versioned",
        minio("a.pdf", "a.pdf", version_id=MINIO_VERSION),
        [ref("a.pdf", version=MINIO_VERSION)],
    ),
    (
        "minio removal",
        json.dumps(
            {
                "EventName": "s3:ObjectRemoved:Delete",
                "Key": f"{BUCKET}/a.pdf",
                "Records": [s3_record("a.pdf", event="s3:ObjectRemoved:Delete", source="minio:s3")],
            }
        ),
        [],
    ),
    (
        "minio object accessed",
        sqs_body(s3_record("a.pdf", event="s3:ObjectAccessed:Get", source="minio:s3")),
        [],
    ),
    (
        "ceph (keys not encoded)",
        sqs_body(s3_record("in/a b+c%25.pdf", source="ceph:s3", version_id="VxKR5vlgcOZ2vBq7")),
        [ref("in/a b+c%25.pdf", version="VxKR5vlgcOZ2vBq7")],
    ),
    (
        "ceph unversioned (empty versionId)",
        sqs_body(s3_record("a.pdf", source="ceph:s3", version_id="")),
        [ref("a.pdf")],
    ),
    ("test event", TEST_EVENT, []),
    ("removal", sqs_body(s3_record("a.pdf", event="ObjectRemoved:Delete")), []),
    (
        "delete marker",
        sqs_body(s3_record("a.pdf", event="ObjectRemoved:DeleteMarkerCreated")),
        [],
    ),
    ("restore", sqs_body(s3_record("a.pdf", event="ObjectRestore:Completed")), []),
    ("tagging", sqs_body(s3_record("a.pdf", event="ObjectTagging:Put")), []),
    (
        "no eventSource: treated as AWS",
        json.dumps(
            {"Records": [{k: v for k, v in s3_record("a+b.pdf").items() if k != "eventSource"}]}
        ),
        [ref("a b.pdf")],
    ),
]


@pytest.mark.parametrize(
    ("body", "expected"), [pytest.param(b, e, id=name) for name, b, e in SHAPES]
)
def test_shapes(body: str | bytes | dict[str, Any], expected: list[ObjectRef]) -> None:
    assert parse_bucket_event(body) == expected


KEYS = [
    ("plain.pdf", "plain.pdf"),
    ("space+name.pdf", "space name.pdf"),
    ("a%2Bb.pdf", "a+b.pdf"),
    ("in%2Fsub%2Fx.pdf", "in/sub/x.pdf"),
    ("in/sub/x.pdf", "in/sub/x.pdf"),
    ("100%25.pdf", "100%.pdf"),
    ("%2525.pdf", "%25.pdf"),
    ("%C3%BCn%C3%AF+%E2%82%AC.pdf", "ünï €.pdf"),
    ("%E6%97%A5%E6%9C%AC%E8%AA%9E.pdf", "日本語.pdf"),
    ("a%26b%3Dc%3F.pdf", "a&b=c?.pdf"),
    ("tab%09and%0Anewline.pdf", "tab\tand\nnewline.pdf"),
]


@pytest.mark.parametrize("source", ["aws:s3", "minio:s3"])
@pytest.mark.parametrize(("encoded", "decoded"), KEYS, ids=[k for k, _ in KEYS])
def test_encoded_keys_are_decoded(source: str, encoded: str, decoded: str) -> None:
    (got,) = parse_bucket_event(sqs_body(s3_record(encoded, source=source)))
    assert got.key == decoded


@pytest.mark.parametrize("key", ["space+name%2B.pdf", "100%25.pdf", "ünï €.pdf", "in/a b.pdf"])
def test_ceph_and_eventbridge_keys_are_taken_as_is(key: str) -> None:
    (ceph,) = parse_bucket_event(sqs_body(s3_record(key, source="ceph:s3")))
    (bridge,) = parse_bucket_event(eventbridge(key))
    assert ceph.key == key
    assert bridge.key == key


def test_redelivered_message_gives_equal_refs() -> None:
    body = sqs_body(s3_record("in%2Fa+b.pdf"))
    assert parse_bucket_event(body) == parse_bucket_event(body)
    assert hash(parse_bucket_event(body)[0]) == hash(parse_bucket_event(body.encode())[0])


def _record_with(path: tuple[str, ...], value: Any) -> str:
    record = s3_record("a.pdf")
    target: dict[str, Any] = record
    for part in path[:-1]:
        target = target[part]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return sqs_body(record)


_DELETE = object()

GARBAGE: list[tuple[str, Any]] = [
    ("empty bytes", b""),
    ("blank string", "  \n "),
    ("not json", "not json at all"),
    ("truncated json", '{"Records": [{"eventSource": "aws:s3"'),
    ("json array", "[]"),
    ("json number", "42"),
    ("json null", "null"),
    ("not utf-8", b"\xff\xfe\x00{"),
    ("unknown object", {"hello": "world"}),
    ("wrong python type", 42),
    ("Records not a list", {"Records": "x"}),
    ("record not an object", {"Records": [42]}),
    ("unsupported eventSource", sqs_body(s3_record("a.pdf", source="aws:sqs"))),
    ("no eventName", _record_with(("eventName",), _DELETE)),
    ("no s3 section", _record_with(("s3",), _DELETE)),
    ("no bucket name", _record_with(("s3", "bucket", "name"), _DELETE)),
    ("empty bucket name", _record_with(("s3", "bucket", "name"), "")),
    ("no object", _record_with(("s3", "object"), _DELETE)),
    ("no key", _record_with(("s3", "object", "key"), _DELETE)),
    ("empty key", _record_with(("s3", "object", "key"), "")),
    ("key not a string", _record_with(("s3", "object", "key"), 7)),
    ("key not utf-8 once decoded", _record_with(("s3", "object", "key"), "%FF%FE.pdf")),
    ("negative size", _record_with(("s3", "object", "size"), -1)),
    ("size not a number", _record_with(("s3", "object", "size"), "big")),
    ("size a boolean", _record_with(("s3", "object", "size"), True)),
    ("etag not a string", _record_with(("s3", "object", "eTag"), 12)),
    ("versionId not a string", _record_with(("s3", "object", "versionId"), 12)),
    ("eventTime not a string", _record_with(("eventTime",), 12)),
    ("sns message not json", sns("not json")),
    ("sns message not a string", json.dumps({"Type": "Notification", "Message": {"a": 1}})),
    ("sns unknown type", json.dumps({"Type": "Weird", "Message": "{}"})),
    ("sns nested too deeply", sns(sns(sns(sqs_body(s3_record("a.pdf")))))),
    (
        "eventbridge without detail",
        json.dumps({"source": "aws.s3", "detail-type": "Object Created"}),
    ),
    (
        "eventbridge without key",
        json.dumps(
            {
                "source": "aws.s3",
                "detail-type": "Object Created",
                "detail": {"bucket": {"name": BUCKET}, "object": {}},
            }
        ),
    ),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=name) for name, b in GARBAGE])
def test_garbage_raises_permanent_bad_input(body: Any) -> None:
    with pytest.raises(PermanentError) as caught:
        parse_bucket_event(body)
    error = caught.value
    assert error.category is ErrorCategory.BAD_INPUT
    assert not error.transient
    assert error.message
    assert "\n" not in error.message
    assert len(error.message) <= 300


def test_error_message_does_not_echo_the_body() -> None:
    with pytest.raises(PermanentError) as caught:
        parse_bucket_event("account 12345 password hunter2 is not json")
    assert "hunter2" not in caught.value.message
